"""The `recipes` study (issue 10): the space of choices around MHD, one factor at a time.

Like `heads`, `recipes(base, opts) -> (variants, analyse)`, on the 10-client
chain with one class per client (`heads.ONE_CLASS_EACH`). Means ± std are over
seeds (ddof=1); ↑ / ↓ mark a difference beyond the noise against naive
distillation (`tables.mark`).
"""

import numpy as np

from mhd_jax.network import topology
from mhd_jax.outputs import summary as summary_lib
from mhd_jax.studies import heads
from mhd_jax.studies import metrics
from mhd_jax.studies import tables

FAR_HOPS = 5  # "far" = d >= 5 on the 10-client chain


def recipe_variants(quick: bool) -> dict[str, dict]:
  """One factor at a time around MHD (H=4, default losses), plus targets with include_self."""
  centre = {'num_heads': 4}
  one = {'naive (H=1)': {'num_heads': 1}, 'MHD (H=4)': {},
         'nu_main=0': {'nu_main': 0.0}, 'nu_main=0.1': {'nu_main': 0.1},
         'nu_aux=0.1': {'nu_aux': 0.1}, 'nu_aux=3': {'nu_aux': 3.0},
         'include_self': {'include_self': True},
         'aux_backbone_grad=False': {'model.aux_backbone_grad': False},
         'T=3': {'temperature': 3.0}}
  # neighbours_first and neighbour_and_self equal most_confident without include_self.
  one |= {f'target={t}': {'target': t} for t in ('mean', 'random', 'confidence_weighted')}
  one |= {f'include_self, target={t}': {'include_self': True, 'target': t}
          for t in ('mean', 'random', 'confidence_weighted', 'neighbours_first',
                    'neighbour_and_self')}
  one |= {'nu_main=0.1, include_self, neighbour_and_self':
              {'nu_main': 0.1, 'include_self': True, 'target': 'neighbour_and_self'},
          'nu_main=0.1, include_self, confidence_weighted':
              {'nu_main': 0.1, 'include_self': True, 'target': 'confidence_weighted'},
          'aux_backbone_grad=False, include_self, neighbour_and_self':
              {'model.aux_backbone_grad': False, 'include_self': True,
               'target': 'neighbour_and_self'}}
  if quick:
    one = {k: one[k] for k in ('naive (H=1)', 'MHD (H=4)',
                               'include_self, target=neighbour_and_self')}
  return {k: {**heads.ONE_CLASS_EACH, **centre, **v} for k, v in one.items()}


RECIPE_KEYS = ('shared_last', 'shared_best', 'private', 'far_last', 'far_best', 'auc')


def _recipe_figures(run) -> dict:
  """One run's figures (%): shared acc of the last and best head, private acc of head 0,
  accuracy on classes >= FAR_HOPS hops away (last and best head; None if no such pair), AUC."""
  z = summary_lib.read_per_class(run.workdir)
  pair_HxNxN = metrics.pair_accuracies(z.correct_NxHxC, z.count_C, z.primary_NxC)
  far = metrics.hop_distances(topology.build(run.config)) >= FAR_HOPS
  far_H = [100 * float(p[far].mean()) for p in pair_HxNxN] if far.any() else None
  s = summary_lib.read_summary(run.workdir)
  shared_H = 100 * np.asarray(s.mean_shared_acc)
  return {'shared_last': float(shared_H[-1]), 'shared_best': float(shared_H.max()),
          'private': 100 * s.mean_private_acc[0],
          'far_last': far_H and far_H[-1], 'far_best': far_H and max(far_H),
          'auc': metrics.run_auc(run.workdir)}


def recipes(base, opts):
  """The space of choices around MHD on the 10-client chain (one class each).

  One factor at a time around MHD (H=4, nu_main=1, nu_aux=1, T=1,
  most_confident, no include_self, aux_backbone_grad) and naive distillation
  (H=1); the targets neighbours_first / neighbour_and_self differ from
  most_confident only with include_self, so they run with it; three
  combinations. Columns (%): shared accuracy of the last head and of the best
  head, private accuracy of head 0, accuracy on the classes of clients >= 5
  hops away (last and best head), AUC of the last head's shared accuracy over
  steps. ↑ / ↓: beats / trails naive distillation by more than two standard
  errors.
  """
  variants = {f'{t}: {k}': {**v, 'topology': t} for t in opts.topologies
              for k, v in recipe_variants(opts.quick).items()}

  def analyse(summaries, runs):
    del summaries
    results = {name: [_recipe_figures(r) for r in rs] for name, rs in runs.items()}
    results = {name: {k: [f[k] for f in figs] for k in RECIPE_KEYS}
               for name, figs in results.items()}
    return results, _recipe_table(results), lambda p: _plot_recipes(results, p)

  return variants, analyse


def _recipe_table(results: dict) -> str:
  lines = ['| variant | shared (last head) | shared (best head) | private | '
           f'd>={FAR_HOPS} (last head) | d>={FAR_HOPS} (best head) | AUC |', '|---' * 7 + '|']
  for name, figs in results.items():
    t = name.split(':')[0]
    naive = results.get(f'{t}: naive (H=1)')
    cells = []
    for k in RECIPE_KEYS:
      ref = (naive[k] if naive and not name.endswith('naive (H=1)') and None not in naive[k]
             else None)
      cells.append('n/a' if None in figs[k] else tables.cell(figs[k], tables.mark(figs[k], ref)))
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _plot_recipes(results: dict, path: str):
  plt = tables.pyplot()
  names = list(results)
  fig, axes = plt.subplots(1, 3, figsize=(18, 0.3 * len(names) + 2))
  y = np.arange(len(names))
  for ax, key in zip(axes, ('shared_last', 'far_last', 'auc')):
    vals = [[v for v in results[n][key] if v is not None] or [np.nan] for n in names]
    ax.barh(y, [np.mean(v) for v in vals], xerr=[np.std(v) for v in vals], capsize=2)
    ax.set_yticks(y, names if key == 'shared_last' else [''] * len(names), fontsize=7)
    ax.set_xlabel({'shared_last': 'shared acc, last head (%)',
                   'far_last': f'acc on classes >= {FAR_HOPS} hops away, last head (%)',
                   'auc': 'AUC of shared acc over steps (%)'}[key])
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis='x')
  tables.save(plt, fig, path)
