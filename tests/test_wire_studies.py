"""The communication and privacy studies' quick forms, end to end."""

import json
import os

import numpy as np
import pytest

from mhd_jax.outputs import summary as summary_lib
from mhd_jax.outputs import workdir as wd
from mhd_jax.studies import cli as studies
from mhd_jax.wire import compression
from mhd_jax.wire import privacy
from tests.test_studies import _study


@pytest.mark.slow  # a study's quick form: 4 runs in worker processes
def test_communication_study_reports_bytes_and_accuracy(tmp_path):
  out = _study('communication', tmp_path, '--quick', '--seeds=1', '--jobs=2')
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / 'communication.json').read_text())
  assert list(results) == ['MHD, float32, all classes', 'MHD, top-1',
                           'MHD, head 0 only (heads_sent=1)', 'FedAvg (every 10 steps)']
  b = {k: v['bytes_per_step'][0] for k, v in results.items()}
  # 5 clients on the complete graph, 3 heads: heads 0 and 1 go to 4 peers; 64 public examples.
  full = compression.WireSpec()
  top1 = compression.WireSpec(topk=1)
  assert b['MHD, float32, all classes'] == 5 * 4 * 2 * compression.encoded_bytes(full, 64, 10, 1)
  assert b['MHD, top-1'] == 5 * 4 * 2 * compression.encoded_bytes(top1, 64, 10, 1)
  assert b['MHD, head 0 only (heads_sent=1)'] == b['MHD, float32, all classes'] / 2
  fedavg = summary_lib.read_summary(str(tmp_path / 'communication' /
                               studies.run_dirname('FedAvg (every 10 steps)') / 'seed0'))
  assert b['FedAvg (every 10 steps)'] == fedavg.fedavg_bytes_per_round / 10
  md = (tmp_path / 'communication.md').read_text()
  assert all(f'| {name} |' in md for name in results)
  assert os.path.getsize(tmp_path / 'communication.png') > 10_000


@pytest.mark.slow  # a study's quick form: 4 runs in worker processes
def test_privacy_study_reports_epsilon_per_variant(tmp_path):
  out = _study('privacy', tmp_path, '--quick', '--seeds=1', '--jobs=2')
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / 'privacy.json').read_text())
  assert list(results) == ['MHD (H=3), no DP', 'MHD (H=3), sigma=1.0', 'naive (H=1), no DP',
                           'naive (H=1), sigma=1.0']
  assert results['MHD (H=3), no DP']['epsilon_mean'] == [None]
  sizes = wd.read_partition(str(tmp_path / 'privacy' / studies.run_dirname(
      'MHD (H=3), sigma=1.0') / 'seed0'))['client_sizes']
  eps = [privacy.epsilon(1.0, 32 / n, 30, 1e-5) for n in sizes]
  np.testing.assert_allclose(results['MHD (H=3), sigma=1.0']['epsilon_mean'], [np.mean(eps)])
  np.testing.assert_allclose(results['naive (H=1), sigma=1.0']['epsilon_max'], [np.max(eps)])
  md = (tmp_path / 'privacy.md').read_text()
  assert '| MHD (H=3), no DP | ∞ (no DP) | ∞ (no DP) |' in md
  assert os.path.getsize(tmp_path / 'privacy.png') > 10_000
