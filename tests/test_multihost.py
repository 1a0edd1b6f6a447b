"""Two real JAX processes (2 fake CPU devices each, gloo collectives) against one process
with 4 devices: the same run, the same results, and only process 0 writes the workdir's logs.
Five clients on four devices: padding, and the replicated restore of a group the device
count does not divide, across processes.

Every process is a `launch.py` in its own interpreter, as on a pod's hosts.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Multi-process runs: left out of the plain `python -m pytest -q` (the fast set, see
# pytest.ini); `python -m pytest -q -m "slow or not slow"`, and so `.ci/run`, runs them.
pytestmark = pytest.mark.slow
FLAGS = ['--config=configs/default.py', '--config.num_clients=5', '--config.num_steps=30',
         '--config.log_every=10', '--config.eval_every=30', '--config.checkpoint.every=10']


def _env(devices: int) -> dict:
  return dict(os.environ, JAX_PLATFORMS='cpu',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch_two(workdir, *flags):
  port = _free_port()
  return [subprocess.Popen(
      [sys.executable, 'launch.py', *FLAGS, f'--workdir={workdir}', *flags,
       '--config.distributed.initialize=True',
       f'--config.distributed.coordinator_address=localhost:{port}',
       '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}'],
      cwd=ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
          for i in range(2)]


def _wait(procs, timeout=300) -> list[tuple[int, str]]:
  """[(exit status, output)] of each process; all are killed if one outlives `timeout`."""
  deadline = time.time() + timeout
  try:
    outs = [p.communicate(timeout=max(deadline - time.time(), 1))[0] for p in procs]
    return [(p.returncode, out) for p, out in zip(procs, outs)]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    outs = '\n'.join(f'--- process {i}:\n' + p.communicate()[0][-3000:]
                     for i, p in enumerate(procs))
    raise AssertionError(f'a process ran past {timeout} s:\n{outs}') from None


def _losses(workdir) -> np.ndarray:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  return np.array([r['clients']['loss'] for r in records if 'clients' in r])


def test_multihost_device_mesh_two_processes_match_one(tmp_path):
  """30 steps on one process with 4 devices = 20 + 30 (resumed) on two with 2 devices each."""
  one, two = tmp_path / 'one', tmp_path / 'two'
  single = subprocess.run([sys.executable, 'launch.py', *FLAGS, f'--workdir={one}'], cwd=ROOT,
                          env=_env(4), capture_output=True, text=True, timeout=300)
  assert single.returncode == 0, single.stderr[-3000:]
  for steps in (20, 30):  # 20 steps, then the same command resumes to 30: a restore on two hosts
    results = _wait(_launch_two(two, f'--config.num_steps={steps}'))
    for rc, out in results:
      assert rc == 0, out[-3000:]
    assert '2 process(es)' in results[0][1]
  assert 'resuming from the checkpoint of step 20' in results[1][1]

  np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-5, atol=1e-6)
  s1, s2 = (json.load(open(d / 'summary.json')) for d in (one, two))
  np.testing.assert_allclose(s2['mean_shared_acc'], s1['mean_shared_acc'], atol=1e-6)
  assert s2['bytes_sent_per_step'] == s1['bytes_sent_per_step']
  # Process 0 alone wrote the logs: one TensorBoard file per session, each step once in
  # metrics.jsonl.
  assert len(os.listdir(two / 'tensorboard')) == 2
  steps = [json.loads(line)['step'] for line in open(two / 'metrics.jsonl')]
  assert steps == [10, 20, 20, 30, 30]  # training records and the evaluations at 20 and 30
  assert sorted(os.listdir(two / 'checkpoints')) == ['10', '20', '30']


def _sigterm_when(procs, ready, target) -> list[tuple[int, str]]:
  """Sends SIGTERM to `procs[target]` once `ready()`; waits for both (killed in the end)."""
  deadline = time.time() + 200
  try:
    while not ready():
      assert time.time() < deadline and all(p.poll() is None for p in procs), 'no progress'
      time.sleep(0.2)
    procs[target].send_signal(signal.SIGTERM)
    return _wait(procs, timeout=120)
  finally:
    for p in procs:
      p.kill()


def test_multihost_device_sigterm_to_one_process_stops_both_at_one_step(tmp_path):
  """JAX's preemption service spreads one host's SIGTERM: both processes save a checkpoint of
  the same step and exit 143; on a resumed run, a SIGTERM during start-up (restore, compile)
  stops both after their first step."""
  workdir = tmp_path / 'run'
  long = ['--config.num_clients=5', '--config.num_steps=100000', '--config.log_every=50',
          '--config.eval_every=100000', '--config.checkpoint.every=0']
  metrics = workdir / 'metrics.jsonl'
  results = _sigterm_when(_launch_two(workdir, *long),
                          lambda: metrics.exists() and metrics.read_text().count('\n') >= 2, 1)
  for rc, out in results:
    assert rc == 143, out[-3000:]
  (saved,) = os.listdir(workdir / 'checkpoints')
  assert 0 < int(saved) < 100000

  procs = _launch_two(workdir, *long)
  log = []
  def resuming():  # process 0 has restored the checkpoint and not yet run a step
    log.append(procs[0].stdout.readline())
    return 'resuming from the checkpoint' in log[-1] or not log[-1]
  results = _sigterm_when(procs, resuming, 0)
  for rc, out in results:
    assert rc == 143, ''.join(log)[-2000:] + out[-3000:]
  assert sorted(os.listdir(workdir / 'checkpoints'), key=int) == [saved, str(int(saved) + 1)]
