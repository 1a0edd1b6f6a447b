"""The studies: hop accuracies by hand, and one study end to end."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from mhd_jax.outputs import summary as summary_lib
from mhd_jax.outputs import workdir as wd
from mhd_jax.run import config_check
from mhd_jax.network import topology as topology_lib
from configs import default
from mhd_jax.studies import claims
from mhd_jax.studies import cli
from mhd_jax.studies import metrics
from mhd_jax.studies import runs as study_runs
from mhd_jax.studies import tables
from tests.conftest import ROOT


def test_chain_hops_averages_pairs_at_each_distance(tmp_path):
  # 3 clients on a chain, client i owns class i (10 test examples each); last head only.
  correct = np.zeros((3, 2, 3))
  correct[:, -1] = [[10, 5, 2], [4, 10, 6], [0, 8, 10]]
  np.savez(tmp_path / 'per_class.npz', correct_NxHxC=correct, count_C=np.full(3, 10),
           primary_NxC=np.eye(3, dtype=bool))
  hops = claims.chain_hops(str(tmp_path))
  # d=1: pairs (0,1) (1,0) (1,2) (2,1) -> 50, 40, 60, 80; d=2: (0,2) (2,0) -> 20, 0.
  np.testing.assert_allclose(hops, [57.5, 10.0])


def test_headline_takes_head0_private_and_last_head_shared():
  client = lambda i, private, shared: summary_lib.ClientSummary(i, private, shared, 0)
  summary = summary_lib.Summary(num_clients=2, num_heads=2, steps=1, wall_seconds=0.0,
                                mean_private_acc=[0.8, 0.05], mean_shared_acc=[0.3, 0.7],
                                clients=[client(0, [0.9, 0.1], [0.2, 0.6]),
                                         client(1, [0.7, 0.0], [0.4, 0.8])],
                                bytes_sent_per_step=0)
  h = tables.headline([summary, summary])
  assert np.isclose(h['private_mean'], 80.0) and np.isclose(h['shared_mean'], 70.0)
  assert h['private_std'] == 0.0
  assert np.isclose(tables.headline([summary], clients=[1])['shared_mean'], 80.0)


def test_models_study_asks_claim5_three_ways():
  """Small in the mix vs small alone, large in the mix vs large alone, and the one large client
  vs the best small client of its own run; each from the right clients of the right run."""
  def run(shared):  # last head's shared accuracy per client (head 0 differs, so heads matter)
    clients = [summary_lib.ClientSummary(i, [0.0, 0.0], [0.0, a], 0) for i, a in enumerate(shared)]
    return summary_lib.Summary(num_clients=4, num_heads=2, steps=1, wall_seconds=0.0,
                               mean_private_acc=[0.0, 0.0], mean_shared_acc=[0.0, 0.0],
                               clients=clients, bytes_sent_per_step=0)
  base = types.SimpleNamespace(num_clients=4, get=lambda *_: {})
  variants, analyse = claims.models(base, None)
  assert variants['one large among small']['groups']['g1']['num_clients'] == 1
  assert variants['mixed']['groups']['g0']['model'] == claims.SMALL  # small first in the mix
  runs = {'small-only': [run([.1, .2, .9, .9]), run([.3, .4, .9, .9])],
          'large-only': [run([.9, .9, .5, .6]), run([.9, .9, .7, .8])],
          'mixed': [run([.7, .8, .2, .2]), run([.5, .6, .4, .4])],
          'one large among small': [run([.1, .6, .3, .9]), run([.2, .1, .7, .8])]}
  results, md, _ = analyse(runs, None)
  c = results['claim5']
  np.testing.assert_allclose(c['small in the mix'], [75, 55])
  np.testing.assert_allclose(c['small alone'], [15, 35])
  np.testing.assert_allclose(c['large in the mix'], [20, 40])
  np.testing.assert_allclose(c['large alone'], [55, 75])
  np.testing.assert_allclose(c['the large client'], [90, 80])
  np.testing.assert_allclose(c['the best small client'], [60, 70])
  assert '## Claim 5' in md and md.count('| ') >= 9


@pytest.mark.slow  # a study end to end: 6 runs in worker processes
def test_methods_study_writes_its_table_plot_and_numbers(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'mhd_jax.studies', 'methods', f'--workdir={tmp_path}', '--seeds=1',
       '--config.num_steps=4', '--config.log_every=4', '--config.eval_every=4'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / 'methods.json').read_text())['grid']
  assert list(results) == ['isolated', 'naive (H=1)', 'MHD (H=3)',
                           'MHD + emb (H=3, most confident)', 'FedAvg (every 10 steps)',
                           'supervised upper bound']
  md = (tmp_path / 'methods.md').read_text()
  assert all(name in md for name in results)
  # Every run evaluated at each step (eval_every = 4 // 30 -> 1): its AUC is the trapezoid mean.
  records = [json.loads(line) for line in
             (tmp_path / 'methods' / 'isolated' / 'seed0' / 'metrics.jsonl').open()]
  acc = [100 * r['eval']['mean_shared_acc'][-1] for r in records if 'eval' in r]
  assert len(acc) == 4
  np.testing.assert_allclose(results['isolated']['']['auc_mean'],
                             (acc[0] / 2 + acc[1] + acc[2] + acc[3] / 2) / 3, rtol=1e-6)
  assert '| isolated | ' in md and ' AUC |' in md
  assert os.path.getsize(tmp_path / 'methods.png') > 10_000


def _study(name, workdir, *args):
  return subprocess.run(
      [sys.executable, '-m', 'mhd_jax.studies', name, f'--workdir={workdir}', *args],
      cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # a study's quick form: 4 runs in worker processes
def test_hops_study_quick_form_reports_every_head_on_chain_and_ring(tmp_path):
  out = _study('hops', tmp_path, '--quick', '--seeds=1', '--jobs=2')
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / 'hops.json').read_text())
  assert set(results) == {'chain', 'ring', 'speed'}
  chain, ring = results['chain'], results['ring']
  # The speed table: each run's final shared accuracy is its summary's (last head).
  summary = summary_lib.read_summary(str(tmp_path / 'hops' / 'ring_H2' / 'seed0'))
  assert np.isclose(results['speed']['ring_H2']['last'][0], 100 * summary.mean_shared_acc[-1])
  assert chain['H=2']['d'] == list(range(1, 10)) and ring['H=2']['d'] == [1, 2, 3, 4, 5]
  assert chain['H=2']['pairs'] == [18, 16, 14, 12, 10, 8, 6, 4, 2]
  assert ring['H=1']['pairs'] == [20, 20, 20, 20, 10]
  assert np.asarray(chain['H=2']['per_seed']).shape == (1, 2, 9)  # [seeds, heads, d]
  # The hop curve of every run is the one its per_class.npz gives by hand.
  run = tmp_path / 'hops' / 'chain_H2' / 'seed0'
  np.testing.assert_allclose(chain['H=2']['per_seed'][0][1], claims.chain_hops(str(run)))
  md = (tmp_path / 'hops.md').read_text()
  assert '### ring' in md and '| 2 | 1 |' in md and '| | pairs | 18 |' in md
  assert '| ring | 2 |' in md  # the speed table
  assert os.path.getsize(tmp_path / 'hops.png') > 10_000


def test_bad_study_arguments_stop_in_one_line_before_training(tmp_path):
  for args, message in [(['nope'], "unknown study 'nope'"),
                        (['efficiency', '--jobs=0'], '--jobs must be >= 1')]:
    out = _study(args[0], tmp_path, *args[1:])
    assert out.returncode == 2, (args, out.stderr[-2000:])
    assert out.stderr.strip().count('\n') == 0 and message in out.stderr, (args, out.stderr)
    assert not os.listdir(tmp_path), args  # nothing trained, nothing written
  # What the command plans (and refuses in one line as above), asked in this process.
  base = cli.study_base(default.get_config(), quick=True)
  for name, opts, override, message in [
      ('hops', dict(seeds=()), {}, '--seeds must be >= 1'),
      ('hops', dict(heads=(1, 0)), {}, 'num_heads must be >= 1'),
      ('recipes', {}, {'temperature': 0.0}, 'temperature must be > 0')]:
    config = base.copy_and_resolve_references()
    config.update_from_flattened_dict(override)
    opts = study_runs.Options(**{'seeds': (0,), 'quick': True, **opts})
    with pytest.raises(cli.UsageError, match=message):
      cli.plan(name, config, opts, str(tmp_path / name))
  assert not os.listdir(tmp_path)


def _tiny_runs(tmp_path):
  from configs import default  # pylint: disable=g-import-not-at-top
  base = default.get_config()
  overrides = {'num_clients': 3, 'num_steps': 6, 'log_every': 3, 'eval_every': 3,
               'model.width': 16, 'model.depth': 1, 'topology': 'chain', 'skew': 1.0}
  return [study_runs.Run(study_runs.configure(base, {**overrides, 'num_heads': h}, 0),
                         str(tmp_path / f'H{h}')) for h in (1, 2)]


@pytest.mark.slow  # 4 runs in worker processes
def test_parallel_runs_match_serial_runs_and_finished_runs_are_reused(tmp_path):
  serial = _tiny_runs(tmp_path / 'serial')
  parallel = _tiny_runs(tmp_path / 'parallel')
  study_runs.check(serial + parallel)
  s1 = study_runs.execute(serial, jobs=1, progress=lambda _: None)
  s2 = study_runs.execute(parallel, jobs=2, progress=lambda _: None)
  for a, b, ra, rb in zip(s1, s2, serial, parallel):
    assert a.mean_shared_acc == b.mean_shared_acc and a.clients == b.clients
    with np.load(os.path.join(ra.workdir, 'per_class.npz')) as za, \
         np.load(os.path.join(rb.workdir, 'per_class.npz')) as zb:
      np.testing.assert_array_equal(za['correct_NxHxC'], zb['correct_NxHxC'])
  # A finished run is read back, not trained again.
  stamp = os.path.getmtime(os.path.join(serial[0].workdir, 'summary.json'))
  said = []
  assert study_runs.execute(serial, jobs=2, progress=said.append) == s1
  assert not said and os.path.getmtime(os.path.join(serial[0].workdir, 'summary.json')) == stamp


def test_a_workdir_of_another_config_is_refused_up_front(tmp_path):
  runs = _tiny_runs(tmp_path)
  os.makedirs(runs[0].workdir)  # the H=1 run's config.json, as its training writes it
  with open(wd.path(runs[0].workdir, wd.CONFIG), 'w') as f:
    f.write(runs[0].config.to_json(indent=1, sort_keys=True))
  study_runs.check(runs)  # its own config is accepted there
  other = study_runs.Run(runs[1].config, runs[0].workdir)  # H=2 into the H=1 run's workdir
  with pytest.raises(config_check.ConfigError, match='different config'):
    study_runs.check([other])


@pytest.mark.slow  # two studies' quick forms: 9 runs in worker processes
def test_efficiency_and_recipes_quick_forms_read_their_runs(tmp_path):
  for name in ('efficiency', 'recipes'):
    out = _study(name, tmp_path, '--quick', '--seeds=1', '--jobs=2')
    assert out.returncode == 0, out.stderr[-3000:]
    assert os.path.getsize(tmp_path / f'{name}.png') > 10_000
  eff = json.loads((tmp_path / 'efficiency.json').read_text())
  bound = eff['supervised']
  assert eff['bound_final'] == bound['final'][0] == bound['curve'][0][-1]
  h2 = eff['settings']['skew 1.0, chain']['H=2']
  assert h2['steps'][0] == list(range(1, 31))  # eval_every = 30 steps / 30
  records = [json.loads(line) for line in
             (tmp_path / 'efficiency' / 'skew_1.0_chain_H=2' / 'seed0' / 'metrics.jsonl').open()]
  last = [r for r in records if 'eval' in r][-1]['eval']['mean_shared_acc'][-1]
  np.testing.assert_allclose(h2['final'][0], 100 * last)
  assert '| skew 1.0, chain | 2 |' in (tmp_path / 'efficiency.md').read_text()
  rec = json.loads((tmp_path / 'recipes.json').read_text())
  assert list(rec) == ['chain: naive (H=1)', 'chain: MHD (H=4)',
                       'chain: include_self, target=neighbour_and_self']
  summary = json.loads((tmp_path / 'recipes' / 'chain_MHD_H=4' / 'seed0' / 'summary.json')
                       .read_text())
  mhd = rec['chain: MHD (H=4)']
  np.testing.assert_allclose(mhd['private'][0], 100 * summary['mean_private_acc'][0])
  np.testing.assert_allclose(mhd['shared_best'][0], 100 * max(summary['mean_shared_acc']))
  # Far-hop accuracy of the last head = the hop curve's pair-weighted mean over d >= 5.
  curve = claims.chain_hops(str(tmp_path / 'recipes' / 'chain_MHD_H=4' / 'seed0'))
  pairs = np.array([18, 16, 14, 12, 10, 8, 6, 4, 2])
  np.testing.assert_allclose(mhd['far_last'][0], (curve[4:] * pairs[4:]).sum() / pairs[4:].sum(),
                             rtol=1e-6)


def _summaries(shared: dict) -> dict:
  """{variant: [summary per seed]} with private = 50 and the given last-head shared (%)."""
  return {v: [types.SimpleNamespace(mean_private_acc=[0.5], mean_shared_acc=[0.0, x / 100])
              for x in xs] for v, xs in shared.items()}


def test_dynamics_tables_mark_differences_beyond_the_noise_against_the_baseline():
  from mhd_jax.studies import network as ns  # pylint: disable=g-import-not-at-top
  axes = {'availability p': {'p=1.0': {}, 'p=0.4': {'dynamics.availability': 0.4}}}
  summaries = _summaries({
      'MHD (H=3): static, full': [80, 81, 82], 'MHD (H=3): availability p p=0.4': [60, 61, 62],
      'naive (H=1): static, full': [78, 81, 84], 'naive (H=1): availability p p=0.4': [76, 80, 84],
      'FedAvg (every 10 steps): static, full': [90, 91, 92]})
  results = ns.results_of(summaries, axes, list(ns.METHODS))
  assert 'FedAvg (every 10 steps)' not in results['availability p']['p=0.4']
  rows = ns.markdown(results).splitlines()
  base, low = rows[-2].split(' | '), rows[-1].split(' | ')
  # MHD: -20 with std 1 on both sides is beyond 2 SE; naive: -1 with std 3 and 4 is not.
  assert low[2] == '61.0 ± 1.0 ↓' and low[4] == '80.0 ± 4.0' and low[5:7] == ['n/a', 'n/a']
  assert base[2] == '81.0 ± 1.0' and base[6] == '91.0 ± 1.0'
  # MHD − naive on shared: 0 at the baseline, -19 beyond the noise at p = 0.4.
  assert base[-1] == '+0.0 |' and low[-1] == '-19.0 * |'


@pytest.mark.slow  # a study's quick form: 12 runs in worker processes
def test_dynamics_study_quick_form_runs_every_axis_that_draws(tmp_path):
  out = _study('dynamics', tmp_path, '--quick', '--seeds=1', '--jobs=2')
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / 'dynamics.json').read_text())
  assert list(results) == ['availability p', 'link failure p', 'graph schedule']
  assert list(results['graph schedule']) == ['static', 'matching']
  assert list(results['availability p']['p=1.0']) == ['MHD (H=3)', 'naive (H=1)',
                                                      'FedAvg (every 10 steps)']
  run = lambda v: json.loads((tmp_path / 'dynamics' / v / 'seed0' / 'summary.json').read_text())
  assert list(results['graph schedule']['matching']) == list(results['availability p']['p=1.0'])
  assert len(os.listdir(tmp_path / 'dynamics')) == 12  # (baseline + 3 points) x 3 methods
  fedavg = run('FedAvg_every_10_steps_availability_p_p=0.4')
  assert sum(c['steps_taken'] for c in fedavg['clients']) < 0.6 * 150
  full, absent = run('MHD_H=3_static_full'), run('MHD_H=3_availability_p_p=0.4')
  assert [c['steps_taken'] for c in full['clients']] == [30] * 5
  assert sum(c['steps_taken'] for c in absent['clients']) < 0.6 * 150  # p = 0.4 of 5 x 30
  np.testing.assert_allclose(results['availability p']['p=0.4']['MHD (H=3)']['shared'][0],
                             100 * absent['mean_shared_acc'][-1])
  assert results['link failure p']['p=0']['MHD (H=3)'] == results['availability p']['p=1.0'][
      'MHD (H=3)']  # one baseline run serves every axis
  md = (tmp_path / 'dynamics.md').read_text()
  assert '### link failure p' in md and '| matching | ' in md
  assert os.path.getsize(tmp_path / 'dynamics.png') > 10_000


def test_dynamics_study_runs_fedavg_on_every_axis_but_staleness():
  from configs import default  # pylint: disable=g-import-not-at-top
  from mhd_jax.studies import network as ns  # pylint: disable=g-import-not-at-top
  variants, _ = ns.dynamics(default.get_config(), study_runs.Options((0,)))
  assert len(variants) == 8 + 8 + 6  # MHD and naive at 8 points, FedAvg at all but 2
  assert not [v for v in variants if v.startswith('FedAvg') and 'staleness' in v]
  assert variants['naive (H=1): staleness tau tau=8'] == {
      'num_clients': 10, 'topology': 'ring', 'num_steps': 1200, 'eval_every': 40,
      'num_heads': 1, 'dynamics.staleness': 8}


def _client_summaries(shared_by_client):
  """A summary whose client i has last-head shared accuracy shared_by_client[i] (%), private 90,
  two heads (head 0's mean shared accuracy 10 below the last head's)."""
  clients = [types.SimpleNamespace(shared_acc=[x / 100 - 0.1, x / 100], private_acc=[0.9, 0.9])
             for x in shared_by_client]
  mean = float(np.mean(shared_by_client)) / 100
  return types.SimpleNamespace(clients=clients, mean_shared_acc=[mean - 0.1, mean])


def test_targets_study_splits_the_groups_and_marks_against_confidence_weighted():
  from configs import digits_hetero  # pylint: disable=g-import-not-at-top
  from mhd_jax.studies import targets  # pylint: disable=g-import-not-at-top
  opts = study_runs.Options(seeds=(0, 1, 2), rules=('confidence_weighted', 'class_relative^4'))
  variants, analyse = targets.targets(digits_hetero.get_config(), opts)
  assert variants == {'confidence_weighted': {'target': 'confidence_weighted', 'target_power': 1.0},
                      'class_relative^4': {'target': 'class_relative', 'target_power': 4.0}}
  # Groups in client order: 'large' holds clients 0-3, 'small' clients 4-7.
  summaries = {'confidence_weighted': [_client_summaries([80] * 4 + [s] * 4) for s in (60, 61, 62)],
               'class_relative^4': [_client_summaries([80] * 4 + [s] * 4) for s in (90, 91, 92)]}
  results, md, _ = analyse(summaries, None)
  cw = results['confidence_weighted']
  np.testing.assert_allclose(cw['large shared'], [80, 80, 80])
  np.testing.assert_allclose(cw['small shared'], [60, 61, 62])
  np.testing.assert_allclose(cw['shared head 1'], [70, 70.5, 71])
  np.testing.assert_allclose(cw['shared head 0'], [60, 60.5, 61])
  assert 'large = clients 0-3 (mlp, width 256, depth 3)' in md
  row = [r for r in md.splitlines() if r.startswith('| class_relative^4 |')][0].split(' | ')
  head = md.splitlines()[2].split(' | ')
  assert row[head.index('small shared')] == '91.0 ± 1.0 ↑'
  assert row[head.index('large shared')] == '80.0 ± 0.0'  # equal: no mark


def test_diagnose_group_figures_by_hand():
  from mhd_jax.studies import diagnose  # pylint: disable=g-import-not-at-top
  # Group 0: client 0 names each example's class (one-hot, balanced batch of 2 classes);
  # group 1: client 1 is uniform, client 2 says class 0 on both examples.
  probs = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]],
                    [[1.0, 0.0], [1.0, 0.0]]])
  mixing = np.array([[[0.0, 0.25, 0.75], [0.0, 0.5, 0.5]],   # client 0: all from group 1
                     [[0.6, 0.0, 0.4], [0.2, 0.0, 0.8]],     # client 1: 0.6, 0.2 from group 0
                     [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])    # client 2: 1.0, 0.0 from group 0
  g0, g1 = diagnose.group_figures(probs, mixing, np.array([0, 1, 1]))
  np.testing.assert_allclose([g0['conf'], g0['certainty'], g0['information'], g0['from_others']],
                             [1.0, 1.0, 1.0, 1.0])
  np.testing.assert_allclose([g1['conf'], g1['certainty'], g1['from_others']],
                             [0.75, 0.5, (0.6 + 0.2 + 1.0 + 0.0) / 4])
  np.testing.assert_allclose(g1['information'], 0.0, atol=1e-12)  # neither varies by example


def test_class_hops_takes_the_nearest_owner_of_each_class():
  # A chain 0 - 1 - 2 - 3; clients 0 and 3 own class 0, 1 owns class 1, 2 owns class 2.
  primary = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], bool)
  correct = np.zeros((4, 2, 3))
  correct[:, 1] = [[10, 5, 2], [8, 10, 6], [4, 7, 10], [10, 1, 9]]  # last head; 10 per class
  per_class = summary_lib.PerClass(correct, np.full(3, 10), primary)
  hops = metrics.class_hops(per_class, topology_lib.chain(4))
  # d(i, c): class 0 is 0 hops from 0 and 3, 1 from 1 and 2 (not 2 or 3: the nearest owner);
  # class 1: 1, 0, 1, 2 hops; class 2: 2, 1, 0, 1.
  assert hops['d'] == [0, 1, 2] and hops['pairs_D'] == [4, 6, 2]
  np.testing.assert_allclose(hops['acc_HxD'][1], [100, (80 + 40 + 50 + 70 + 60 + 90) / 6, 15])
  np.testing.assert_allclose(hops['acc_HxD'][0], [0, 0, 0])


@pytest.mark.slow  # three runs in worker processes
def test_population_study_quick_form(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'mhd_jax.studies', 'population', '--config=configs/population.py',
       '--quick', '--seeds=1', f'--workdir={tmp_path}'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.load(open(tmp_path / 'population.json'))
  assert list(results) == ['isolated', 'naive (H=1)', 'MHD (H=3)']
  mhd = results['MHD (H=3)']
  assert mhd['d'][0] == 0 and sum(mhd['pairs']) == 16 * 10  # every (client, class) pair
  assert len(mhd['steps']) == len(mhd['shared_SxT'][0]) and mhd['wall_s'][0] > 0
  assert (tmp_path / 'population.md').exists() and (tmp_path / 'population.png').exists()
