"""SIGTERM outside the training loop: during start-up it stops after step 1 (saved), during the
report it still ends as a preemption (exit 143 through launch.py) with the final step saved."""

import os
import signal

import pytest

from mhd_jax.outputs import report
from mhd_jax.run import safety
from mhd_jax.run import train
from mhd_jax.wire import communication
from tests.conftest import short_config


def _steps(workdir) -> list[int]:
  path = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(path) if n.isdigit())


def _sigterm_then(fn):
  def wrapped(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return fn(*args, **kwargs)
  return wrapped


def test_sigterm_during_start_up_saves_step_1_and_stops(tmp_path, monkeypatch):
  monkeypatch.setattr(communication, 'costs', _sigterm_then(communication.costs))
  with pytest.raises(safety.Preempted, match='at step 1;'):
    train.train_and_evaluate(short_config(num_steps=4), str(tmp_path))
  assert _steps(str(tmp_path)) == [1]


def test_sigterm_during_the_report_is_a_preemption_of_the_saved_final_step(tmp_path, monkeypatch):
  monkeypatch.setattr(report, 'write', _sigterm_then(report.write))
  with pytest.raises(safety.Preempted, match='at step 4;'):
    train.train_and_evaluate(short_config(num_steps=4), str(tmp_path))
  assert _steps(str(tmp_path))[-1] == 4
