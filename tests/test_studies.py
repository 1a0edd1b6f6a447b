"""The studies: hop accuracies by hand, and one study end to end."""

import json
import os
import subprocess
import sys

import numpy as np

from mhd_jax import studies
from tests.conftest import ROOT


def test_chain_hops_averages_pairs_at_each_distance(tmp_path):
  # 3 clients on a chain, client i owns class i (10 test examples each); last head only.
  correct = np.zeros((3, 2, 3))
  correct[:, -1] = [[10, 5, 2], [4, 10, 6], [0, 8, 10]]
  np.savez(tmp_path / 'per_class.npz', correct_NxHxC=correct, count_C=np.full(3, 10),
           primary_NxC=np.eye(3, dtype=bool))
  hops = studies.chain_hops(str(tmp_path))
  # d=1: pairs (0,1) (1,0) (1,2) (2,1) -> 50, 40, 60, 80; d=2: (0,2) (2,0) -> 20, 0.
  np.testing.assert_allclose(hops, [57.5, 10.0])


def test_headline_takes_head0_private_and_last_head_shared():
  summary = {'num_clients': 2, 'clients': [
      {'private_acc': [0.9, 0.1], 'shared_acc': [0.2, 0.6]},
      {'private_acc': [0.7, 0.0], 'shared_acc': [0.4, 0.8]}]}
  h = studies.headline([summary, summary])
  assert np.isclose(h['private_mean'], 80.0) and np.isclose(h['shared_mean'], 70.0)
  assert h['private_std'] == 0.0
  assert np.isclose(studies.headline([summary], clients=[1])['shared_mean'], 80.0)


def test_methods_study_writes_its_table_plot_and_numbers(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'mhd_jax.studies', 'methods', f'--workdir={tmp_path}', '--seeds=1',
       '--config.num_steps=4', '--config.log_every=4', '--config.eval_every=4'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / 'methods.json').read_text())['grid']
  assert list(results) == ['isolated', 'naive (H=1)', 'MHD (H=3)', 'MHD + emb (H=3)',
                           'FedAvg (every 10 steps)', 'supervised upper bound']
  md = (tmp_path / 'methods.md').read_text()
  assert all(name in md for name in results)
  assert os.path.getsize(tmp_path / 'methods.png') > 10_000
