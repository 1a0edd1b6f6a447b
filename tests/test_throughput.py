"""The log's steps/s counts training steps only; its metrics are means over the log window."""

import numpy as np
import pytest

from mhd_jax.algorithm import distill
from mhd_jax.algorithm import evaluate
from mhd_jax.outputs import checkpoint
from mhd_jax.placement import autotune
from mhd_jax.run import safety
from mhd_jax.run import timing
from mhd_jax.run import train
from tests.conftest import read_records, short_config

SLOW = 1000.0  # fake seconds that evaluation, checkpoints, restoring and compiling each take


def test_steps_per_sec_leaves_out_compile_restore_eval_and_checkpoints(tmp_path, monkeypatch):
  real_now, offset = timing._now, [0.0]
  monkeypatch.setattr(timing, '_now', lambda: real_now() + offset[0])
  def slow(fn):
    def wrapped(*args, **kwargs):
      offset[0] += SLOW  # the clock jumps while `fn` runs
      return fn(*args, **kwargs)
    return wrapped
  for module, name in [(evaluate, 'accuracies'), (checkpoint, 'save'), (checkpoint, 'restore'),
                       (autotune, 'compile_fastest')]:
    monkeypatch.setattr(module, name, slow(getattr(module, name)))
  # Evaluations (3, 6, 9) and checkpoints (every step) inside log windows, not only at their ends.
  config = lambda n: short_config(**{'num_steps': n, 'log_every': 2, 'eval_every': 3,
                                     'checkpoint.every': 1})
  train.train_and_evaluate(config(6), str(tmp_path))
  train.train_and_evaluate(config(10), str(tmp_path))  # resumes from step 6: restore, compile
  records = [r for r in read_records(str(tmp_path), timings=True) if 'steps_per_sec' in r]
  assert [r['step'] for r in records] == [2, 4, 6, 8, 10]
  assert all(r['window_steps'] == 2 for r in records)
  # Two real steps of the default config take well under a second, even on a loaded machine;
  # any slow call counted in would make it 2 / 1000 steps/s.
  assert min(r['steps_per_sec'] for r in records) > 2.0, records
  assert all(abs(r['examples_per_sec'] - r['steps_per_sec'] * 5 * (32 + 64)) < 1e-6 * r[
      'examples_per_sec'] for r in records)


def _eight_steps(log_every):
  """8 steps of the default config logged every `log_every` steps, checkpointed at the end."""
  return short_config(**{'num_steps': 8, 'log_every': log_every, 'eval_every': 8,
                         'checkpoint.every': 0})


@pytest.fixture(scope='module')
def windows(tmp_path_factory):
  """{log_every: workdir} of one 8-step run, logged every step and every 4 steps."""
  out = {every: str(tmp_path_factory.mktemp(f'every{every}')) for every in (1, 4)}
  for every, workdir in out.items():
    train.train_and_evaluate(_eight_steps(every), workdir)
  return out


def test_logged_metrics_are_means_over_the_window(windows):
  runs = {every: {r['step']: r for r in read_records(workdir) if 'clients' in r}
          for every, workdir in windows.items()}
  per_step = runs[1]  # a window of one step: that step's metrics
  for end in (4, 8):
    for term in distill.TERMS:
      mean_N = np.mean([per_step[s]['clients'][term] for s in range(end - 3, end + 1)], axis=0)
      np.testing.assert_allclose(runs[4][end]['clients'][term], mean_N, rtol=2e-6, atol=1e-7,
                                 err_msg=f'{term} at step {end}')
      np.testing.assert_allclose(runs[4][end][term], mean_N.mean(), rtol=2e-6, atol=1e-7)
  # The window mean is not the last batch's value (which a last-batch log would show).
  assert not np.allclose(runs[4][8]['clients']['ce'], per_step[8]['clients']['ce'])


def test_a_window_cut_by_a_preemption_logs_the_same_means_after_the_resume(
    windows, tmp_path, monkeypatch):
  config = _eight_steps(4)  # the run of windows[4]
  with monkeypatch.context() as patch:  # a SIGTERM at step 6: the window of steps 5-8 is cut
    patch.setattr(safety.SigtermWatch, 'stop_at', lambda self, step: step == 6)
    with pytest.raises(safety.Preempted):
      train.train_and_evaluate(config, str(tmp_path / 'cut'))
  train.train_and_evaluate(config, str(tmp_path / 'cut'))
  cut, reference = read_records(str(tmp_path / 'cut')), read_records(windows[4])
  assert [r['step'] for r in cut] == [4, 8, 8] and cut[1]['window_steps'] == 4
  assert cut == reference
