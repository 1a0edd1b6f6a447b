"""Studies of when the auxiliary heads help (issue 10): hops and efficiency (recipes: `recipes`).

Each study is a function `(base, opts) -> (variants, analyse)`, as in
`claims`. Means ± std are over seeds (std with ddof=1); a difference is marked
as beyond the noise by `tables.mark` (more than two standard errors).
"""

import numpy as np

from mhd_jax.network import topology
from mhd_jax.outputs import workdir as wd
from mhd_jax.studies import methods
from mhd_jax.studies import metrics
from mhd_jax.studies import tables

# The harsh setting: 10 clients, one class each.
ONE_CLASS_EACH = {'num_clients': 10, 'skew': 1.0}


# ------------------------------------------------------------------ hops


def hops(base, opts):
  """Every head's accuracy against hop distance, on a chain and a ring of 10 clients.

  10 clients owning one class each (skew 1.0); H heads (`--heads`, default
  1, 2, 4). Cell (H, head k, d): mean ± std over seeds of the accuracy (%) of
  client i's head k on the classes of the clients j at distance d, averaged
  over the ordered pairs (i, j) at that distance. ↑ / ↓: beats / trails
  naive distillation (H=1, head 0) at the same d by more than two standard
  errors.
  """
  heads = opts.heads or ((1, 2) if opts.quick else (1, 2, 4))
  variants = {f'{t}_H{h}': {**ONE_CLASS_EACH, 'topology': t, 'num_heads': h}
              for t in ('chain', 'ring') for h in heads}

  def analyse(summaries, runs):
    del summaries
    results, md = {}, []
    for t in ('chain', 'ring'):
      results[t] = {}
      for h in heads:
        per_seed = [metrics.load_hop_curves(r.workdir, topology.build(r.config))
                    for r in runs[f'{t}_H{h}']]
        acc = np.stack([c['acc_HxD'] for c in per_seed])  # [S, H, D]
        results[t][f'H={h}'] = {'d': per_seed[0]['d'], 'pairs': per_seed[0]['pairs_D'],
                                'per_seed': acc.tolist()}
      md.append(_hops_table(t, results[t], heads))
    results['speed'] = {v: _speed(rs) for v, rs in runs.items()}
    md.append(_speed_table(results['speed'], heads))
    return results, '\n\n'.join(md), lambda path: _plot_hops(
        {t: results[t] for t in ('chain', 'ring')}, path)

  return variants, analyse


def _hops_table(name: str, curves: dict, heads) -> str:
  first = next(iter(curves.values()))
  naive = np.asarray(curves['H=1']['per_seed'])[:, 0] if 'H=1' in curves else None
  lines = [f'### {name}\n', '| H | head | ' + ' | '.join(f'd={d}' for d in first['d']) + ' |',
           '|---' * (len(first['d']) + 2) + '|',
           '| | pairs | ' + ' | '.join(str(p) for p in first['pairs']) + ' |']
  for h in heads:
    acc = np.asarray(curves[f'H={h}']['per_seed'])
    for k in range(h):
      cells = [tables.cell(acc[:, k, d],
                           tables.mark(acc[:, k, d], None if h == 1 else naive[:, d]))
               for d in range(acc.shape[2])]
      lines.append(f'| {h} | {k} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _speed(runs) -> dict[str, list]:
  """Per seed: head 0's and the last head's final shared accuracy, the last head's AUC and steps
  to 95% of its own final accuracy (`metrics.efficiency`)."""
  out = {'head0': [], 'last': [], 'auc': [], 'steps_95_own': []}
  for r in runs:
    records = wd.read_metrics(r.workdir)
    e = metrics.efficiency(*metrics.accuracy_curve(records))
    head0 = metrics.accuracy_curve(records, head=0)[1][-1]
    for k, v in (('head0', float(head0)), ('last', e['final']), ('auc', e['auc']),
                 ('steps_95_own', e['steps_95_own'])):
      out[k].append(v)
  return out


def _speed_table(speed: dict, heads) -> str:
  """Final shared accuracy and speed per graph and H, marked against H = 1 on the same graph."""
  lines = ['### final shared accuracy and speed\n',
           '| graph | H | shared, head 0 | shared, last head | AUC (last head) | '
           'steps to 95% of own final |', '|---|---|---|---|---|---|']
  for t in ('chain', 'ring'):
    ref = speed.get(f'{t}_H1')
    for h in heads:
      row = speed[f'{t}_H{h}']
      mark = lambda k, low=False: '' if h == 1 or ref is None else tables.mark(row[k], ref[k], low)
      lines.append(f'| {t} | {h} | ' + ' | '.join(
          tables.cell(row[k], mark(k, k == 'steps_95_own'))
          for k in ('head0', 'last', 'auc', 'steps_95_own')) + ' |')
  return '\n'.join(lines) + '\n\nSteps: fewer is ↑.'


def _plot_hops(results: dict, path: str):
  plt = tables.pyplot()
  cols = max(len(v) for v in results.values())
  fig, axes = plt.subplots(len(results), cols, figsize=(4.5 * cols, 3.5 * len(results)),
                           squeeze=False)
  for row, (t, curves) in enumerate(results.items()):
    for col, (h, v) in enumerate(curves.items()):
      ax, acc = axes[row, col], np.asarray(v['per_seed'])
      for k in range(acc.shape[1]):
        ax.errorbar(v['d'], acc[:, k].mean(0), yerr=acc[:, k].std(0), marker='o', capsize=3,
                    label=f'head {k}')
      ax.set_xticks(v['d'])
      tables.label(ax, f'{t}, {h}', 'hops d', 'accuracy on classes d hops away (%)')
  tables.save(plt, fig, path)


# ------------------------------------------------------------ efficiency


EFFICIENCY_KEYS = ('final', 'auc', 'steps_90_own', 'steps_95_own', 'steps_90_bound',
                   'steps_95_bound')


def _efficiency_per_seed(runs, bound_final) -> dict[str, list]:
  figures = []
  for r in runs:
    steps, acc = metrics.accuracy_curve(wd.read_metrics(r.workdir))
    figures.append(metrics.efficiency(steps, acc, bound_final) | {'curve': acc.tolist(),
                                                                  'steps': steps.tolist()})
  return {k: [f[k] for f in figures] for k in figures[0]}


def efficiency(base, opts):
  """How fast the clients learn: H=1 against H=2..5 at skew 0.9 and 1.0, complete graph and chain.

  Accuracy = mean over clients of the last head's shared accuracy (%), read
  at every evaluation (eval_every = num_steps / 30). final: at the last step;
  steps to 90% / 95% of the run's own final value and of the supervised
  bound's final value (mean over seeds), '(r/S)' when only r of S seeds get
  there; AUC: area under accuracy-over-steps / evaluated span (the mean
  accuracy over the run, %). ↑ / ↓: beats / trails H=1 of the same setting by
  more than two standard errors (for steps, beating = fewer steps).
  """
  heads = opts.heads or ((1, 2) if opts.quick else (1, 2, 3, 4, 5))
  settings = {f'skew {s}, {t}': {'skew': s, 'topology': t}
              for s in ((1.0,) if opts.quick else (0.9, 1.0))
              for t in (('chain',) if opts.quick else ('complete', 'chain'))}
  variants = {'supervised': methods.SUPERVISED}
  variants |= {f'{name}, H={h}': {**o, 'num_heads': h} for name, o in settings.items()
               for h in heads}

  def analyse(summaries, runs):
    del summaries
    bound = _efficiency_per_seed(runs['supervised'], None)
    bound_final = float(np.mean(bound['final']))
    results = {'supervised': bound, 'bound_final': bound_final, 'settings': {}}
    for name in settings:
      results['settings'][name] = {f'H={h}': _efficiency_per_seed(runs[f'{name}, H={h}'],
                                                                  bound_final) for h in heads}
    return results, _efficiency_table(results, heads), lambda p: _plot_efficiency(results, p)

  return variants, analyse


def _efficiency_table(results: dict, heads) -> str:
  lines = [f"Supervised bound: final {tables.cell(results['supervised']['final'])}, "
           f"AUC {tables.cell(results['supervised']['auc'])}.\n",
           '| setting | H | final | AUC | steps to 90% own | 95% own | 90% bound | 95% bound |',
           '|---' * 8 + '|']
  for name, by_h in results['settings'].items():
    naive = by_h.get('H=1')
    for h in heads:
      f = by_h[f'H={h}']
      cells = []
      for key in EFFICIENCY_KEYS:
        # Fewer steps is better; only figures every seed reached are compared.
        ref = None if h == 1 or None in f[key] or None in naive[key] else naive[key]
        steps = key.startswith('steps')
        cells.append(tables.cell(f[key], tables.mark(f[key], ref, lower_is_better=steps)))
      lines.append(f'| {name} | {h} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _plot_efficiency(results: dict, path: str):
  plt = tables.pyplot()
  settings = results['settings']
  fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 4), squeeze=False)
  sup = results['supervised']
  for ax, (name, by_h) in zip(axes[0], settings.items()):
    ax.plot(sup['steps'][0], np.mean(sup['curve'], 0), 'k--', label='supervised')
    for h, f in by_h.items():
      ax.plot(f['steps'][0], np.mean(f['curve'], 0), label=h)
    tables.label(ax, name, 'step', 'shared accuracy, last head (%)')
  tables.save(plt, fig, path)
