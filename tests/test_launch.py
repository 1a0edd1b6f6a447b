"""`launch.py` runs the default config end to end."""

import json
import os
import subprocess
import sys

import numpy as np

from tests.conftest import hand_accuracies

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_launch_default_config_end_to_end(tmp_path):
  workdir = tmp_path / 'run'
  out = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/default.py', f'--workdir={workdir}',
       '--config.num_steps=30', '--config.log_every=10', '--config.eval_every=20'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'step 30/30' in out.stderr and 'steps/s' in out.stderr and 'ETA' in out.stderr
  assert 'final accuracies' in out.stderr
  summary = json.loads((workdir / 'summary.json').read_text())
  for key in ('num_clients', 'num_heads', 'steps', 'wall_seconds', 'mean_private_acc',
              'mean_shared_acc', 'clients', 'bytes_sent_per_step'):
    assert key in summary, key
  assert summary['num_clients'] == 5 and summary['num_heads'] == 3 and summary['steps'] == 30
  assert len(summary['clients']) == 5 and len(summary['mean_shared_acc']) == 3
  # Accuracies recomputed by hand from the final checkpoint and the raw test split.
  private, shared = hand_accuracies(str(workdir))
  np.testing.assert_allclose([c['private_acc'] for c in summary['clients']], private, atol=1e-6)
  np.testing.assert_allclose([c['shared_acc'] for c in summary['clients']], shared, atol=1e-6)
  np.testing.assert_allclose(summary['mean_private_acc'], private.mean(0), atol=1e-6)
  np.testing.assert_allclose(summary['mean_shared_acc'], shared.mean(0), atol=1e-6)
  assert private[:, 0].mean() > 0.3  # and the run trained: 30 steps beat chance (10%)
  records = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records if 'eval' not in r] == [10, 20, 30]
  assert [r['step'] for r in records if 'eval' in r] == [20, 30]


def test_launch_rejects_unknown_field(tmp_path):
  out = subprocess.run(
      [sys.executable, 'launch.py', f'--workdir={tmp_path}', '--config.no_such_field=1'],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and 'no_such_field' in out.stderr
