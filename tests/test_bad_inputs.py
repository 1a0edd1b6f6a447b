"""Inputs refused once the data is known, in one line and before anything is written or compiled:
a batch larger than a client's set, a model that pools its images away."""

import os

import numpy as np
import pytest

import launch
from configs import default
from configs import digits_hetero
from mhd_jax import data as data_lib
from mhd_jax.population import groups
from mhd_jax.run import config_check
from mhd_jax.studies import runs as study_runs


def _launch(tmp_path, capfd, *flags) -> tuple[int, list[str]]:
  """(status, the error lines on stderr) of `python launch.py FLAGS`, in-process."""
  status = launch.main(['launch.py', f'--workdir={tmp_path / "run"}', *flags])
  err = capfd.readouterr().err
  assert 'Traceback' not in err, err[-3000:]
  return status, [line for line in err.splitlines() if 'error' in line.lower()]


def test_a_batch_larger_than_the_smallest_client_set_is_refused():
  config = default.get_config()
  data = data_lib.get_data(config)
  sizes = [len(idx) for idx in data.partition.client_indices]
  i = int(np.argmin(sizes))
  config.data.batch_size = sizes[i]
  config_check.validate_data(config, data)  # one whole set per batch is fine
  config.data.batch_size = sizes[i] + 1
  with pytest.raises(config_check.ConfigError) as e:
    config_check.validate_data(config, data)
  assert e.value.problems == [
      f'data.batch_size={sizes[i] + 1} exceeds the {sizes[i]} private examples of client {i} '
      f'(the smallest set of the skew partition); use data.batch_size <= {sizes[i]}, or fewer '
      'clients.']


def test_launch_refuses_a_huge_batch_in_one_line_before_writing(tmp_path, capfd):
  status, errors = _launch(tmp_path, capfd, '--config.data.batch_size=100000')
  assert status == 2 and len(errors) == 1, errors
  assert errors[0].startswith('config error: data.batch_size=100000 exceeds the ')
  assert not (tmp_path / 'run').exists()


def test_a_study_refuses_a_huge_batch_before_any_run_trains(tmp_path):
  run = study_runs.Run(study_runs.configure(default.get_config(), {'data.batch_size': 100000},
                                            seed=0), str(tmp_path / 'seed0'))
  with pytest.raises(config_check.ConfigError, match=r'seed0: data.batch_size=100000 exceeds'):
    study_runs.check([run])
  assert not os.listdir(tmp_path)


def test_a_cnn_deeper_than_its_images_is_refused_by_name_and_shape():
  config = default.get_config()
  config.model.name, config.model.depth = 'cnn', 3  # 8 -> 4 -> 2 -> 1 pixels: runs
  assert groups.shape_problems(config, 10, (8, 8, 1)) == []
  config.model.depth = 4  # a fourth 2x2 pooling leaves 0 x 0 x 128 for the dense layer
  assert groups.shape_problems(config, 10, (8, 8, 1)) == [
      'config.model (cnn, depth 4) leaves nothing of the 8x8x1 images: '
      'params/backbone/Dense_0/kernel has shape (0, 2048); use a smaller model.depth or larger '
      'images.']
  assert groups.shape_problems(config, 10, (16, 16, 1)) == []
  config.model.name = 'mlp'  # flattens whatever it gets: nothing to refuse
  assert groups.shape_problems(config, 10, (40, 1, 1)) == []


def test_every_group_is_checked_and_named():
  config = digits_hetero.get_config()
  config.groups.large.model = {'name': 'cnn', 'width': 8, 'depth': 5}
  (problem,) = groups.shape_problems(config, 10, (8, 8, 1))
  assert problem.startswith('config.groups.large.model (cnn, depth 5) leaves nothing of the '
                            '8x8x1 images: params/backbone/Dense_0/kernel has shape (0, ')


def test_launch_refuses_a_too_deep_model_in_one_line_before_writing(tmp_path, capfd):
  status, errors = _launch(tmp_path, capfd, '--config.model.name=cnn', '--config.model.depth=4')
  assert status == 2 and len(errors) == 1, errors
  assert errors[0].startswith('config error: config.model (cnn, depth 4) leaves nothing')
  assert not (tmp_path / 'run').exists()
