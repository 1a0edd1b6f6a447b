"""Studies of when the auxiliary heads help (issue 10): hops, efficiency, recipes.

Each study is a function `(base, opts) -> (variants, analyse)`: `variants`
names the config overrides to run (every seed of each), and
`analyse(summaries, runs)` turns the finished runs into (results for the
JSON, the Markdown body, a function drawing the plot to a path). Means ± std
are over seeds (std with ddof=1); a difference is marked as beyond the noise
by `study_metrics.exceeds_noise` (more than two standard errors).
"""


import numpy as np

from mhd_jax.network import topology
from mhd_jax.outputs import summary as summary_lib
from mhd_jax.outputs import workdir as wd
from mhd_jax.studies import metrics as sm

# One model trained with labels on the union of the private data.
SUPERVISED = {'nu_main': 0.0, 'nu_aux': 0.0, 'nu_emb': 0.0, 'num_heads': 1, 'num_clients': 1,
              'topology': 'none'}
# The methods the studies compare (studies.py and network_studies.py read them from here).
NAIVE = {'num_heads': 1}
MHD = {'num_heads': 3}
# The FedAvg baseline: weights averaged every 10 steps, no distillation.
FEDAVG = {'nu_main': 0.0, 'nu_aux': 0.0, 'nu_emb': 0.0, 'num_heads': 1, 'average_every': 10}
# The issue's harsh setting: 10 clients, one class each.
ONE_CLASS_EACH = {'num_clients': 10, 'skew': 1.0}
FAR_HOPS = 5  # "far" = d >= 5 on the 10-client chain


def _stats(values) -> tuple[float, float]:
  v = np.asarray([x for x in values if x is not None], float)
  if not v.size:
    return float('nan'), float('nan')
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _cell(values, mark: str = '') -> str:
  """'mean ± std' over seeds; '(r/S)' when only r of S seeds reached it, 'never' for none."""
  reached = [x for x in values if x is not None]
  if not reached:
    return 'never'
  m, s = _stats(reached)
  more = f' ({len(reached)}/{len(values)})' if len(reached) < len(values) else ''
  return f'{m:.1f} ± {s:.1f}{mark}{more}'


def _mark(values, reference, lower_is_better: bool = False) -> str:
  """' ↑' / ' ↓' where `values` beat / trail `reference` beyond the noise, else ''."""
  if reference is None or not sm.exceeds_noise(values, reference):
    return ''
  return ' ↑' if (np.mean(values) > np.mean(reference)) != lower_is_better else ' ↓'


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _label(ax, title, xlabel, ylabel):
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


def _save(plt, fig, path):
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


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
        per_seed = [sm.load_hop_curves(r.workdir, topology.build(r.config))
                    for r in runs[f'{t}_H{h}']]
        acc = np.stack([c['acc_HxD'] for c in per_seed])  # [S, H, D]
        results[t][f'H={h}'] = {'d': per_seed[0]['d'], 'pairs': per_seed[0]['pairs_D'],
                                'per_seed': acc.tolist()}
      md.append(_hops_table(t, results[t], heads))
    return results, '\n\n'.join(md), lambda path: _plot_hops(results, path)

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
      cells = [_cell(acc[:, k, d], _mark(acc[:, k, d], None if h == 1 else naive[:, d]))
               for d in range(acc.shape[2])]
      lines.append(f'| {h} | {k} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _plot_hops(results: dict, path: str):
  plt = _pyplot()
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
      _label(ax, f'{t}, {h}', 'hops d', 'accuracy on classes d hops away (%)')
  _save(plt, fig, path)


# ------------------------------------------------------------ efficiency


EFFICIENCY_KEYS = ('final', 'auc', 'steps_90_own', 'steps_95_own', 'steps_90_bound',
                   'steps_95_bound')


def _efficiency_per_seed(runs, bound_final) -> dict[str, list]:
  figures = []
  for r in runs:
    steps, acc = sm.accuracy_curve(wd.read_metrics(r.workdir))
    figures.append(sm.efficiency(steps, acc, bound_final) | {'curve': acc.tolist(),
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
  variants = {'supervised': SUPERVISED}
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
  lines = [f"Supervised bound: final {_cell(results['supervised']['final'])}, "
           f"AUC {_cell(results['supervised']['auc'])}.\n",
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
        cells.append(_cell(f[key], _mark(f[key], ref, lower_is_better=key.startswith('steps'))))
      lines.append(f'| {name} | {h} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _plot_efficiency(results: dict, path: str):
  plt = _pyplot()
  settings = results['settings']
  fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 4), squeeze=False)
  sup = results['supervised']
  for ax, (name, by_h) in zip(axes[0], settings.items()):
    ax.plot(sup['steps'][0], np.mean(sup['curve'], 0), 'k--', label='supervised')
    for h, f in by_h.items():
      ax.plot(f['steps'][0], np.mean(f['curve'], 0), label=h)
    _label(ax, name, 'step', 'shared accuracy, last head (%)')
  _save(plt, fig, path)


# --------------------------------------------------------------- recipes


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
    one = {k: one[k] for k in ('naive (H=1)', 'MHD (H=4)', 'include_self, target=neighbour_and_self')}
  return {k: {**ONE_CLASS_EACH, **centre, **v} for k, v in one.items()}


RECIPE_KEYS = ('shared_last', 'shared_best', 'private', 'far_last', 'far_best', 'auc')


def _recipe_figures(run) -> dict:
  """One run's figures (%): shared acc of the last and best head, private acc of head 0,
  accuracy on classes >= FAR_HOPS hops away (last and best head; None if no such pair), AUC."""
  z = summary_lib.read_per_class(run.workdir)
  pair_HxNxN = sm.pair_accuracies(z.correct_NxHxC, z.count_C, z.primary_NxC)
  far = sm.hop_distances(topology.build(run.config)) >= FAR_HOPS
  far_H = [100 * float(p[far].mean()) for p in pair_HxNxN] if far.any() else None
  s = summary_lib.read_summary(run.workdir)
  shared_H = 100 * np.asarray(s.mean_shared_acc)
  return {'shared_last': float(shared_H[-1]), 'shared_best': float(shared_H.max()),
          'private': 100 * s.mean_private_acc[0],
          'far_last': far_H and far_H[-1], 'far_best': far_H and max(far_H),
          'auc': run_auc(run)}


def run_auc(run) -> float:
  """A run's AUC (%): `study_metrics.efficiency` of its last head's shared accuracy."""
  curve = sm.accuracy_curve(wd.read_metrics(run.workdir))
  return sm.efficiency(*curve)['auc']


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
      ref = naive[k] if naive and not name.endswith('naive (H=1)') and None not in naive[k] else None
      cells.append('n/a' if None in figs[k] else _cell(figs[k], _mark(figs[k], ref)))
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _plot_recipes(results: dict, path: str):
  plt = _pyplot()
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
  _save(plt, fig, path)
