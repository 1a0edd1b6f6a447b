"""Target rules on a population of mixed architectures (issue 20): which rules do not collapse it.

Same shape as the other studies (`heads`): `(base, opts) -> (variants, analyse)`,
every variant on every seed, mean ± std over seeds (ddof=1), marks beyond the
noise (`metrics.exceeds_noise`) against `confidence_weighted`.
"""

import numpy as np

from mhd_jax.network import topology
from mhd_jax.population import groups as groups_lib
from mhd_jax.studies import heads
from mhd_jax.studies import metrics
from mhd_jax.studies import tables

# Each variant: a target rule and, for the score rules, the power of the score (name^g: power g;
# docs/algorithm.md). Both are set, so a base config's own target_power never leaks in.
RULES = {f'{rule}^{power:g}' if power != 1 else rule: {'target': rule, 'target_power': power}
         for rule, power in (('most_confident', 1.0), ('confidence_weighted', 1.0),
                             ('relative_confidence', 1.0), ('certainty_weighted', 1.0),
                             ('exp_entropy_weighted', 1.0), ('class_relative', 1.0),
                             ('confidence_weighted', 8.0), ('certainty_weighted', 8.0),
                             ('class_relative', 4.0), ('class_relative', 8.0))}
REFERENCE = 'confidence_weighted'
QUICK_RULES = (REFERENCE, 'class_relative^4')
# The rules target_hops compares on homogeneous populations by default (--rules: others).
HOP_RULES = (REFERENCE, 'class_relative^4')


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
  rules = opts.rules or (QUICK_RULES if opts.quick else tuple(RULES))
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
    against = lambda k: None if rule == REFERENCE or ref is None else ref[k]
    cells = [tables.cell(figs[k], tables.mark(figs[k], against(k))) for k in keys]
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


def target_hops(base, opts):
  """The hop curves of `hops` (10 clients, one class each, chain and ring) under
  confidence_weighted and the rules of --rules (default HOP_RULES): does a rule keep
  confidence_weighted's homogeneous results?

  Cell (rule, graph, H, d): mean ± std over seeds of the accuracy (%) of each
  client's last head on the classes of the clients d hops away; private =
  head 0's, shared = the last head's mean accuracy (%). ↑ / ↓: beats / trails
  the same rule's H=1 beyond the noise; (+) / (−): beats / trails
  confidence_weighted's same cell beyond the noise.
  """
  head_counts = opts.heads or ((1, 2) if opts.quick else (1, 2, 4))
  rules = (REFERENCE,) + tuple(r for r in opts.rules or HOP_RULES if r != REFERENCE)
  variants = {f'{r}: {t}_H{h}': {**heads.ONE_CLASS_EACH, **RULES[r], 'topology': t,
                                 'num_heads': h}
              for r in rules for t in ('chain', 'ring') for h in head_counts}

  def analyse(summaries, runs):
    results = {}
    for name, rs in runs.items():
      curves = [metrics.load_hop_curves(r.workdir, topology.build(r.config)) for r in rs]
      results[name] = {'d': curves[0]['d'],
                       'last_head': [c['acc_HxD'][-1].tolist() for c in curves],
                       'private': [100 * s.mean_private_acc[0] for s in summaries[name]],
                       'shared': [100 * s.mean_shared_acc[-1] for s in summaries[name]]}
    md = '\n\n'.join(_hops_table(results, t, rules, head_counts) for t in ('chain', 'ring'))
    return results, md, lambda path: _plot_hops(results, rules, head_counts, path)

  return variants, analyse


_VS_REFERENCE = {' ↑': ' (+)', ' ↓': ' (−)', '': ''}  # the mark against confidence_weighted


def _hops_table(results: dict, graph: str, rules, head_counts) -> str:
  ds = results[f'{REFERENCE}: {graph}_H{head_counts[0]}']['d']
  lines = [f'### {graph}\n', '| rule | H | ' + ' | '.join(f'd={d}' for d in ds)
           + ' | private | shared |', '|---' * (len(ds) + 4) + '|']
  for rule in rules:
    for h in head_counts:
      v, naive = results[f'{rule}: {graph}_H{h}'], results[f'{rule}: {graph}_H{head_counts[0]}']
      ref = results[f'{REFERENCE}: {graph}_H{h}']
      columns = [tuple(np.asarray(x['last_head'])[:, d] for x in (v, naive, ref))
                 for d in range(len(ds))]
      columns += [(v[k], naive[k], ref[k]) for k in ('private', 'shared')]
      cells = []
      for values, by_h1, by_ref in columns:
        vs_ref = '' if rule == REFERENCE else tables.mark(values, by_ref)
        vs_h1 = tables.mark(values, None if h == head_counts[0] else by_h1)
        cells.append(tables.cell(values, vs_h1) + _VS_REFERENCE[vs_ref])
      lines.append(f'| {rule} | {h} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _plot_hops(results: dict, rules, head_counts, path: str):
  plt = tables.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, graph in zip(axes, ('chain', 'ring')):
    for rule in rules:
      for h in head_counts:
        v = results[f'{rule}: {graph}_H{h}']
        acc = np.asarray(v['last_head'])
        ax.errorbar(v['d'], acc.mean(0), yerr=acc.std(0), marker='o', capsize=2,
                    ls='-' if rule == REFERENCE else '--', label=f'{rule}, H={h}')
    tables.label(ax, graph, 'hops d', 'last head, classes d hops away (%)')
  tables.save(plt, fig, path)
