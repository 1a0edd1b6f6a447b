"""Durable runs: killed (SIGKILL), preempted (SIGTERM) or stopped by a NaN, then resumed."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.util import tensor_util
import pytest

import mhd_jax
from mhd_jax import data as data_lib
from mhd_jax.outputs import workdir as wd
from mhd_jax.outputs import writers
from mhd_jax.run import config_check
from mhd_jax.run import safety
from mhd_jax.run import train
from tests.conftest import ROOT, read_records, short_config

# Long enough (seconds of training, beside other tests' processes) to be interrupted midway,
# after its first checkpoint: at 300 steps a SIGTERM sent as step 50 was logged once came
# only at the end.
STEPS = 1000
FLAGS = [f'--config.num_steps={STEPS}', '--config.log_every=50', '--config.eval_every=500',
         '--config.checkpoint.every=100']
ONLY_AT_THE_END = '--config.checkpoint.every=0'


def _launch(workdir, *extra) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, 'launch.py', f'--workdir={workdir}', *FLAGS, *extra],
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, returncode: int = 0) -> str:
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == returncode, err[-3000:]
  return err


def _checkpoint_steps(workdir) -> list[int]:
  """Steps of the finished checkpoints (a save cut short leaves a '*-tmp' folder)."""
  path = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(path) if n.isdigit()) if os.path.isdir(path) else []


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 300) -> None:
  end = time.time() + timeout
  while not condition():
    assert proc.poll() is None, f'the run ended early: {proc.communicate()[1][-3000:]}'
    assert time.time() < end, 'timed out'
    time.sleep(0.01)


@pytest.fixture(scope='module')
def interrupted(tmp_path_factory):
  """An uninterrupted run, one killed by SIGKILL and one by SIGTERM, then both resumed.

  The three first runs go side by side to save time. The SIGTERM run saves no
  periodic checkpoint, so the one it leaves is the preemption's; it resumes
  with that setting too (a field allowed to differ from the
  reference, as it does not change the steps).
  """
  tmp = tmp_path_factory.mktemp('interrupted')
  ref, killed, termed = tmp / 'reference', tmp / 'killed', tmp / 'termed'
  procs = [_launch(ref), _launch(killed), _launch(termed, ONLY_AT_THE_END)]
  try:
    _wait_for(lambda: _checkpoint_steps(killed), procs[1])
    os.kill(procs[1].pid, signal.SIGKILL)
    _wait_for(lambda: wd.read_jsonl(str(termed / 'metrics.jsonl')), procs[2])  # training is on
    procs[2].send_signal(signal.SIGTERM)
    out = {'term_stderr': _finish(procs[2], returncode=143)}
    procs[1].wait()
    out['killed_at'] = _checkpoint_steps(killed)[-1]
    out['stopped_at'] = _checkpoint_steps(termed)
    out['midway'] = {d: not (d / 'summary.json').exists() for d in (killed, termed)}
    resumed = [_launch(killed), _launch(termed, ONLY_AT_THE_END)]
    out['kill_resume_stderr'], out['term_resume_stderr'] = map(_finish, resumed)
    _finish(procs[0])
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  return {'reference': ref, 'killed': killed, 'termed': termed, **out}


def _tensorboard_series(workdir, tag):
  acc = plugin_event_accumulator.EventAccumulator(os.path.join(workdir, 'tensorboard'),
                                                 size_guidance={'tensors': 0})
  acc.Reload()
  return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def assert_same_run(workdir, reference_workdir):
  """Same accuracies, same records, same final population, same TensorBoard points."""
  summary, ref = (json.loads((d / 'summary.json').read_text())
                  for d in (workdir, reference_workdir))
  for key in ('steps', 'mean_private_acc', 'mean_shared_acc', 'clients', 'bytes_sent_per_step'):
    assert summary[key] == ref[key], key
  assert read_records(workdir) == read_records(reference_workdir)
  a, b = mhd_jax.load(str(workdir)), mhd_jax.load(str(reference_workdir))
  assert a.step == b.step == STEPS
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, a.state, b.state)))
  for tag in ('mean/loss', 'kd_aux/client_3', 'shared_acc_head1/client_0'):
    assert _tensorboard_series(workdir, tag) == _tensorboard_series(reference_workdir, tag)


@pytest.mark.slow  # three launch.py processes side by side, two resumed
def test_sigkill_midway_then_resume_ends_as_an_uninterrupted_run(interrupted):
  killed_at = interrupted['killed_at']
  assert killed_at < STEPS and interrupted['midway'][interrupted['killed']]
  assert f'resuming from the checkpoint of step {killed_at}' in interrupted['kill_resume_stderr']
  assert_same_run(interrupted['killed'], interrupted['reference'])


@pytest.mark.slow  # three launch.py processes side by side, two resumed
def test_sigterm_saves_the_current_step_then_resume_ends_as_an_uninterrupted_run(interrupted):
  (stopped,) = interrupted['stopped_at']
  assert 50 <= stopped < STEPS and interrupted['midway'][interrupted['termed']]
  assert (f'preempted (SIGTERM) at step {stopped}; its checkpoint is saved'
          in interrupted['term_stderr'])
  assert f'resuming from the checkpoint of step {stopped}' in interrupted['term_resume_stderr']
  assert_same_run(interrupted['termed'], interrupted['reference'])


def test_longer_run_resumes_from_the_end_of_a_shorter_one(short_run, tmp_path):
  reference_workdir, reference = short_run  # 40 steps in one go
  extended = str(tmp_path / 'extended')
  train.train_and_evaluate(short_config(num_steps=20), extended)
  # The 20-step run ends where the 40-step one stood at step 20 (its checkpoint of step 20).
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, mhd_jax.load(extended).state,
                                          mhd_jax.load(reference_workdir, step=20).state)))
  summary = train.train_and_evaluate(short_config(num_steps=40), extended)
  assert summary['clients'] == reference['clients']
  records = read_records(extended)
  assert [(r['step'], 'eval' in r) for r in records] == [
      (10, False), (20, False), (20, True), (30, False), (40, False), (40, True)]
  assert records == read_records(reference_workdir)
  # Started again once finished: nothing to train, the same summary.
  again = train.train_and_evaluate(short_config(num_steps=40), extended)
  assert again['clients'] == reference['clients'] and read_records(extended) == records


def test_nan_stops_the_run_naming_step_and_client_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch):
  real_get_data = data_lib.get_data

  def get_data(config, client_ids=None):
    data = real_get_data(config, client_ids)
    def train_batches(start_step):
      for step, batch in enumerate(data.train_batches(start_step), start_step + 1):
        if step == 7:  # the batch of step 7 (steps count from 1)
          batch['private']['image'][2, 0] = np.nan
        yield batch
    return data.__class__(**{**data.__dict__, 'train_batches': train_batches})

  monkeypatch.setattr(data_lib, 'get_data', get_data)
  workdir = str(tmp_path)
  with pytest.raises(safety.NonFiniteLossError,
                     match=r'^non-finite loss or parameters at step 7 in clients \[2\]; the run '
                           r'stops and the last finite checkpoint \(step 5\) is kept'):
    train.train_and_evaluate(short_config(**{'checkpoint.every': 5}), workdir)
  assert _checkpoint_steps(workdir) == [5]
  run = mhd_jax.load(workdir)
  assert run.step == 5
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(run.state))


def test_jsonl_log_keeps_records_up_to_the_resumed_step_and_drops_a_torn_line(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  with open(path, 'w') as f:
    f.write(''.join(json.dumps({'step': s}) + '\n' for s in (10, 20, 20, 30)) + '{"step": 4')
  log = writers.JsonlWriter(path, start_step=20)
  log.write_record({'step': 21})
  log.close()
  assert [r['step'] for r in wd.read_jsonl(path)] == [10, 20, 20, 21]
  writers.JsonlWriter(path, start_step=0).close()  # a fresh start empties it
  assert wd.read_jsonl(path) == []


def test_config_differences_allow_only_resumable_fields():
  saved = json.loads(short_config().to_json())
  assert wd.config_differences(saved, short_config(
      num_steps=99, log_every=3, eval_every=7, strategy='loop',
      **{'checkpoint.every': 1, 'checkpoint.keep': 9})) == []
  assert wd.config_differences(saved, short_config(skew=0.5, num_heads=2)) == [
      'num_heads: 3 -> 2', 'skew: 0.9 -> 0.5']
  # A run saved before the dynamics fields existed ran the static network: their defaults
  # resume it, anything else is a change.
  old = json.loads(short_config().to_json())
  del old['dynamics']
  assert wd.config_differences(old, short_config()) == []
  assert wd.config_differences(old, short_config(**{'dynamics.schedule': 'matching'})) == [
      "dynamics.schedule: '<absent>' -> 'matching'"]
  cosine = json.loads(short_config(**{'optimizer.schedule': 'cosine'}).to_json())
  assert wd.config_differences(cosine, short_config(
      num_steps=99, **{'optimizer.schedule': 'cosine'})) == ['num_steps: 40 -> 99']


def test_checkpoint_beyond_num_steps_is_refused(short_run):
  with pytest.raises(config_check.ConfigError, match='checkpoint of step 40, beyond num_steps=30'):
    train.train_and_evaluate(short_config(num_steps=30), short_run[0])


# A network that changes every step, clients that come and go, and teachers that lag: the
# state a resume must restore exactly includes the lag buffers, and the draws of graph and
# participants must resume at the killed step (docs/dynamics.md).
CHANGING = ['--config.dynamics.schedule=matching', '--config.dynamics.participation=bernoulli',
            '--config.dynamics.availability=0.7', '--config.dynamics.staleness=2']


@pytest.mark.slow
def test_sigkill_then_resume_is_exact_with_matching_bernoulli_and_lag(tmp_path):
  ref, killed = tmp_path / 'reference', tmp_path / 'killed'
  procs = [_launch(ref, *CHANGING), _launch(killed, *CHANGING)]
  try:
    _wait_for(lambda: _checkpoint_steps(killed), procs[1])
    os.kill(procs[1].pid, signal.SIGKILL)
    procs[1].wait()
    killed_at = _checkpoint_steps(killed)[-1]
    assert killed_at < STEPS and not (killed / 'summary.json').exists()
    err = _finish(_launch(killed, *CHANGING))
    _finish(procs[0])
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  assert f'resuming from the checkpoint of step {killed_at}' in err
  assert mhd_jax.load(str(killed)).state.lag is not None
  assert_same_run(killed, ref)
