"""A workdir in use is refused in one line; a lock left by a killed run does not block a resume."""

import os
import signal
import subprocess
import sys
import time

import pytest

import launch
from mhd_jax.outputs import workdir as wd
from mhd_jax.run import config_check
from tests.conftest import ROOT

_HOLD = ('import sys, time; sys.path.insert(0, {root!r}); from mhd_jax.outputs import workdir; '
         'workdir.WorkdirLock({workdir!r}).acquire(); print("locked", flush=True); '
         'time.sleep(600)')


def _holder(workdir) -> subprocess.Popen:
  """A process that holds the workdir's lock until killed."""
  proc = subprocess.Popen([sys.executable, '-c', _HOLD.format(root=ROOT, workdir=str(workdir))],
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'locked'
  return proc


def _listing(workdir) -> dict:
  return {n: os.stat(os.path.join(workdir, n)).st_mtime_ns for n in os.listdir(workdir)}


def test_second_lock_is_refused_and_release_frees_it(tmp_path):
  first = wd.WorkdirLock(str(tmp_path))
  first.acquire()
  with pytest.raises(config_check.ConfigError, match=rf'in use by a running run \(host .* pid '
                                                     rf'{os.getpid()}\)'):
    wd.WorkdirLock(str(tmp_path)).acquire()
  first.release()
  second = wd.WorkdirLock(str(tmp_path))
  second.acquire()
  second.release()


def test_run_on_a_workdir_in_use_exits_2_in_one_line_and_touches_nothing(tmp_path, capfd):
  holder = _holder(tmp_path)
  try:
    before = _listing(tmp_path)
    status = launch.main(['launch.py', f'--workdir={tmp_path}', '--config.num_steps=2'])
    err = capfd.readouterr().err
    assert status == 2, err[-2000:]
    refusal = [l for l in err.splitlines() if l.startswith('config error')]
    assert len(refusal) == 1 and f'pid {holder.pid}' in refusal[0], err[-2000:]
    assert 'Traceback' not in err
    assert _listing(tmp_path) == before  # no config.json, checkpoints, logs
  finally:
    holder.kill()
    holder.wait()


def test_lock_of_a_killed_process_does_not_block(tmp_path):
  holder = _holder(tmp_path)
  os.kill(holder.pid, signal.SIGKILL)
  holder.wait()
  assert os.path.exists(os.path.join(tmp_path, '.lock'))  # the file stays; the flock went
  lock = wd.WorkdirLock(str(tmp_path))
  lock.acquire()
  with open(os.path.join(tmp_path, '.lock')) as f:
    assert f'pid {os.getpid()}' in f.read()
  lock.release()
