"""The population study (issue 21): MHD against naive distillation and isolated training on
a thousand clients and more, on a sparse graph whose diameter is larger than the heads.

Same shape as the other studies (`claims`): `(base, opts) -> (variants, analyse)`, every
variant on every seed, mean ± std over seeds (ddof=1), marks beyond the noise
(`metrics.exceeds_noise`) against naive distillation.
"""

import numpy as np

from mhd_jax.network import topology
from mhd_jax.outputs import summary as summary_lib
from mhd_jax.outputs import workdir as wd
from mhd_jax.studies import methods
from mhd_jax.studies import metrics
from mhd_jax.studies import tables

VARIANTS = {'isolated': methods.ISOLATED, 'naive (H=1)': methods.NAIVE, 'MHD (H=3)': methods.MHD}
NUM_EVALS = 5  # evaluations per run: an evaluation of every client costs several steps
QUICK = {'num_clients': 16, 'data.num_samples': 2000, 'data.num_test': 400}  # --quick


def population(base, opts):
  """Isolated, naive (H=1) and MHD (H=3) on the base config's population and graph
  (configs/population.py: 1,024 MNIST-1D MLP clients on a 32 x 32 torus, each owning one
  class, the classes in bands of neighbouring clients).

  Accuracy against hops: each client's accuracy (%) on a class against the hops from the
  client to the class's nearest owner (0: its own class; `metrics.class_hops`), for head 0
  and the last head. Does knowledge cross more hops than there are heads? Then the mean
  shared accuracy over steps and the wall time of each run. ↑ / ↓: beats / trails naive
  distillation beyond the noise.
  """
  small = QUICK if opts.quick else {}
  variants = {name: {**o, **small, 'eval_every': max(1, base.num_steps // NUM_EVALS)}
              for name, o in VARIANTS.items()}

  def analyse(summaries, runs):
    graphs = [topology.build(r.config) for r in runs['naive (H=1)']]  # isolated runs have none
    results = {}
    for name, rs in runs.items():
      hops = [metrics.class_hops(summary_lib.read_per_class(r.workdir), g)
              for r, g in zip(rs, graphs)]
      curves = [metrics.accuracy_curve(wd.read_metrics(r.workdir)) for r in rs]
      results[name] = {
          'd': hops[0]['d'], 'pairs': hops[0]['pairs_D'],
          'head0_SxD': [h['acc_HxD'][0].tolist() for h in hops],
          'last_SxD': [h['acc_HxD'][-1].tolist() for h in hops],
          'steps': curves[0][0].tolist(), 'shared_SxT': [c[1].tolist() for c in curves],
          'wall_s': [s.wall_seconds for s in summaries[name]],
          **tables.headline(summaries[name])}
    return results, _markdown(results, base.num_clients), lambda path: _plot(results, path)

  return variants, analyse


def _markdown(results: dict, n: int) -> str:
  naive = results['naive (H=1)']
  d = max((r['d'] for r in results.values()), key=len)
  lines = [f'{n} clients. Mean ± std over {len(naive["wall_s"])} seeds.\n',
           '| method | head | ' + ' | '.join(f'd={x}' for x in d) + ' |',
           '|---' * (len(d) + 2) + '|',
           '| | (client, class) pairs | ' + ' | '.join(str(p) for p in naive['pairs']) + ' |']
  for name, r in results.items():
    for head, key in (('0', 'head0_SxD'), ('last', 'last_SxD')):
      acc = np.asarray(r[key])
      ref = np.asarray(naive['head0_SxD'])
      cells = [tables.cell(acc[:, x], '' if r is naive else tables.mark(acc[:, x], ref[:, x]))
               if x < acc.shape[1] else '' for x in range(len(d))]
      lines.append(f'| {name} | {head} | ' + ' | '.join(cells) + ' |')
  lines += ['', '| method | private (head 0) | shared (last head) | shared AUC over steps | '
                'wall time (s) |', '|---|---|---|---|---|']
  auc = lambda r: [metrics.efficiency(r['steps'], c)['auc'] for c in r['shared_SxT']]
  for name, r in results.items():
    mark = '' if r is naive else tables.mark(r['shared'], naive['shared'])
    lines.append(f'| {name} | {tables.cell(r["private"])} | {tables.cell(r["shared"], mark)} | '
                 f'{tables.cell(auc(r))} | {tables.cell(r["wall_s"])} |')
  return '\n'.join(lines) + '\n'


def _plot(results: dict, path: str):
  plt = tables.pyplot()
  fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
  for name, r in results.items():
    acc = np.asarray(r['last_SxD'])
    a.errorbar(r['d'], acc.mean(0), yerr=acc.std(0), marker='o', capsize=3, label=name)
    shared = np.asarray(r['shared_SxT'])
    b.errorbar(r['steps'], shared.mean(0), yerr=shared.std(0), marker='o', capsize=3,
               label=name)
  tables.label(a, 'last head', 'hops to the class\'s nearest owner', 'accuracy on the class (%)')
  tables.label(b, 'mean shared accuracy', 'step', 'accuracy (%)')
  tables.save(plt, fig, path)
