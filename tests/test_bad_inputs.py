"""Inputs refused once the data is known, in one line and before anything is written or compiled
(a batch larger than a client's set, a model that pools its images away), and a failed save,
which ends the run in one line with status 1, never a hang."""

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import launch
from configs import default
from configs import digits_hetero
from mhd_jax import data as data_lib
from mhd_jax.outputs import checkpoint
from mhd_jax.population import groups
from mhd_jax.run import config_check
from mhd_jax.run import data_check
from mhd_jax.studies import runs as study_runs
from tests.conftest import ROOT


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
  data_check.validate_data(config, data)  # one whole set per batch is fine
  config.data.batch_size = sizes[i] + 1
  with pytest.raises(config_check.ConfigError) as e:
    data_check.validate_data(config, data)
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


def test_a_failed_save_raises_one_line_and_leaves_no_checkpoint(tmp_path):
  mngr = checkpoint.manager(str(tmp_path / 'checkpoints'), default.get_config())
  state = {'empty': jnp.zeros((0, 3)), 'w': jnp.ones(3)}  # orbax cannot save a zero-size array
  with pytest.raises(checkpoint.SaveError) as e:
    checkpoint.save(mngr, 7, state, 0.0, force=True)
  assert str(e.value).startswith(f'saving the checkpoint of step 7 in {tmp_path}/checkpoints '
                                 'failed: ValueError: Cannot save arrays with zero size')
  assert '\n' not in str(e.value)
  checkpoint.close(mngr)
  assert mngr.all_steps() == []


def test_a_save_that_fails_in_the_background_ends_the_run_with_status_1(tmp_path, capfd,
                                                                        monkeypatch):
  def broken(directory):
    raise RuntimeError(f'cannot write the checksums in {directory}')
  monkeypatch.setattr(checkpoint, '_write_checksums', broken)  # on orbax's finalize thread
  status, errors = _launch(tmp_path, capfd, '--config.num_steps=2', '--config.checkpoint.every=1')
  assert status == 1 and len(errors) == 1, errors
  assert errors[0].startswith(f'error: saving a checkpoint in {tmp_path}/run/checkpoints failed: '
                              'RuntimeError: cannot write the checksums')


_SAVE_OF_A_ZERO_SIZE_LAYER = textwrap.dedent("""
    import runpy, sys
    from mhd_jax.population import groups
    groups.shape_problems = lambda *args: []  # let the model through: its first save must fail
    sys.argv = ['launch.py', '--workdir=' + sys.argv[1], '--config.model.name=cnn',
                '--config.model.depth=4', '--config.model.width=4', '--config.strategy=vmap',
                '--config.num_steps=2', '--config.checkpoint.every=1']
    runpy.run_path('launch.py', run_name='__main__')
""")


@pytest.mark.slow
def test_a_failed_save_ends_the_process_in_one_line_without_a_hang(tmp_path):
  # A save that fails part-way leaves orbax threads that once held the exit for 300 s or more.
  out = subprocess.run([sys.executable, '-c', _SAVE_OF_A_ZERO_SIZE_LAYER, str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=280)
  errors = [line for line in out.stderr.splitlines() if 'error' in line.lower()]
  assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr[-3000:]
  assert len(errors) == 1 and errors[0].startswith(
      'error: saving the checkpoint of step 1 in ') and 'zero size' in errors[0], errors
