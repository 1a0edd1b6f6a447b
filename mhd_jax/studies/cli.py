"""The paper's studies as commands: `python -m mhd_jax.studies NAME --workdir DIR`.

Each study runs a grid of config variants over several seeds and writes
`DIR/NAME.json` (the numbers behind the table), `DIR/NAME.md` (a table,
mean ± std over seeds) and `DIR/NAME.png` (a plot). Runs go to
`DIR/NAME/<variant>/seed<k>/`; every run's config is checked before any
trains, runs train on `--jobs` worker processes (`study_runs`), and a
finished run is reused, so a stopped study restarts where it was. Every run
evaluates 30 times (eval_every = num_steps / 30) for accuracy over steps.
`--config` picks the base config (default: configs/default.py), so the same
study scales to the ImageNet configs; `--config.FIELD=value` overrides it;
`--quick` is the tests' few-step form.
"""

import inspect
import json
import os
import re
import sys
from typing import Callable

from absl import app
from absl import flags
from absl import logging
import numpy as np
from ml_collections import config_flags

from mhd_jax.network import topology as topology_lib
from mhd_jax.outputs import workdir as wd
from mhd_jax.run import config_check
from mhd_jax.studies import heads as head_studies
from mhd_jax.studies import metrics as study_metrics
from mhd_jax.studies import network as network_studies
from mhd_jax.studies import runs as study_runs
from mhd_jax.studies import targets as target_studies
from mhd_jax.studies import wire as wire_studies

ISOLATED = {'nu_main': 0.0, 'nu_aux': 0.0, 'nu_emb': 0.0, 'num_heads': 1,
            'topology': 'none'}
NAIVE = head_studies.NAIVE
MHD = head_studies.MHD
# Embedding targets follow head 0's mixing; a confidence-weighted mixture averages the
# embeddings of different networks, which collapsed this variant (83.2 +- 3.9 shared, README):
# embeddings are distilled from the single most confident source.
MHD_EMB = {'num_heads': 3, 'nu_emb': 1.0, 'target': 'most_confident'}
FEDAVG = head_studies.FEDAVG  # FedAvg every 10 steps, no distillation
SUPERVISED = head_studies.SUPERVISED  # one model, labels of the union of the private data
# Small and large clients for the `models` study when the base config has no two groups.
SMALL = {'name': 'mlp', 'width': 32, 'depth': 1}
LARGE = {'name': 'mlp', 'width': 256, 'depth': 3}


def headline(summaries: list[wd.Summary], clients=None) -> dict:
  """Mean ± std over seeds of the main-head private and last-head shared accuracy (%).

  `clients`: the client ids to average over (default: all).
  """
  def mean(s, key, head):
    ids = range(s.num_clients) if clients is None else clients
    return 100 * float(np.mean([getattr(s.clients[i], key)[head] for i in ids]))
  private = [mean(s, 'private_acc', 0) for s in summaries]
  shared = [mean(s, 'shared_acc', -1) for s in summaries]
  return {'private_mean': float(np.mean(private)), 'private_std': float(np.std(private)),
          'shared_mean': float(np.mean(shared)), 'shared_std': float(np.std(shared)),
          'private': private, 'shared': shared}


def grid_variants(rows: dict[str, dict], cols: dict[str, dict]) -> dict[str, dict]:
  """Every (row, column) pair of overrides, named 'row__col'."""
  return {f'{r}__{c}': {**ro, **co} for r, ro in rows.items() for c, co in cols.items()}


def grid_results(rows, cols, summaries: dict[str, list[wd.Summary]]) -> dict:
  """{row: {col: headline}} from the summaries of `grid_variants(rows, cols)`."""
  return {r: {c: headline(summaries[f'{r}__{c}']) for c in cols} for r in rows}


def table(results: dict, title: str) -> str:
  """Private and shared accuracy per cell, and the shared AUC over steps where cells hold it."""
  cols = list(next(iter(results.values())))
  auc = all('auc_mean' in cell for row in results.values() for cell in row.values())
  heads = [f'{c} private | {c} shared' + (f' | {c} AUC' if auc else '') for c in cols]
  lines = [f'| {title} | ' + ' | '.join(heads) + ' |',
           '|---' * (1 + (3 if auc else 2) * len(cols)) + '|']
  for r, row in results.items():
    cells = [f"{row[c]['private_mean']:.1f} ± {row[c]['private_std']:.1f} | "
             f"{row[c]['shared_mean']:.1f} ± {row[c]['shared_std']:.1f}"
             + (f" | {row[c]['auc_mean']:.1f} ± {row[c]['auc_std']:.1f}" if auc else '')
             for c in cols]
    lines.append(f'| {r} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot(results: dict, xlabel: str, path: str):
  """Shared and private accuracy per grid row (one line or bar set per column);
  a third panel for transitivity (accuracy vs hops, one line per H)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  grid_results, hops = results['grid'], results.get('transitivity')
  rows = list(grid_results)
  cols = list(grid_results[rows[0]])
  fig, axes = plt.subplots(1, 3 if hops else 2, figsize=(15 if hops else 10, 4))
  x = np.arange(len(rows))
  for ax, key in zip(axes, ('shared', 'private')):
    for n, c in enumerate(cols):
      mean = [grid_results[r][c][f'{key}_mean'] for r in rows]
      std = [grid_results[r][c][f'{key}_std'] for r in rows]
      if len(cols) == 1:
        ax.bar(x, mean, yerr=std, capsize=3)
      else:
        ax.errorbar(x + 0.05 * n, mean, yerr=std, marker='o', capsize=3, label=c)
    ax.set_xticks(x, rows, rotation=20 if len(cols) == 1 else 0, ha='right' if len(cols) == 1
                  else 'center')
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f'mean {key} accuracy (%), ' + ('last head' if key == 'shared' else 'head 0'))
    ax.grid(alpha=0.3)
  if len(cols) > 1:
    axes[0].legend()
  if hops:
    for h, v in hops.items():
      d = np.arange(1, len(v['mean']) + 1)
      axes[2].errorbar(d, v['mean'], yerr=v['std'], marker='o', capsize=3, label=h)
    axes[2].set_xlabel('hops d on the chain')
    axes[2].set_ylabel('accuracy on the classes d hops away (%)')
    axes[2].legend()
    axes[2].grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _grid(rows: dict, cols: dict, xlabel: str, extra_variants=None, extra=None):
  """A study over a rows x columns grid: (variants, analyse) as `head_studies` describes.

  `extra(summaries, runs)` may add (results, markdown) to the grid's.
  """
  variants = grid_variants(rows, cols) | (extra_variants or {})

  def analyse(summaries, runs):
    results = {'grid': grid_results(rows, cols, summaries)}
    for r in rows:
      for c in cols:  # mean over the run of the last head's shared accuracy (%)
        auc = [head_studies.run_auc(run) for run in runs[f'{r}__{c}']]
        results['grid'][r][c] |= {'auc': auc, 'auc_mean': float(np.mean(auc)),
                                  'auc_std': float(np.std(auc))}
    md = grid_markdown(results['grid'], xlabel, len(next(iter(summaries.values()))))
    if extra:
      more, more_md = extra(summaries, runs)
      results |= more
      md += more_md
    return results, md, lambda path: plot(results, xlabel, path)

  return variants, analyse


def grid_markdown(grid_results_: dict, xlabel: str, num_seeds: int) -> str:
  cell = next(iter(next(iter(grid_results_.values())).values()))
  auc = ("; AUC = the last head's mean shared accuracy over the run (area under "
         'accuracy-over-steps / steps, %)') if 'auc_mean' in cell else ''
  return (f'Mean ± std over {num_seeds} seeds; private = mean private accuracy of head 0, '
          f'shared = mean shared accuracy of the last head (%){auc}.\n\n'
          + table(grid_results_, xlabel) + '\n')


def heterogeneity(base, opts):
  """Skew 0, 0.5, 0.9, 1.0: isolated vs naive distillation vs MHD."""
  del base, opts
  rows = {f'skew {s}': {'skew': s} for s in (0.0, 0.5, 0.9, 1.0)}
  cols = {'isolated': ISOLATED, 'naive (H=1)': NAIVE, 'MHD (H=3)': MHD}
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
  per_class = wd.read_per_class(run_dir)
  curves = study_metrics.hop_curves(per_class, topology_lib.chain(len(per_class.primary_NxC)))
  return curves['acc_HxD'][-1 if last_head else 0]


def topology(base, opts):
  """Complete, ring, chain and islands graphs; and transitivity along a chain of 6 clients.

  Transitivity: at skew 1.0 on a chain of 6 clients, the last head's accuracy of
  each client on the classes of the clients d hops away, for H = 1..5.
  """
  del base, opts
  rows = {name: {'topology': name} for name in ('complete', 'ring', 'chain', 'islands')}
  cols = {'naive (H=1)': NAIVE, 'MHD (H=3)': MHD}
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


def models(base, opts):
  """Small-only, large-only and mixed populations (half small, half large clients).

  Columns split the clients by position: the first half (small in the mix) and
  the second half (large in the mix), so every cell compares clients holding
  the same data.
  """
  del opts
  if len(base.get('groups', {})) == 2:
    (_, small), (_, large) = [(k, dict(v.model)) for k, v in base.groups.items()]
  else:
    small, large = SMALL, LARGE
  n = base.num_clients
  half = n // 2
  populations = {'small-only': [(n, small)], 'large-only': [(n, large)],
                 'mixed': [(half, small), (n - half, large)]}
  variants = {name: {'groups': {f'g{g}': {'num_clients': k, 'model': m}
                                for g, (k, m) in enumerate(groups)}}
              for name, groups in populations.items()}

  def analyse(summaries, runs):
    del runs
    results = {'grid': {
        name: {f'clients 0-{half - 1}': headline(summaries[name], range(half)),
               f'clients {half}-{n - 1}': headline(summaries[name], range(half, n))}
        for name in populations}}
    md = grid_markdown(results['grid'], 'population', len(summaries['mixed']))
    return results, md, lambda path: plot(results, 'population', path)

  return variants, analyse


def methods(base, opts):
  """Isolated, naive distillation, MHD, MHD + embedding distillation, FedAvg, supervised."""
  del base, opts
  rows = {'isolated': ISOLATED, 'naive (H=1)': NAIVE, 'MHD (H=3)': MHD,
          'MHD + emb (H=3, most confident)': MHD_EMB, 'FedAvg (every 10 steps)': FEDAVG,
          'supervised upper bound': SUPERVISED}
  return _grid(rows, {'': {}}, 'method')


def hops_table(hops: dict) -> str:
  n = len(next(iter(hops.values()))['mean'])
  lines = ['| heads | ' + ' | '.join(f'd={d}' for d in range(1, n + 1)) + ' |',
           '|---' * (n + 1) + '|']
  for h, v in hops.items():
    lines.append(f'| {h} | ' + ' | '.join(f'{m:.1f} ± {s:.1f}'
                                          for m, s in zip(v['mean'], v['std'])) + ' |')
  return '\n'.join(lines)


STUDIES: dict[str, Callable] = {'heterogeneity': heterogeneity, 'heads': heads,
                                'topology': topology, 'models': models, 'methods': methods,
                                'hops': head_studies.hops, 'efficiency': head_studies.efficiency,
                                'recipes': head_studies.recipes,
                                'dynamics': network_studies.dynamics,
                                'communication': wire_studies.communication,
                                'privacy': wire_studies.privacy,
                                'targets': target_studies.targets}
# Seeds per study when --seeds is not given: sized so the main tables fit in 40 min
# on 2 cores (README, "When do auxiliary heads help?").
DEFAULT_SEEDS = {'hops': 8, 'efficiency': 4, 'recipes': 4}
QUICK = {'num_steps': 30, 'log_every': 10}  # --quick: the tests' form

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Base config.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/studies', 'Where results are written.')
_SEEDS = flags.DEFINE_integer('seeds', None, 'Number of seeds (0..seeds-1) per variant '
                              f'(default: {DEFAULT_SEEDS}, else 3).')
_JOBS = flags.DEFINE_integer('jobs', 1, 'Worker processes training runs at once (one core each).')
_QUICK = flags.DEFINE_bool('quick', False, f'A few steps ({QUICK}) and a small grid.')
_HEADS = flags.DEFINE_list('heads', None, 'hops / efficiency: head counts, e.g. 1,2,4.')
_TOPOLOGIES = flags.DEFINE_list('topologies', ['chain'], 'recipes: graphs, e.g. chain,complete.')


class UsageError(ValueError):
  """A bad study argument: one line, exit status 2, before any training."""


def study_base(base, quick: bool):
  """The base config of every run: eval_every = num_steps / 30 (accuracy over steps)."""
  base = base.copy_and_resolve_references()
  with base.unlocked():
    if quick:
      base.update_from_flattened_dict(QUICK)
    base.eval_every = max(1, base.num_steps // 30)
  return base


def run_dirname(variant: str) -> str:
  """A variant's directory name: 'chain: nu_main=0.1, include_self' -> 'chain_nu_main=0.1_include_self'."""
  return re.sub(r'_+', '_', re.sub(r'[^A-Za-z0-9=.+-]', '_', variant)).strip('_')


def plan(name: str, base, opts: study_runs.Options, workdir: str):
  """(runs by variant, analyse) of study `name`; every run's config checked, nothing trained."""
  if name not in STUDIES:
    raise UsageError(f'unknown study {name!r}; NAME is one of {", ".join(STUDIES)}.')
  if not opts.seeds:
    raise UsageError('--seeds must be >= 1.')
  variants, analyse = STUDIES[name](base, opts)
  runs = {v: study_runs.variant_runs(base, o, opts.seeds, os.path.join(workdir, run_dirname(v)))
          for v, o in variants.items()}
  try:
    study_runs.check([r for rs in runs.values() for r in rs])
  except config_check.ConfigError as e:
    raise UsageError(e.problems[0]) from None
  return runs, analyse


def run_study(name: str, base, opts: study_runs.Options, workdir: str, jobs: int = 1) -> str:
  """Plans, trains (reusing finished runs) and writes DIR/NAME.{json,md,png}; returns the md."""
  base = study_base(base, opts.quick)
  runs, analyse = plan(name, base, opts, os.path.join(workdir, name))
  all_runs = [r for rs in runs.values() for r in rs]
  summaries = study_runs.execute(all_runs, jobs)
  by_variant, i = {}, 0
  for v, rs in runs.items():
    by_variant[v], i = summaries[i:i + len(rs)], i + len(rs)
  results, body, draw = analyse(by_variant, runs)
  doc = inspect.cleandoc(STUDIES[name].__doc__)
  md = f'# {name}\n\n{doc}\n\n{body}\n'
  stem = os.path.join(workdir, name)
  with open(stem + '.json', 'w') as f:
    json.dump(results, f, indent=1)
  with open(stem + '.md', 'w') as f:
    f.write(md)
  draw(stem + '.png')
  return md


def main(argv):
  try:
    if len(argv) != 2:
      raise UsageError(f'usage: python -m mhd_jax.studies NAME --workdir DIR; '
                       f'NAME is one of {", ".join(STUDIES)}.')
    name = argv[1]
    if _JOBS.value < 1:
      raise UsageError(f'--jobs must be >= 1, got {_JOBS.value}.')
    seeds = _SEEDS.value if _SEEDS.value is not None else DEFAULT_SEEDS.get(name, 3)
    try:
      heads_ = tuple(int(h) for h in _HEADS.value) if _HEADS.value else None
    except ValueError:
      raise UsageError(f'--heads must be integers, got {",".join(_HEADS.value)}.') from None
    opts = study_runs.Options(tuple(range(max(seeds, 0))), _QUICK.value, heads_,
                              tuple(_TOPOLOGIES.value))
    logging.set_verbosity(logging.WARNING)
    base = study_base(_CONFIG.value, opts.quick)
    plan(name, base, opts, os.path.join(_WORKDIR.value, name))  # refuse before any training
  except UsageError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  os.makedirs(_WORKDIR.value, exist_ok=True)
  print(run_study(name, _CONFIG.value, opts, _WORKDIR.value, _JOBS.value))

