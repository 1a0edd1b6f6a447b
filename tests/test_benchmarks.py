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
  for key in ('step_ms', 'single_step_ms', 'ratio_vs_n_single', 'peak_rss_mb', 'compile_s'):
    assert row[key] > 0, key
  assert abs(row['ratio_vs_n_single'] - row['step_ms'] / (2 * row['single_step_ms'])) < 0.2


def test_distill_overhead_quick():
  (row,) = run_benchmark('distill_overhead.py', '--models=default')
  assert row['n_clients'] == 2
  for key in ('mhd_step_ms', 'isolated_step_ms', 'private_only_step_ms',
              'ratio_mhd_vs_isolated', 'ratio_mhd_vs_private_only'):
    assert row[key] > 0, key
