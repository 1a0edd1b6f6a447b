"""The benchmarks run (`--quick`: tiny shapes, few N, one repeat) and print what they promise."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_benchmark(script, *flags):
  out = subprocess.run([sys.executable, f'benchmarks/{script}', '--quick', *flags], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  records = [json.loads(line) for line in out.stdout.splitlines()]
  assert records[0]['machine']['cpu_count'] >= 1 and records[0]['machine']['devices']
  return records[1:]


@pytest.mark.parametrize('models', ['default'])  # resnet18_cifar: +50 s of compilation
def test_client_scaling_quick(models):
  (row,) = run_benchmark('client_scaling.py', f'--models={models}')
  assert row['model'] == models and row['n_clients'] == 2 and row['strategy'] == 'vmap'  # auto on CPU, no convolutions
  # One repeat: the ratio is that round's stacked / (N x single) time, rounded to 3 digits.
  assert row['ratio_vs_n_single'] == pytest.approx(
      row['step_ms'] / (2 * row['single_step_ms']), rel=2e-3, abs=1e-3)
  # The peak resident memory holds at least what the step's buffers need.
  assert row['peak_rss_mb'] >= row['step_memory_mb'] > 0
  assert row['compile_s'] > 0


def test_distill_overhead_quick():
  (row,) = run_benchmark('distill_overhead.py', '--models=default')
  assert row['n_clients'] == 2
  # Each ratio is the quotient of the times it names (rounded to 3 digits).
  assert row['ratio_mhd_vs_isolated'] == pytest.approx(
      row['mhd_step_ms'] / row['isolated_step_ms'], rel=2e-3, abs=1e-3)
  assert row['ratio_mhd_vs_private_only'] == pytest.approx(
      row['mhd_step_ms'] / row['private_only_step_ms'], rel=2e-3, abs=1e-3)
  for key in ('mhd_step_ms', 'isolated_step_ms', 'private_only_step_ms',
              'ratio_mhd_vs_isolated', 'ratio_mhd_vs_private_only'):
    assert row[key] > 0, key
