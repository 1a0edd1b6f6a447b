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


@pytest.mark.slow  # a benchmark script in its own process
@pytest.mark.parametrize('models', ['default'])  # resnet18_cifar: +50 s of compilation
def test_client_scaling_quick(models):
  (row,) = run_benchmark('client_scaling.py', f'--models={models}')
  assert row['model'] == models and row['n_clients'] == 2 and row['strategy'] == 'vmap'  # auto on CPU, no convolutions
  # One repeat: the ratio is that round's stacked / (N x single) time, rounded to 3 digits;
  # the times are rounded to 1 us on steps of about 1 ms (so 0.5%; a missing /N is 100%).
  assert row['ratio_vs_n_single'] == pytest.approx(
      row['step_ms'] / (2 * row['single_step_ms']), rel=5e-3, abs=2e-3)
  # The peak resident memory holds at least what the step's buffers need.
  assert row['peak_rss_mb'] >= row['step_memory_mb'] > 0
  assert row['compile_s'] > 0


@pytest.mark.slow  # a benchmark script in its own process
def test_distill_overhead_quick():
  (row,) = run_benchmark('distill_overhead.py', '--models=default')
  assert row['n_clients'] == 2
  # Each ratio is the quotient of the times it names: both rounded to 1 us on steps of about
  # 0.4 ms, the ratio to 3 digits (so up to 0.4%; a wrong quotient is off by far more).
  assert row['ratio_mhd_vs_isolated'] == pytest.approx(
      row['mhd_step_ms'] / row['isolated_step_ms'], rel=5e-3, abs=1e-3)
  assert row['ratio_mhd_vs_private_only'] == pytest.approx(
      row['mhd_step_ms'] / row['private_only_step_ms'], rel=5e-3, abs=1e-3)
  for key in ('mhd_step_ms', 'isolated_step_ms', 'private_only_step_ms',
              'ratio_mhd_vs_isolated', 'ratio_mhd_vs_private_only'):
    assert row[key] > 0, key


@pytest.mark.slow  # a benchmark script in its own process
def test_dp_overhead_quick():
  (row,) = run_benchmark('dp_overhead.py')
  assert row['model'] == 'default' and row['n_clients'] == 2
  assert row['ratio_dp_vs_plain'] == pytest.approx(row['dp_step_ms'] / row['plain_step_ms'],
                                                   rel=2e-3, abs=1e-3)
  assert row['plain_step_ms'] > 0 and row['dp_step_ms'] > 0
  assert row['ratio_full_dp_vs_plain'] == pytest.approx(
      row['full_dp_step_ms'] / row['full_plain_step_ms'], rel=2e-3, abs=1e-3)


def _accelerator():
  sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
  import accelerator  # pylint: disable=g-import-not-at-top
  return accelerator


def test_count_flops_by_hand():
  """One strided grouped conv and one dense layer (inside a nested jit): 2 x multiply-adds."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def net(x_Bx8x8x4, k_3x3x2x6, w_96x5):
    y = jax.lax.conv_general_dilated(x_Bx8x8x4, k_3x3x2x6, (2, 2), 'SAME', feature_group_count=2,
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))  # [B, 4, 4, 6]
    return jax.jit(jnp.dot)(y.reshape(y.shape[0], -1), w_96x5)

  args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in ((3, 8, 8, 4), (3, 3, 2, 6), (96, 5))]
  conv_macs = 3 * 4 * 4 * 6 * (3 * 3 * 2)  # outputs x (window x input features per group)
  dense_macs = 3 * 5 * 96
  assert _accelerator().count_flops(net, *args) == 2 * (conv_macs + dense_macs)


def test_resnet_flops_match_published_counts():
  """The backbones' forward multiply-adds at 224 px are torchvision's (1.81 G, 3.66 G) plus heads."""
  from mhd_jax.population import groups as groups_lib  # pylint: disable=g-import-not-at-top
  acc = _accelerator()
  for name, published_gmacs in (('resnet18', 1.8136), ('resnet34', 3.6637)):
    config, image, classes = acc.make_config(name)
    config.num_clients = 1
    (spec,) = groups_lib.make_specs(config, classes)
    heads_macs = config.num_heads * 512 * classes
    backbone_gmacs = (acc.forward_flops_per_image(spec.model, image) / 2 - heads_macs) / 1e9
    assert abs(backbone_gmacs - published_gmacs) < 1e-3 * published_gmacs, (name, backbone_gmacs)


def run_accelerator(tmp_path, *flags):
  out = tmp_path / 'accel.jsonl'
  proc = subprocess.run([sys.executable, 'benchmarks/accelerator.py', '--quick', f'--out={out}',
                         *flags], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  records = [json.loads(l) for l in lines if l.startswith('{')]
  assert out.read_text().splitlines() == [json.dumps(r) for r in records]  # every row, flushed
  table = [l for l in lines if l.startswith('| tiny_cnn')]
  assert records[0]['machine']['device_kind'] and len(table) == len(records) - 1
  return records[1:]


@pytest.mark.slow  # a benchmark script in its own process
def test_accelerator_quick(tmp_path):
  rows = run_accelerator(tmp_path)
  assert [(r['n_clients'], r['strategy']) for r in rows] == [
      (1, 'single'), (2, 'hybrid'), (2, 'vmap'), (2, 'loop'), (2, 'auto')]
  single = rows[0]
  assert single['ratio_vs_n_single'] == 1.0 and single['step_ms'] == single['single_step_ms']
  for r in rows:
    assert 'error' not in r and 'skipped' not in r, r
    n, images = r['n_clients'], r['n_clients'] * (4 + 4)
    # 3x3 conv 3->4 on 8x8, Dense 64->8 after the 2x2 pool, 2 heads of 10 (SHAPES' comment).
    assert r['forward_flop_per_image'] == 2 * (8 * 8 * 4 * 27 + 64 * 8 + 2 * 8 * 10) == 15168
    step_s = r['step_ms'] / 1e3
    assert abs(r['ratio_vs_n_single'] - r['step_ms'] / (n * r['single_step_ms'])) < 2e-3
    assert abs(r['images_per_s'] - images / step_s) < 1e-3 * r['images_per_s']
    assert abs(r['tflops'] - 3 * 15168 * images / step_s / 1e12) < 1e-3 * r['tflops']
    assert r['fraction_of_peak'] is None  # no known peak for a CPU
  auto, timed = rows[4], {r['strategy']: r for r in rows[1:4]}
  # auto measured the three candidates as a run does, and repeats the row of its choice.
  assert set(auto['measured_ms']) <= set(timed) and auto['chose'] in auto['measured_ms']
  assert auto['chose'] == min(auto['measured_ms'], key=auto['measured_ms'].get)
  assert auto['step_ms'] == timed[auto['chose']]['step_ms']


@pytest.mark.slow  # a benchmark script in its own process
def test_accelerator_budget_skips_the_rest(tmp_path):
  """A spent budget writes every remaining row as skipped and exits cleanly (no timing)."""
  rows = run_accelerator(tmp_path, '--budget_s=0.001', '--n=1,3', '--strategies=vmap,loop')
  assert [(r['n_clients'], r['strategy']) for r in rows] == [(1, 'single'), (3, 'vmap'),
                                                             (3, 'loop')]
  assert all('budget' in r['skipped'] for r in rows)


def test_peak_by_device_kind():
  """jax's device_kind strings: the H100 SXM, PCIe, v5e ('lite') and v5p differ; unknown: None."""
  peak = _accelerator().peak_tflops
  assert peak('NVIDIA H100 80GB HBM3') == 989.4 and peak('NVIDIA H100 PCIe') == 756.0
  assert peak('TPU v5 lite') == 197.0 and peak('TPU v5') == 459.0 and peak('cpu') is None


@pytest.mark.slow  # a benchmark script in its own process
def test_dynamics_draws_quick():
  from mhd_jax.network import graph_schedule  # pylint: disable=g-import-not-at-top
  rows = run_benchmark('dynamics_draws.py')
  assert [r['draw'] for r in rows] == [f'schedule={k}' for k in graph_schedule.SCHEDULES] + [
      'participation=bernoulli']
  assert all(r['n_clients'] == 8 and r['us_per_step'] > 0 for r in rows)


@pytest.mark.slow  # a benchmark script in its own process
def test_population_scaling_quick():
  rows = run_benchmark('population_scaling.py')
  assert [(r['graph'], r['n_clients'], r['exchange'], r['width']) for r in rows] == [
      ('ring', 16, 'sparse', 3), ('ring', 16, 'dense', 16)]  # a table row: i, 2 neighbours
  for r in rows:
    assert r['per_client_ms'] == pytest.approx(r['step_ms'] / 16, rel=2e-3, abs=1e-4)
    assert r['cpu_per_client_ms'] == pytest.approx(r['cpu_step_ms'] / 16, rel=2e-3, abs=1e-4)
    assert r['peak_rss_mb'] >= r['step_memory_mb'] > 0 and r['compile_s'] > 0
    assert r['per_client_vs_16'] > 0 and r['cpu_per_client_vs_16'] > 0  # against itself


def _population_scaling():
  sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
  import population_scaling  # pylint: disable=g-import-not-at-top
  return population_scaling


def test_population_scaling_collectives_from_hlo():
  """The cross-device ops of a compiled step, read off its HLO text, with their bytes."""
  hlo = ('  %all-gather = f32[1024,3,64,10]{3,2,1,0} all-gather(f32[128,3,64,10]{3,2,1,0} %x), '
         'channel_id=1, replica_groups=[1,8]<=[8], dimensions={0}\n'
         '  %cp = s32[16]{0} collective-permute(s32[16]{0} %y), source_target_pairs={{0,1}}\n'
         '  %add = f32[1024]{0} add(f32[1024]{0} %a, f32[1024]{0} %b)\n')
  assert _population_scaling().collectives(hlo) == [
      {'op': 'all-gather', 'shape': 'f32[1024, 3, 64, 10]', 'bytes': 4 * 1024 * 3 * 64 * 10},
      {'op': 'collective-permute', 'shape': 's32[16]', 'bytes': 64}]


def test_population_scaling_table():
  """Sparse against dense comes from the CPU times of the rows it names; skipped rows say why."""
  row = lambda n, e, cpu: {'model': 'default', 'graph': 'ring', 'n_clients': n, 'exchange': e,
                           'width': 3 if e == 'sparse' else n, 'step_ms': 2 * cpu,
                           'per_client_ms': 2 * cpu / n, 'per_client_vs_16': 1.5,
                           'cpu_step_ms': cpu, 'cpu_per_client_ms': cpu / n,
                           'cpu_per_client_vs_16': 1.25, 'step_memory_mb': n / 2,
                           'peak_rss_mb': 500, 'compile_s': 3.0}
  rows = [row(16, 'sparse', 8.0), row(16, 'dense', 10.0), row(64, 'sparse', 48.0),
          row(64, 'dense', 96.0),
          {'model': 'default', 'graph': 'ring', 'n_clients': 256, 'exchange': 'dense',
           'width': 256, 'skipped': 'too big'}]
  lines = _population_scaling().table(rows).splitlines()
  cells = [[c.strip() for c in l.strip('|').split('|')] for l in lines[2:]]
  assert all(len(c) == len(lines[0].strip('|').split('|')) for c in cells)
  assert [c[10] for c in cells[:4]] == ['0.80', '', '0.50', '']
  assert cells[2][7:10] == ['1.50', '0.750', '1.25'] and cells[2][12] == '0.500'
  assert cells[4][5] == 'too big'


@pytest.mark.slow  # a benchmark script in its own process
def test_exchange_crossover_quick():
  (row,) = run_benchmark('exchange_crossover.py')
  assert (row['n_clients'], row['degree'], row['width'], row['share']) == (8, 2, 3, 0.375)
  assert row['topology'] == 'random_regular' and row['sparse_memory_mb'] > 0
  # One repeat: each ratio is that round's sparse / dense time, rounded to 3 digits.
  assert row['sparse_vs_dense'] == pytest.approx(row['sparse_step_ms'] / row['dense_step_ms'],
                                                 rel=5e-3, abs=2e-3)
  assert row['cpu_sparse_vs_dense'] == pytest.approx(
      row['sparse_cpu_step_ms'] / row['dense_cpu_step_ms'], rel=5e-3, abs=2e-3)


@pytest.mark.slow  # a benchmark script in its own process
def test_cohorts_quick():
  rows = run_benchmark('cohorts.py', '--models=default')
  assert [(r['n_clients'], r['k'], r['cohort_width']) for r in rows] == [(2, 2, 2), (4, 2, 2)]
  for r in rows:
    assert r['resident_ms_per_client'] > 0 and r['streamed_ms_per_client'] > 0
    assert r['ratio_streamed_vs_resident'] > 0 and r['cpu_ratio_streamed_vs_resident'] > 0
    assert r['pass1_ms_per_client'] > 0 and r['pass1_share'] > 0
    assert r['streamed_memory_mb'] > 0 and r['host_store_mb'] > 0
  # The host store grows with N; one cohort's step does not.
  assert rows[1]['host_store_mb'] == pytest.approx(2 * rows[0]['host_store_mb'], rel=1e-2)
