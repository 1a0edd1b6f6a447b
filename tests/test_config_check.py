"""Bad input: each problem gets its own one-line message, and `launch.py` shows no traceback."""

import importlib
import json
import os
import subprocess
import sys

import jax
import pytest

from configs import default
from mhd_jax.outputs import workdir as wd
from mhd_jax.run import config_check
from mhd_jax.run import train
from tests.conftest import ROOT, short_config

EIGHT_DEVICES = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}

# name: (config file, overrides, devices, the expected message's telling part)
BAD = {
    'unknown dataset': ('default', {'data.name': 'no_such_dataset'}, 1,
                        "unknown dataset 'no_such_dataset'"),
    'unknown model': ('default', {'model.name': 'transformer'}, 1,
                      "unknown model 'transformer': config.model.name must be one of mlp, cnn"),
    'adjacency shape': ('default', {'topology': 'explicit', 'adjacency': '0 1; 1 0'}, 1,
                        'adjacency has shape (2, 2), expected (5, 5) for num_clients=5'),
    'adjacency sign': ('default', {'num_clients': 2, 'topology': 'explicit',
                                   'adjacency': '0 -1; 1 0'}, 1,
                       'adjacency has negative weights (e.g. A[0, 1] = -1.0)'),
    'clients vs graph': ('default', {'num_clients': 3, 'topology': 'islands', 'num_islands': 4},
                         1, 'num_islands must be in [1, 3], got 4'),
    'clients vs partition': ('default', {'num_clients': 40, 'partition': 'dirichlet',
                                         'dirichlet_alpha': 0.01}, 1,
                             'the dirichlet partition leaves clients [0, 1, 2'),
    'groups vs clients': ('digits_hetero', {'num_clients': 7}, 1,
                          'groups hold 8 clients in all but num_clients is 7'),
    'skew': ('default', {'skew': 1.5}, 1,
             'skew must be in [0, 1] (0 = iid, 1 = only primary classes), got 1.5.'),
    'batch vs devices': ('default', {'data.public_batch_size': 60}, 8,
                         'data.public_batch_size=60 is not divisible by the device count (8)'),
    'topk vs classes': ('default', {'wire.topk': 11}, 1,
                        'config.wire.topk=11 must be in [1, 10] (the number of classes)'),
    'wire bits': ('default', {'wire.bits': 16}, 1,
                  'config.wire.bits must be one of 32, 8, 4, got 16.'),
    'heads sent': ('default', {'wire.heads_sent': 4}, 1,
                   'config.wire.heads_sent=4 exceeds num_heads=3'),
    'negative noise': ('default', {'dp.enabled': True, 'dp.noise_multiplier': -1.0}, 1,
                       'config.dp.noise_multiplier must be >= 0, got -1.0.'),
    'zero clip': ('default', {'dp.enabled': True, 'dp.clip_norm': 0.0}, 1,
                  'config.dp.clip_norm must be > 0, got 0.0.'),
    'delta one': ('default', {'dp.enabled': True, 'dp.delta': 1.0}, 1,
                  'config.dp.delta must be in (0, 1), got 1.0.'),
    'delta zero': ('default', {'dp.enabled': True, 'dp.delta': 0.0}, 1,
                   'config.dp.delta must be in (0, 1), got 0.0.'),
    'dp without noise': ('default', {'dp.enabled': True, 'dp.noise_multiplier': 0.0}, 1,
                         'dp.enabled with dp.noise_multiplier=0 gives ε = inf'),
    'dp infinite clip': ('default', {'dp.enabled': True, 'dp.clip_norm': float('inf')}, 1,
                         'dp.clip_norm=inf bounds no gradient'),
    'dp with batchnorm': ('default', {'dp.enabled': True, 'model.name': 'resnet18_cifar'}, 1,
                          "dp.enabled with model.name='resnet18_cifar': its BatchNorm mixes"),
    'unknown norm': ('default', {'model.norm': 'layer'}, 1,
                     "config.model.norm must be batch or group, got 'layer'."),
    'no public set to distil on': ('default', {'public_fraction': 0.0}, 1,
                                   'public_fraction=0 leaves no public set, which distillation'),
    'no public set on TFDS': ('cifar100_resnet18', {'public_fraction': 0.0, 'topology': 'none'},
                              1, 'public_fraction=0 (no public set) is served by the embedded'),
}
# What launch.py prints for two of them, in its own process: exit status 2, one line, no
# traceback (the others take the same path: `ConfigError` from `train_and_evaluate`).
LAUNCHED = {'skew': (['--config.skew=1.5'], {}),
            'batch vs devices': (['--config.data.public_batch_size=60'], EIGHT_DEVICES)}


def _workdir_of_another_run(path) -> str:
  """A workdir holding a run whose config differs from the default in `skew`."""
  other = default.get_config()
  other.skew = 0.5
  os.makedirs(path)
  (path / 'config.json').write_text(other.to_json())
  (path / 'metrics.jsonl').write_text('{"step": 10}\n')
  return str(path)


@pytest.mark.parametrize('name', list(BAD))
def test_each_bad_config_is_refused_with_one_problem_before_anything_is_written(
    name, tmp_path, monkeypatch):
  config_file, overrides, devices, message = BAD[name]
  config = importlib.import_module(f'configs.{config_file}').get_config()
  config.update_from_flattened_dict(overrides)
  monkeypatch.setattr(config_check.jax, 'local_device_count', lambda: devices)
  workdir = tmp_path / 'run'
  with pytest.raises(config_check.ConfigError) as e:
    train.train_and_evaluate(config, str(workdir))
  assert len(e.value.problems) == 1 and message in e.value.problems[0], e.value.problems
  assert not workdir.exists()  # refused before anything was written


@pytest.fixture(scope='module')
def launched(tmp_path_factory):
  """The `LAUNCHED` cases run by launch.py, side by side."""
  tmp = tmp_path_factory.mktemp('bad')
  procs = {name: subprocess.Popen(
      [sys.executable, 'launch.py', f'--workdir={tmp / name.replace(" ", "_")}', *flags],
      cwd=ROOT, text=True, env={**os.environ, **env}, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE) for name, (flags, env) in LAUNCHED.items()}
  return {name: (proc.wait(timeout=300), proc.communicate()[1]) for name, proc in procs.items()}


@pytest.mark.parametrize('name', list(LAUNCHED))
def test_launch_gives_one_line_per_bad_config_and_no_traceback(launched, name):
  returncode, stderr = launched[name]
  assert returncode == 2, stderr[-3000:]
  assert 'Traceback' not in stderr
  lines = [line for line in stderr.splitlines() if 'error' in line.lower()]
  assert len(lines) == 1 and lines[0].startswith('config error: '), stderr[-3000:]
  assert BAD[name][3] in lines[0]


def test_a_refused_workdir_is_left_untouched(tmp_path):
  workdir = _workdir_of_another_run(tmp_path / 'other')
  with pytest.raises(config_check.ConfigError, match=(
      r'holds a run with a different config \(skew: 0.5 -> 0.9\); choose another --workdir, '
      'or pass --overwrite')):
    train.train_and_evaluate(default.get_config(), workdir)
  assert sorted(os.listdir(workdir)) == ['config.json', 'metrics.jsonl']
  assert json.loads(open(os.path.join(workdir, 'config.json')).read())['skew'] == 0.5


def test_overwrite_replaces_the_other_run(tmp_path):
  workdir = _workdir_of_another_run(tmp_path / 'overwrite')
  train.train_and_evaluate(short_config(num_steps=5, log_every=5, eval_every=5), workdir,
                           overwrite=True)
  assert wd.read_config(workdir).skew == 0.9
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    assert [json.loads(line)['step'] for line in f] == [5, 5]  # the old record is gone


def test_every_problem_is_listed_on_its_own_line():
  config = short_config(skew=-0.1, num_heads=0, target='loudest',
                        **{'model.name': 'vit', 'data.batch_size': 0})
  with pytest.raises(config_check.ConfigError) as e:
    config_check.validate(config, num_devices=1)
  assert len(e.value.problems) == 5 and str(e.value).count('\n') == 4
  assert all('\n' not in p for p in e.value.problems)
  assert "unknown target 'loudest'" in str(e.value)
  assert 'data.batch_size must be >= 1' in str(e.value)


def test_the_default_config_passes():
  assert config_check.problems(default.get_config(), num_devices=1) == []
  assert config_check.problems(default.get_config(), num_devices=8) == []


def test_device_split_names_each_batch():
  config = short_config(**{'data.public_batch_size': 12, 'data.eval_batch_size': 90})
  assert config_check.check_device_split(config, 1) == []
  assert config_check.check_device_split(config, 4) == [
      'data.eval_batch_size=90 is not divisible by the device count (4); use a multiple of 4.']
  assert len(config_check.check_device_split(config, 8)) == 2


def test_device_split_counts_the_meshs_devices(monkeypatch):
  """On a host of 8 devices, a mesh of num_devices=4 splits over 4."""
  monkeypatch.setattr(jax, 'local_device_count', lambda: 8)
  monkeypatch.setattr(jax, 'device_count', lambda: 8)
  split = lambda n: [p for p in config_check.problems(short_config(**{
      'num_devices': n, 'data.public_batch_size': 12, 'data.eval_batch_size': 96})) if
                     'divisible by the device count' in p]
  assert split(4) == []
  assert split(0) == ['data.public_batch_size=12 is not divisible by the device count (8); '
                      'use a multiple of 8.']


def test_overwrite_removes_only_what_a_run_writes(tmp_path):
  workdir = _workdir_of_another_run(tmp_path / 'w')
  os.makedirs(os.path.join(workdir, 'checkpoints', '10'))
  (tmp_path / 'w' / 'notes.txt').write_text('mine')
  with pytest.raises(config_check.ConfigError):
    wd.check_workdir(workdir, default.get_config(), overwrite=False)
  wd.check_workdir(workdir, default.get_config(), overwrite=True)
  wd.clear_workdir(workdir)
  assert os.listdir(workdir) == ['notes.txt']


def test_url_workdir_is_refused_before_anything_is_written(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(config_check.ConfigError, match='gs://b/run is a URL.*local path'):
    wd.check_workdir('gs://b/run', default.get_config(), overwrite=False)
  assert os.listdir(tmp_path) == []  # no local 'gs:' folder
