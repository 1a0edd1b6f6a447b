"""The paper's studies as commands: `python -m mhd_jax.studies NAME --workdir DIR`.

Each study runs a grid of config variants over several seeds, in this
process, and writes `DIR/NAME.json` (every run's summary numbers),
`DIR/NAME.md` (a table, mean ± std over seeds) and `DIR/NAME.png` (a plot).
Runs go to `DIR/NAME/<variant>/seed<k>/`. `--config` picks the base config
(default: configs/default.py), so the same study scales to the ImageNet
configs; `--config.FIELD=value` overrides it.
"""

import inspect
import json
import os
from typing import Callable

from absl import app
from absl import flags
from absl import logging
import numpy as np
from ml_collections import config_flags

from mhd_jax import train

ISOLATED = {'nu_main': 0.0, 'nu_aux': 0.0, 'nu_emb': 0.0, 'num_heads': 1,
            'topology': 'none'}
NAIVE = {'num_heads': 1}
MHD = {'num_heads': 3}
MHD_EMB = {'num_heads': 3, 'nu_emb': 1.0}
FEDAVG = {'nu_main': 0.0, 'nu_aux': 0.0, 'nu_emb': 0.0, 'num_heads': 1, 'average_every': 10}
# One model trained with labels on the union of the private data.
SUPERVISED = {'nu_main': 0.0, 'nu_aux': 0.0, 'nu_emb': 0.0, 'num_heads': 1, 'num_clients': 1,
              'topology': 'none'}
# Small and large clients for the `models` study when the base config has no two groups.
SMALL = {'name': 'mlp', 'width': 32, 'depth': 1}
LARGE = {'name': 'mlp', 'width': 256, 'depth': 3}


def run_variant(base, overrides: dict, seeds, workdir: str) -> list[dict]:
  """Runs one variant for every seed; returns the summaries."""
  out = []
  for seed in seeds:
    config = base.copy_and_resolve_references()
    with config.unlocked():
      config.update_from_flattened_dict({**overrides, 'seed': seed})
    out.append(train.train_and_evaluate(config, os.path.join(workdir, f'seed{seed}')))
  return out


def headline(summaries: list[dict], clients=None) -> dict:
  """Mean ± std over seeds of the main-head private and last-head shared accuracy (%).

  `clients`: the client ids to average over (default: all).
  """
  def mean(s, key, head):
    ids = range(s['num_clients']) if clients is None else clients
    return 100 * float(np.mean([s['clients'][i][key][head] for i in ids]))
  private = [mean(s, 'private_acc', 0) for s in summaries]
  shared = [mean(s, 'shared_acc', -1) for s in summaries]
  return {'private_mean': float(np.mean(private)), 'private_std': float(np.std(private)),
          'shared_mean': float(np.mean(shared)), 'shared_std': float(np.std(shared)),
          'private': private, 'shared': shared}


def grid(base, rows: dict[str, dict], cols: dict[str, dict], seeds, workdir) -> dict:
  """Runs every (row, column) pair of overrides; returns {row: {col: headline}}."""
  return {r: {c: headline(run_variant(base, {**ro, **co}, seeds,
                                      os.path.join(workdir, f'{r}__{c}')))
              for c, co in cols.items()}
          for r, ro in rows.items()}


def table(results: dict, title: str) -> str:
  cols = list(next(iter(results.values())))
  lines = [f'| {title} | ' + ' | '.join(f'{c} private | {c} shared' for c in cols) + ' |',
           '|---' * (1 + 2 * len(cols)) + '|']
  for r, row in results.items():
    cells = [f"{row[c]['private_mean']:.1f} ± {row[c]['private_std']:.1f} | "
             f"{row[c]['shared_mean']:.1f} ± {row[c]['shared_std']:.1f}" for c in cols]
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


def heterogeneity(base, seeds, workdir):
  """Skew 0, 0.5, 0.9, 1.0: isolated vs naive distillation vs MHD."""
  rows = {f'skew {s}': {'skew': s} for s in (0.0, 0.5, 0.9, 1.0)}
  cols = {'isolated': ISOLATED, 'naive (H=1)': NAIVE, 'MHD (H=3)': MHD}
  return {'grid': grid(base, rows, cols, seeds, workdir)}, 'data skew'


def heads(base, seeds, workdir):
  """H = 1..5 at skew 1.0 (disjoint classes), on a complete graph and on a chain."""
  rows = {f'H={h}': {'num_heads': h, 'skew': 1.0} for h in range(1, 6)}
  cols = {'complete': {'topology': 'complete'}, 'chain': {'topology': 'chain'}}
  return {'grid': grid(base, rows, cols, seeds, workdir)}, 'heads'


def chain_hops(summary_dir: str, last_head: bool = True) -> np.ndarray:
  """[N] accuracy (%) of client i on the primary classes of clients d hops away, d = 1..N-1.

  Averaged over the ordered pairs (i, j) with |i - j| = d on the chain 0 - 1 - ... - (N-1).
  """
  z = np.load(os.path.join(summary_dir, 'per_class.npz'))
  correct = z['correct_NxHxC'][:, -1 if last_head else 0]  # [N, C]
  count, primary = z['count_C'], z['primary_NxC']
  n = len(primary)
  acc = np.array([[correct[i, primary[j]].sum() / max(count[primary[j]].sum(), 1)
                   for j in range(n)] for i in range(n)])
  return np.array([100 * np.mean([acc[i, j] for i in range(n) for j in range(n)
                                  if abs(i - j) == d]) for d in range(1, n)])


def topology(base, seeds, workdir):
  """Complete, ring, chain and islands graphs; and transitivity along a chain of 6 clients.

  Transitivity: at skew 1.0 on a chain of 6 clients, the last head's accuracy of
  each client on the classes of the clients d hops away, for H = 1..5.
  """
  rows = {name: {'topology': name} for name in ('complete', 'ring', 'chain', 'islands')}
  cols = {'naive (H=1)': NAIVE, 'MHD (H=3)': MHD}
  results = {'grid': grid(base, rows, cols, seeds, workdir)}
  hops = {}
  for h in range(1, 6):
    overrides = {'num_heads': h, 'topology': 'chain', 'num_clients': 6, 'skew': 1.0}
    run_dir = os.path.join(workdir, f'transitivity_H{h}')
    run_variant(base, overrides, seeds, run_dir)
    per_seed = np.stack([chain_hops(os.path.join(run_dir, f'seed{s}')) for s in seeds])
    hops[f'H={h}'] = {'mean': per_seed.mean(0).tolist(), 'std': per_seed.std(0).tolist()}
  results['transitivity'] = hops
  return results, 'topology'


def models(base, seeds, workdir):
  """Small-only, large-only and mixed populations (half small, half large clients).

  Columns split the clients by position: the first half (small in the mix) and
  the second half (large in the mix), so every cell compares clients holding
  the same data.
  """
  if len(base.get('groups', {})) == 2:
    (_, small), (_, large) = [(k, dict(v.model)) for k, v in base.groups.items()]
  else:
    small, large = SMALL, LARGE
  n = base.num_clients
  half = n // 2
  variants = {'small-only': [(n, small)], 'large-only': [(n, large)],
              'mixed': [(half, small), (n - half, large)]}
  results = {}
  for name, groups in variants.items():
    summaries = []
    for seed in seeds:
      config = base.copy_and_resolve_references()
      with config.unlocked():
        config.groups = {f'g{g}': {'num_clients': k, 'model': m}
                         for g, (k, m) in enumerate(groups)}
        config.seed = seed
      summaries.append(train.train_and_evaluate(
          config, os.path.join(workdir, name, f'seed{seed}')))
    results[name] = {f'clients 0-{half - 1}': headline(summaries, range(half)),
                     f'clients {half}-{n - 1}': headline(summaries, range(half, n))}
  return {'grid': results}, 'population'


def methods(base, seeds, workdir):
  """Isolated, naive distillation, MHD, MHD + embedding distillation, FedAvg, supervised."""
  rows = {'isolated': ISOLATED, 'naive (H=1)': NAIVE, 'MHD (H=3)': MHD,
          'MHD + emb (H=3)': MHD_EMB, 'FedAvg (every 10 steps)': FEDAVG,
          'supervised upper bound': SUPERVISED}
  return {'grid': grid(base, rows, {'': {}}, seeds, workdir)}, 'method'


def hops_table(hops: dict) -> str:
  n = len(next(iter(hops.values()))['mean'])
  lines = ['| heads | ' + ' | '.join(f'd={d}' for d in range(1, n + 1)) + ' |',
           '|---' * (n + 1) + '|']
  for h, v in hops.items():
    lines.append(f'| {h} | ' + ' | '.join(f'{m:.1f} ± {s:.1f}'
                                          for m, s in zip(v['mean'], v['std'])) + ' |')
  return '\n'.join(lines)


STUDIES: dict[str, Callable] = {'heterogeneity': heterogeneity, 'heads': heads,
                                'topology': topology, 'models': models, 'methods': methods}

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Base config.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/studies', 'Where results are written.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Number of seeds (0..seeds-1) per variant.')


def main(argv):
  if len(argv) != 2 or argv[1] not in STUDIES:
    raise app.UsageError(f'usage: python -m mhd_jax.studies NAME --workdir DIR; '
                         f'NAME is one of {", ".join(STUDIES)}')
  name = argv[1]
  logging.set_verbosity(logging.WARNING)
  os.makedirs(_WORKDIR.value, exist_ok=True)
  results, xlabel = STUDIES[name](_CONFIG.value, range(_SEEDS.value),
                                  os.path.join(_WORKDIR.value, name))
  doc = inspect.cleandoc(STUDIES[name].__doc__)
  md = (f'# {name}\n\n{doc}\n\nMean ± std over {_SEEDS.value} seeds; '
        'private = mean private accuracy of head 0, shared = mean shared accuracy of the '
        'last head (%).\n\n' + table(results['grid'], xlabel) + '\n')
  if 'transitivity' in results:
    md += ('\n## Transitivity\n\nAccuracy (%) of the last head of each client on the '
           'classes of the clients d hops away on the chain:\n\n'
           + hops_table(results['transitivity']) + '\n')
  stem = os.path.join(_WORKDIR.value, name)
  with open(stem + '.json', 'w') as f:
    json.dump(results, f, indent=1)
  with open(stem + '.md', 'w') as f:
    f.write(md)
  plot(results, xlabel, stem + '.png')
  print(md)


if __name__ == '__main__':
  app.run(main)
