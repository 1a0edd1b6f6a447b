"""Malformed configs and faults through launch.py: exit 2, one line, no traceback, workdir untouched.

Most cases run in-process through `launch.main` (what `python launch.py` calls);
a few run as real subprocesses. Every refusal comes before anything compiles.
"""

import errno
import os
import subprocess
import sys

import jax
import pytest

import launch
from mhd_jax.outputs import checkpoint
from mhd_jax.outputs import workdir as wd
from tests.conftest import ROOT

# --config.FIELD=VALUE overrides, each alone malformed.
OVERRIDES = [
    'bogus_field=1', 'groups.modle=1', 'model.bogus=1', 'num_clients=0', 'num_clients=abc',
    'num_clients=2.5', 'num_heads=0', 'skew=-0.1', 'skew=1.5', 'public_fraction=0',
    'public_fraction=1.0', 'public_fraction=0.001', 'dirichlet_alpha=0', 'temperature=0',
    'temperature=-1', 'data.batch_size=0', 'data.public_batch_size=0',
    'data.public_batch_size=10000', 'data.eval_batch_size=0', 'data.test_fraction=0',
    'data.test_fraction=1.0', 'data.test_fraction=0.0001', 'num_steps=0', 'log_every=0',
    'eval_every=0', 'average_every=-1', 'checkpoint.every=-1', 'checkpoint.keep=0',
    'model.name=vit', 'model.width=0', 'model.depth=0', 'model.dtype=bogus',
    'optimizer.name=rmsprop', 'optimizer.schedule=linear', 'optimizer.learning_rate=-1',
    'optimizer.momentum=1.5', 'optimizer.weight_decay=-1', 'optimizer.warmup_steps=-5',
    'optimizer.grad_clip=-1', 'nu_main=-5', 'nu_aux=-1', 'nu_emb=-0.1', 'target=loudest',
    'strategy=fast', 'partition=zipf', 'topology=hypercube', 'num_devices=-1',
    f'num_devices={jax.device_count() + 1}',  # one more than there are, however many that is
    'data.augment=fancy', 'data.name=nosuchdataset', 'include_self=maybe', 'seed=x',
    'edge_prob=1.5', 'rewire_prob=-0.1', 'grid_rows=-1', 'radius=-1',
    'dynamics.schedule=gossip', 'dynamics.failure_p=1.5', 'dynamics.failure_p=-0.1',
    'dynamics.cycle_every=0', 'dynamics.participation=sometimes', 'dynamics.availability=-0.5',
    'dynamics.availability=2', 'dynamics.straggler_fraction=1.1', 'dynamics.straggler_every=0',
    'dynamics.staleness=-1', 'dynamics.staleness=1500', 'dynamics.participation=trace',
    'wire.topk=-1', 'wire.topk=11', 'wire.bits=16', 'wire.bits=2.5', 'wire.heads_sent=4',
    'wire.every=0', 'dp.noise_multiplier=-1', 'dp.clip_norm=0', 'dp.delta=1', 'dp.delta=0',
    'dp.enabled=yes',
]


def _untouched(path, before) -> bool:
  if before is None:
    return not os.path.exists(path)
  return {n: os.stat(os.path.join(path, n)).st_mtime_ns for n in os.listdir(path)} == before


def _check(argv, workdir, capfd, before=None):
  status = launch.main(['launch.py', f'--workdir={workdir}', *argv])
  err = capfd.readouterr().err
  lines = err.strip().splitlines()
  assert status == 2, (argv, err[-2000:])
  assert len(lines) == 1, (argv, err[-2000:])
  assert 'Traceback' not in err and lines[0].startswith(('config error: ', 'error: '))
  assert _untouched(workdir, before), argv
  return lines[0]


@pytest.mark.parametrize('override', OVERRIDES)
def test_malformed_field_is_refused_in_one_line(override, tmp_path, capfd):
  _check([f'--config.{override}'], str(tmp_path / 'run'), capfd)


def _config_file(tmp_path, text) -> str:
  path = tmp_path / 'my_config.py'
  path.write_text(text)
  return str(path)


GROUP = ("from configs import default\ndef get_config():\n  c = default.get_config()\n"
         "  c.groups.a = {{'num_clients': 5, {extra}}}\n  return c\n")
FAULTS = {
    'missing config file': lambda t: ['--config=/no/such/config.py'],
    'broken config file': lambda t: [f'--config={_config_file(t, "def get_config(:\n")}'],
    'config file that raises': lambda t: [
        f'--config={_config_file(t, "def get_config():\n  raise RuntimeError(1)\n")}'],
    'group with a misspelt key': lambda t: [
        f'--config={_config_file(t, GROUP.format(extra=chr(39) + "modle" + chr(39) + ": {}"))}'],
    'group overriding num_heads': lambda t: [
        f'--config={_config_file(t, GROUP.format(extra=chr(39) + "num_heads" + chr(39) + ": 2"))}'],
    'group with an unknown model field': lambda t: [
        f'--config={_config_file(t, GROUP.format(extra=chr(39) + "model" + chr(39) + ": {chr(39)}wdth{chr(39)}: 3}}"))}'],
    'unknown flag': lambda t: ['--nosuchflag=1'],
    'positional argument': lambda t: ['extra'],
    'explicit topology without a matrix': lambda t: ['--config.topology=explicit'],
    'islands of zero': lambda t: ['--config.topology=islands', '--config.num_islands=0'],
    'torus that does not divide': lambda t: ['--config.topology=torus', '--config.grid_rows=2'],
    'cycle without graphs': lambda t: ['--config.dynamics.schedule=cycle'],
    'cycle with a bad graph': lambda t: ['--config.dynamics.schedule=cycle',
                                         '--config.dynamics.cycle_graphs=ring | islands:num_islands=9'],
    'trace of the wrong shape': lambda t: [
        '--config.dynamics.participation=trace',
        f'--config.dynamics.trace_file={_config_file(t, "1 0 1\n0 1 1\n")}'],
}


@pytest.mark.parametrize('name', sorted(FAULTS))
def test_bad_config_source_is_refused_in_one_line(name, tmp_path, capfd):
  argv = FAULTS[name](tmp_path)
  _check(argv, str(tmp_path / 'run'), capfd)


@pytest.mark.parametrize('kind', ['a file', 'under a file', 'in /proc', 'a URL'])
def test_unusable_workdir_is_refused_in_one_line(kind, tmp_path, capfd):
  (tmp_path / 'f').write_text('x')
  workdir = {'a file': tmp_path / 'f', 'under a file': tmp_path / 'f' / 'run',
             'in /proc': '/proc/mhd_jax_run', 'a URL': 'gs://bucket/run'}[kind]
  if kind == 'a file':
    status = launch.main(['launch.py', f'--workdir={workdir}'])
    assert status == 2 and (tmp_path / 'f').read_text() == 'x'
    assert len(capfd.readouterr().err.strip().splitlines()) == 1
  else:
    _check([], str(workdir), capfd)


def test_workdir_of_another_config_is_refused_and_left_as_it_was(tmp_path, capfd):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text('{"num_clients": 7}')
  before = {n: os.stat(workdir / n).st_mtime_ns for n in os.listdir(workdir)}
  line = _check([], str(workdir), capfd, before)
  assert 'holds a run with a different config' in line


def test_nan_value_does_not_make_its_own_workdir_unresumable(tmp_path):
  from tests.conftest import short_config  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  config = short_config(**{'optimizer.weight_decay': float('nan')})
  saved = json.loads(config.to_json())
  assert wd.config_differences(saved, config) == []  # nan -> nan is no change


def test_disk_full_is_one_line(tmp_path, capfd, monkeypatch):
  def full(path, write):
    raise OSError(errno.ENOSPC, 'No space left on device', path)
  monkeypatch.setattr(checkpoint, 'write_atomic', full)
  workdir = tmp_path / 'run'
  status = launch.main(['launch.py', f'--workdir={workdir}'])
  err = capfd.readouterr().err
  refusal = [l for l in err.splitlines() if 'disk full' in l]
  assert status == 2 and len(refusal) == 1 and 'Traceback' not in err, err[-2000:]
  assert 'config.json' in refusal[0] and not os.path.exists(workdir / 'config.json')


@pytest.mark.parametrize('argv', [
    ['--config.bogus_field=1'],  # the others, the same path in processes of their own: slow
    pytest.param(['--config=/no/such/file.py'], marks=pytest.mark.slow),
    pytest.param(['--config.optimizer.learning_rate=-1'], marks=pytest.mark.slow)])
def test_real_process_refuses_in_one_line(argv, tmp_path):
  workdir = tmp_path / 'run'
  out = subprocess.run([sys.executable, 'launch.py', f'--workdir={workdir}', *argv], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stderr[-2000:]
  assert len(out.stderr.strip().splitlines()) == 1 and 'Traceback' not in out.stderr
  assert not workdir.exists()


_FULL_ON_SAVE = """
import errno, sys
import launch
from mhd_jax.outputs import checkpoint
def full(directory):
  raise OSError(errno.ENOSPC, 'No space left on device', directory)
checkpoint._write_checksums = full
sys.exit(launch.main(['launch.py', '--workdir=' + sys.argv[1], '--config.num_steps=2',
                      '--config.checkpoint.every=1']))
"""


@pytest.mark.slow  # a launch.py process that trains
def test_disk_full_on_orbax_background_save_is_one_line(tmp_path):
  # Raised on orbax's finalize thread, as a full disk would be, it reaches the loop wrapped the
  # way orbax wraps it; orbax's own tracebacks of it are dropped. A real process: training runs
  # here (2 steps), and orbax's threads log to the process's stderr.
  out = subprocess.run([sys.executable, '-c', _FULL_ON_SAVE, str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  refusal = [l for l in out.stderr.splitlines() if 'disk full' in l]
  assert out.returncode == 2 and len(refusal) == 1, out.stderr[-3000:]
  assert 'Traceback' not in out.stderr
  assert not [l for l in out.stderr.splitlines() if l.startswith('E1')]  # no absl ERROR lines
