"""Target rules on a population of mixed architectures (issue 20): which rules do not collapse it.

Same shape as `head_studies`: `(base, opts) -> (variants, analyse)`, every
variant on every seed, mean ± std over seeds (ddof=1), ↑ / ↓ beyond the noise
(`study_metrics.exceeds_noise`) against `confidence_weighted`.
"""

import numpy as np

from mhd_jax.population import groups as groups_lib
from mhd_jax.studies import tables

REFERENCE = 'confidence_weighted'
# Each variant: a target rule, and for the score rules the power of the score (docs/algorithm.md).
RULES = {
    'most_confident': {'target': 'most_confident'},
    REFERENCE: {'target': 'confidence_weighted'},
    'relative_confidence': {'target': 'relative_confidence'},
    'certainty_weighted': {'target': 'certainty_weighted'},
    'exp_entropy_weighted': {'target': 'exp_entropy_weighted'},
    'class_relative': {'target': 'class_relative'},
    'confidence_weighted, power 8': {'target': 'confidence_weighted', 'target_power': 8.0},
    'certainty_weighted, power 8': {'target': 'certainty_weighted', 'target_power': 8.0},
    'class_relative, power 4': {'target': 'class_relative', 'target_power': 4.0},
    'class_relative, power 8': {'target': 'class_relative', 'target_power': 8.0},
}
QUICK_RULES = (REFERENCE, 'class_relative, power 4')


def _figures(summary, groups) -> dict:
  """One run's figures (%): mean shared accuracy of every head, and per group the mean shared
  accuracy of the last head and the private accuracy of head 0."""
  out = {f'shared head {k}': 100 * float(v) for k, v in enumerate(summary.mean_shared_acc)}
  for name, ids in groups:
    out[f'{name} shared'] = 100 * float(np.mean([summary.clients[i].shared_acc[-1] for i in ids]))
    out[f'{name} private'] = 100 * float(np.mean([summary.clients[i].private_acc[0]
                                                   for i in ids]))
  return out


def targets(base, opts):
  """Target rules on the base config's population (e.g. configs/digits_hetero.py).

  Columns (%): the mean shared accuracy of each head over all clients; per
  group (architecture), the mean shared accuracy of its clients' last head and
  the private accuracy of their head 0. ↑ / ↓: beats / trails
  confidence_weighted beyond the noise (two standard errors).
  """
  rules = QUICK_RULES if opts.quick else tuple(RULES)
  first, groups, legend = 0, [], []
  for name, n, model in groups_lib.group_configs(base):
    groups.append((name, range(first, first + n)))
    legend.append(f'{name} = clients {first}-{first + n - 1} ({model.name}, width '
                  f'{model.width}, depth {model.depth})')
    first += n

  def analyse(summaries, runs):
    del runs
    results = {}
    for rule in rules:
      figs = [_figures(s, groups) for s in summaries[rule]]
      results[rule] = {k: [f[k] for f in figs] for k in figs[0]}
    md = 'Groups: ' + '; '.join(legend) + '.\n\n' + _table(results)
    return results, md, lambda path: _plot(results, path)

  return {r: RULES[r] for r in rules}, analyse


def _table(results: dict) -> str:
  keys = list(next(iter(results.values())))
  ref = results.get(REFERENCE)
  lines = ['| rule | ' + ' | '.join(keys) + ' |', '|---' * (len(keys) + 1) + '|']
  for rule, figs in results.items():
    cells = [tables.cell(figs[k], tables.mark(figs[k], None if rule == REFERENCE or ref is None
                                        else ref[k])) for k in keys]
    lines.append(f'| {rule} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _plot(results: dict, path: str):
  plt = tables.pyplot()
  names = list(results)
  keys = [k for k in next(iter(results.values())) if k.startswith('shared head')]
  fig, ax = plt.subplots(figsize=(10, 0.35 * len(names) + 2))
  y = np.arange(len(names))
  for n, k in enumerate(keys):
    vals = [results[r][k] for r in names]
    ax.errorbar([np.mean(v) for v in vals], y + 0.15 * n, xerr=[np.std(v, ddof=1) if len(v) > 1
                                                                 else 0 for v in vals],
                fmt='o', capsize=2, label=k)
  ax.set_yticks(y, names, fontsize=7)
  ax.invert_yaxis()
  tables.label(ax, 'target rules, mixed architectures', 'mean shared accuracy (%)', '')
  tables.save(plt, fig, path)
