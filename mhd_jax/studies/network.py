"""The `dynamics` study (issue 15): does MHD survive a real network?

Like `claims`, `dynamics(base, opts) -> (variants, analyse)`. Each axis
moves one property of the network away from the paper's setting (a static
graph, every client at every step, live targets) and compares MHD (H=3),
naive distillation (H=1) and gossip averaging (FedAvg) at every point against
that static/full baseline.

FedAvg (gossip averaging every 10 steps, no distillation) runs on every axis
but staleness: its averaging after step s uses step s's graph and participants
(`baselines.make_average`; an inactive client neither sends nor averages, a
failed or unmatched link carries nothing), and staleness lags only
distillation targets, which FedAvg has none of.
"""

import numpy as np

from mhd_jax.studies import methods
from mhd_jax.studies import metrics
from mhd_jax.studies import tables

# 10 clients on a ring at the default skew 0.9 (each client's private data is 90% its
# one primary class): every client has two neighbours and knowledge travels up to 5
# hops, so a failed link, an absent neighbour or an unmatched step cuts what a client
# hears. On the default complete graph of 5 clients a client still keeps
# 4 x 0.4 = 1.6 links at failure p = 0.6 on average, and every owner of a class is one
# hop away: the graph would matter less. Not skew 1.0 (one class only): there gossip
# averaging stays at chance (seed 0, 1200 steps: 9.4% shared, 10.5% averaging every
# step; `launch.py --config.num_clients=10 --config.topology=ring --config.skew=1.0
# --config.num_heads=1 --config.nu_main=0 --config.nu_aux=0 --config.average_every=10`),
# and a FedAvg row at chance compares nothing.
NETWORK = {'num_clients': 10, 'topology': 'ring'}
# Sized so the 66 runs (22 variants x 3 seeds) take about 20 min with --jobs 2 on 2 cores
# (docs/results.md, "Does MHD survive a real network?"); fixed here, not read from the base
# config, so the study is the same whatever --config.num_steps says. 40 evaluations.
STEPS = 1200
BASELINE = 'static, full'
# axis -> {point: overrides}; every axis starts at the baseline.
AXES = {
    'availability p': {'p=0.7': {'dynamics.participation': 'bernoulli',
                                 'dynamics.availability': 0.7},
                       'p=0.4': {'dynamics.participation': 'bernoulli',
                                 'dynamics.availability': 0.4}},
    'link failure p': {'p=0.3': {'dynamics.schedule': 'edge_failure', 'dynamics.failure_p': 0.3},
                       'p=0.6': {'dynamics.schedule': 'edge_failure', 'dynamics.failure_p': 0.6}},
    'staleness tau': {'tau=2': {'dynamics.staleness': 2}, 'tau=8': {'dynamics.staleness': 8}},
    'graph schedule': {'matching': {'dynamics.schedule': 'matching'}},
}
BASELINE_LABEL = {'availability p': 'p=1.0', 'link failure p': 'p=0', 'staleness tau': 'tau=0',
                  'graph schedule': 'static'}
# --quick: the tests' form, one point per axis that draws (staleness needs the lagged step).
QUICK_AXES = {'availability p': ('p=0.4',), 'link failure p': ('p=0.6',),
              'graph schedule': ('matching',)}


# The compared methods (`methods`: the same overrides in every study).
METHODS = {'MHD (H=3)': methods.MHD, 'naive (H=1)': methods.NAIVE,
           'FedAvg (every 10 steps)': methods.FEDAVG}


def axes(quick: bool) -> dict[str, dict[str, dict]]:
  """{axis: {point: overrides}}, the baseline first (label `BASELINE_LABEL`, overrides {})."""
  picked = {a: {p: AXES[a][p] for p in ps} for a, ps in QUICK_AXES.items()} if quick else AXES
  return {a: {BASELINE_LABEL[a]: {}} | points for a, points in picked.items()}


def variant_name(method: str, point: str) -> str:
  """'MHD (H=3): availability p p=0.4': a method at a point ('axis point', or `BASELINE`)."""
  return f'{method}: {point}'


def _points(quick: bool) -> dict[str, dict]:
  """{point name: overrides} over all axes, the baseline once, named 'axis point'."""
  out = {BASELINE: {}}
  for a, points in axes(quick).items():
    out |= {f'{a} {p}': o for p, o in points.items() if o}
  return out


def dynamics(base, opts):
  """MHD, naive distillation and FedAvg on a network that changes, against the static graph.

  10 clients on a ring (skew 0.9: 90% of a client's data from its one class), 1200 steps
  (`NETWORK`, `STEPS`; --quick: the base config's graph and steps).
  Axes, each against the static graph with every client at every step and
  live targets: availability p (bernoulli participation), link failure p
  (edge_failure), staleness tau, a random maximal matching per step (gossip).
  private = mean private accuracy of head 0, shared = mean shared accuracy of
  the last head (%), mean ± std over seeds (ddof=1). ↑ / ↓: beats / trails the
  same method at the baseline by more than two standard errors
  (|Δ| > 2·sqrt(s1²/n1 + s2²/n2)); the last column is MHD − naive on shared
  accuracy, * where it exceeds that noise. FedAvg (gossip averaging over each
  averaging step's graph and participants) has no staleness rows: it distils
  nothing, so there is nothing to lag.
  """
  net = {} if opts.quick else {**NETWORK, 'num_steps': STEPS, 'eval_every': STEPS // 30}
  ms = METHODS
  variants = {variant_name(m, p): {**net, **mo, **po} for m, mo in ms.items()
              for p, po in _points(opts.quick).items()
              if m != 'FedAvg (every 10 steps)' or 'dynamics.staleness' not in po}

  def analyse(summaries, runs):
    del runs
    results = results_of(summaries, axes(opts.quick), list(ms))
    return results, markdown(results), lambda path: plot(results, path)

  return variants, analyse


def _figures(summary_list) -> dict[str, list[float]]:
  """Per seed (%): head 0's mean private and the last head's mean shared accuracy."""
  return {'private': [100 * s.mean_private_acc[0] for s in summary_list],
          'shared': [100 * s.mean_shared_acc[-1] for s in summary_list]}


def results_of(summaries: dict, axes_: dict, method_names) -> dict:
  """{axis: {point: {method: {'private': [per seed], 'shared': [...]}}}}; a method not run
  at a point (FedAvg under staleness) is left out of it."""
  out = {}
  for a, points in axes_.items():
    out[a] = {}
    for p, o in points.items():
      key = f'{a} {p}' if o else BASELINE
      out[a][p] = {m: _figures(summaries[variant_name(m, key)]) for m in method_names
                   if variant_name(m, key) in summaries}
  return out


def markdown(results: dict) -> str:
  """One table per axis; cells marked against the same method at the baseline (first row)."""
  parts = []
  for a, points in results.items():
    base = next(iter(points.values()))
    names = list(base)
    lines = [f'### {a}\n', f'| {a} | ' + ' | '.join(f'{m} private | {m} shared' for m in names)
             + ' | MHD − naive, shared |', '|---' * (2 * len(names) + 2) + '|']
    for p, by_method in points.items():
      cells = []
      for m in names:
        for key in ('private', 'shared'):
          if m not in by_method:
            cells.append('n/a')
            continue
          values, ref = by_method[m][key], None if by_method is base else base[m][key]
          cells.append(tables.cell(values, tables.mark(values, ref)))
      lines.append(f'| {p} | ' + ' | '.join(cells) + f' | {_gap(by_method)} |')
    parts.append('\n'.join(lines))
  return '\n\n'.join(parts) + '\n'


def _gap(by_method: dict) -> str:
  """MHD − naive on shared accuracy (mean over seeds), * beyond the noise."""
  mhd, naive = by_method.get('MHD (H=3)'), by_method.get('naive (H=1)')
  if not mhd or not naive:
    return 'n/a'
  gap = np.mean(mhd['shared']) - np.mean(naive['shared'])
  return f"{gap:+.1f}{' *' if metrics.exceeds_noise(mhd['shared'], naive['shared']) else ''}"


def plot(results: dict, path: str):
  """Shared (top) and private (bottom) accuracy against each axis, one line per method."""
  plt = tables.pyplot()
  fig, axs = plt.subplots(2, len(results), figsize=(4.5 * len(results), 7), squeeze=False)
  for col, (a, points) in enumerate(results.items()):
    x = np.arange(len(points))
    for row, key in enumerate(('shared', 'private')):
      ax = axs[row, col]
      for n, m in enumerate(next(iter(points.values()))):
        xs = [i for i, p in enumerate(points.values()) if m in p]
        vals = [points[p][m][key] for p in points if m in points[p]]
        ax.errorbar(np.asarray(xs) + 0.05 * n, [np.mean(v) for v in vals],
                    yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in vals], marker='o',
                    capsize=3, label=m)
      ax.set_xticks(x, list(points))
      tables.label(ax, a, a, f'mean {key} accuracy (%), '
                + ('last head' if key == 'shared' else 'head 0'))
  tables.save(plt, fig, path)
