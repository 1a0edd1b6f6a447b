"""The paper's claims as grids of runs: heterogeneity, heads, topology, models, methods.

Each study is a function `(base, opts) -> (variants, analyse)` (`cli` runs
it): `variants` names the config overrides to run (every seed of each), and
`analyse(summaries, runs)` turns the finished runs into (results for the
JSON, the Markdown body, a function drawing the plot to a path). A grid study
crosses rows of overrides with columns of overrides; each cell holds the
headline accuracies (`tables.headline`) and the AUC of the last head's shared
accuracy over the run.
"""

import numpy as np

from mhd_jax.network import topology as topology_lib
from mhd_jax.outputs import summary as summary_lib
from mhd_jax.studies import methods as methods_lib
from mhd_jax.studies import metrics
from mhd_jax.studies import tables

# Small and large clients for the `models` study when the base config has no two groups.
SMALL = {'name': 'mlp', 'width': 32, 'depth': 1}
LARGE = {'name': 'mlp', 'width': 256, 'depth': 3}


def grid_variants(rows: dict[str, dict], cols: dict[str, dict]) -> dict[str, dict]:
  """Every (row, column) pair of overrides, named 'row__col'."""
  return {f'{r}__{c}': {**ro, **co} for r, ro in rows.items() for c, co in cols.items()}


def grid_results(rows, cols, summaries: dict[str, list[summary_lib.Summary]]) -> dict:
  """{row: {col: headline}} from the summaries of `grid_variants(rows, cols)`."""
  return {r: {c: tables.headline(summaries[f'{r}__{c}']) for c in cols} for r in rows}


def _grid(rows: dict, cols: dict, xlabel: str, extra_variants=None, extra=None):
  """A study over a rows x columns grid: (variants, analyse) as the module doc describes.

  `extra(summaries, runs)` may add (results, markdown) to the grid's.
  """
  variants = grid_variants(rows, cols) | (extra_variants or {})

  def analyse(summaries, runs):
    results = {'grid': grid_results(rows, cols, summaries)}
    for r in rows:
      for c in cols:  # mean over the run of the last head's shared accuracy (%)
        auc = [metrics.run_auc(run.workdir) for run in runs[f'{r}__{c}']]
        results['grid'][r][c] |= {'auc': auc, 'auc_mean': float(np.mean(auc)),
                                  'auc_std': float(np.std(auc))}
    md = tables.grid_markdown(results['grid'], xlabel, len(next(iter(summaries.values()))))
    if extra:
      more, more_md = extra(summaries, runs)
      results |= more
      md += more_md
    return results, md, lambda path: tables.plot(results, xlabel, path)

  return variants, analyse


def heterogeneity(base, opts):
  """Skew 0, 0.5, 0.9, 1.0: isolated vs naive distillation vs MHD."""
  del base, opts
  rows = {f'skew {s}': {'skew': s} for s in (0.0, 0.5, 0.9, 1.0)}
  cols = {'isolated': methods_lib.ISOLATED, 'naive (H=1)': methods_lib.NAIVE,
          'MHD (H=3)': methods_lib.MHD}
  return _grid(rows, cols, 'data skew')


def heads(base, opts):
  """H = 1..5 at skew 1.0 (disjoint classes), on a complete graph and on a chain."""
  del base, opts
  rows = {f'H={h}': {'num_heads': h, 'skew': 1.0} for h in range(1, 6)}
  cols = {'complete': {'topology': 'complete'}, 'chain': {'topology': 'chain'}}
  return _grid(rows, cols, 'heads')


def chain_hops(run_dir: str, last_head: bool = True) -> np.ndarray:
  """[N-1] accuracy (%) of client i on the primary classes of clients d hops away, d = 1..N-1.

  Averaged over the ordered pairs (i, j) with |i - j| = d on the chain 0 - 1 - ... - (N-1).
  """
  per_class = summary_lib.read_per_class(run_dir)
  curves = metrics.hop_curves(per_class, topology_lib.chain(len(per_class.primary_NxC)))
  return curves['acc_HxD'][-1 if last_head else 0]


def topology(base, opts):
  """Complete, ring, chain and islands graphs; and transitivity along a chain of 6 clients.

  Transitivity: at skew 1.0 on a chain of 6 clients, the last head's accuracy of
  each client on the classes of the clients d hops away, for H = 1..5.
  """
  del base, opts
  rows = {name: {'topology': name} for name in ('complete', 'ring', 'chain', 'islands')}
  cols = {'naive (H=1)': methods_lib.NAIVE, 'MHD (H=3)': methods_lib.MHD}
  chains = {f'transitivity_H{h}': {'num_heads': h, 'topology': 'chain', 'num_clients': 6,
                                   'skew': 1.0} for h in range(1, 6)}

  def transitivity(summaries, runs):
    del summaries
    hops = {}
    for h in range(1, 6):
      per_seed = np.stack([chain_hops(r.workdir) for r in runs[f'transitivity_H{h}']])
      hops[f'H={h}'] = {'mean': per_seed.mean(0).tolist(), 'std': per_seed.std(0).tolist()}
    return {'transitivity': hops}, (
        '\n## Transitivity\n\nAccuracy (%) of the last head of each client on the '
        'classes of the clients d hops away on the chain:\n\n' + hops_table(hops) + '\n')

  return _grid(rows, cols, 'topology', chains, transitivity)


def hops_table(hops: dict) -> str:
  n = len(next(iter(hops.values()))['mean'])
  lines = ['| heads | ' + ' | '.join(f'd={d}' for d in range(1, n + 1)) + ' |',
           '|---' * (n + 1) + '|']
  for h, v in hops.items():
    lines.append(f'| {h} | ' + ' | '.join(f'{m:.1f} ± {s:.1f}'
                                          for m, s in zip(v['mean'], v['std'])) + ' |')
  return '\n'.join(lines)


def models(base, opts):
  """Populations of one architecture, of two (half each), and one client of the stronger among
  the weaker.

  The architectures: the base config's two groups (the first in client order taken as the
  stronger: 'cnn' before 'mlp' in mnist1d_hetero.py, 'large' before 'small' in
  digits_hetero.py), else a large and a small MLP. Columns split the clients by position:
  the first half (the weaker in the mix) and the second half (the stronger), so every cell
  compares clients holding the same data. The paper's claim 5, three ways (↑ / ↓: beyond the
  noise): the weaker clients of the mix against the weaker-only population, the stronger ones
  against the stronger-only population, and, in a population of N - 1 weaker clients and one
  stronger one (the last client), that client against the best weaker client of the same run
  (the last head's shared accuracy).
  """
  del opts
  if len(base.get('groups', {})) == 2:
    (strong, strong_model), (weak, weak_model) = [
        (k, dict(v.model)) for k, v in base.groups.items()]
  else:
    (strong, strong_model), (weak, weak_model) = ('large', LARGE), ('small', SMALL)
  n = base.num_clients
  half = n // 2
  first, second = f'clients 0-{half - 1}', f'clients {half}-{n - 1}'
  lone_name = f'one {strong} among {weak}'
  populations = {f'{weak}-only': [(n, weak_model)], f'{strong}-only': [(n, strong_model)],
                 'mixed': [(half, weak_model), (n - half, strong_model)],
                 lone_name: [(n - 1, weak_model), (1, strong_model)]}
  variants = {name: {'groups': {f'g{g}': {'num_clients': k, 'model': m}
                                for g, (k, m) in enumerate(groups)}}
              for name, groups in populations.items()}
  grid = (f'{weak}-only', f'{strong}-only', 'mixed')

  def analyse(summaries, runs):
    del runs
    results = {'grid': {
        name: {first: tables.headline(summaries[name], range(half)),
               second: tables.headline(summaries[name], range(half, n))}
        for name in grid}}
    shared = lambda s, ids: [100 * s.clients[i].shared_acc[-1] for i in ids]
    g = results['grid']
    results['claim5'] = {
        f'{weak} in the mix': g['mixed'][first]['shared'],
        f'{weak} alone': g[f'{weak}-only'][first]['shared'],
        f'{strong} in the mix': g['mixed'][second]['shared'],
        f'{strong} alone': g[f'{strong}-only'][second]['shared'],
        f'the {strong} client': [shared(s, [n - 1])[0] for s in summaries[lone_name]],
        f'the best {weak} client': [max(shared(s, range(n - 1))) for s in summaries[lone_name]]}
    rows = [(f'{weak} clients: mixed vs {weak}-only', f'{weak} in the mix', f'{weak} alone'),
            (f'{strong} clients: mixed vs {strong}-only', f'{strong} in the mix',
             f'{strong} alone'),
            (f'{lone_name}: the {strong} client vs the best {weak} one', f'the {strong} client',
             f'the best {weak} client')]
    md = tables.grid_markdown(g, 'population', len(summaries['mixed']))
    return results, md + claim5_markdown(results['claim5'], rows), lambda path: tables.plot(
        {'grid': g}, 'population', path)

  return variants, analyse


def claim5_markdown(c: dict, rows) -> str:
  """The comparisons of claim 5 (rows of (what, this, against) keys of `c`), mean ± std of the
  last head's shared accuracy (%)."""
  lines = ['\n## Claim 5\n', '| comparison | this | against |', '|---|---|---|']
  for what, a, b in rows:
    lines.append(f'| {what} | {tables.cell(c[a], tables.mark(c[a], c[b]))} | '
                 f'{tables.cell(c[b])} |')
  return '\n'.join(lines) + '\n\n↑ / ↓: beyond the noise (more than two standard errors).\n'


def methods(base, opts):
  """Isolated, naive distillation, MHD, MHD + embedding distillation, FedAvg, supervised."""
  del base, opts
  rows = {'isolated': methods_lib.ISOLATED, 'naive (H=1)': methods_lib.NAIVE,
          'MHD (H=3)': methods_lib.MHD, 'MHD + emb (H=3, most confident)': methods_lib.MHD_EMB,
          'FedAvg (every 10 steps)': methods_lib.FEDAVG,
          'supervised upper bound': methods_lib.SUPERVISED}
  return _grid(rows, {'': {}}, 'method')
