"""The paper's studies as commands: `python -m mhd_jax.studies NAME --workdir DIR`.

Each study runs a grid of config variants over several seeds, in this
process, and writes `DIR/NAME.json` (every run's summary numbers),
`DIR/NAME.md` (a table, mean ± std over seeds) and `DIR/NAME.png` (a plot).
Runs go to `DIR/NAME/<variant>/seed<k>/`. `--config` picks the base config
(default: configs/default.py), so the same study scales to the ImageNet
configs; `--config.FIELD=value` overrides it.
"""

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


def mhd(num_heads=3):
  return {'num_heads': num_heads}


def run_variant(base, overrides: dict, seeds, workdir: str) -> list[dict]:
  """Runs one variant for every seed; returns the summaries."""
  out = []
  for seed in seeds:
    config = base.copy_and_resolve_references()
    with config.unlocked():
      config.update_from_flattened_dict({**overrides, 'seed': seed})
    out.append(train.train_and_evaluate(config, os.path.join(workdir, f'seed{seed}')))
  return out


def headline(summaries: list[dict]) -> dict:
  """Mean ± std over seeds of the main-head private and last-head shared accuracy (%)."""
  private = [100 * s['mean_private_acc'][0] for s in summaries]
  shared = [100 * s['mean_shared_acc'][-1] for s in summaries]
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
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = list(results)
  cols = list(results[rows[0]])
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, key in zip(axes, ('shared', 'private')):
    for c in cols:
      ax.errorbar(range(len(rows)), [results[r][c][f'{key}_mean'] for r in rows],
                  yerr=[results[r][c][f'{key}_std'] for r in rows], marker='o', capsize=3,
                  label=c)
    ax.set_xticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f'mean {key} accuracy (%)' + (' (last head)' if key == 'shared' else
                                                   ' (head 0)'))
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def heterogeneity(base, seeds, workdir):
  """Skew 0, 0.5, 0.9, 1.0: isolated vs naive distillation vs MHD."""
  rows = {f'skew {s}': {'skew': s} for s in (0.0, 0.5, 0.9, 1.0)}
  cols = {'isolated': ISOLATED, 'naive (H=1)': NAIVE, 'MHD (H=3)': mhd(3)}
  return grid(base, rows, cols, seeds, workdir), 'data skew'


STUDIES: dict[str, Callable] = {'heterogeneity': heterogeneity}

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
  stem = os.path.join(_WORKDIR.value, name)
  with open(stem + '.json', 'w') as f:
    json.dump(results, f, indent=1)
  md = (f'# {name}\n\n{STUDIES[name].__doc__}\n\nMean ± std over {_SEEDS.value} seeds; '
        'private = mean private accuracy of head 0, shared = mean shared accuracy of the '
        'last head (%).\n\n' + table(results, xlabel) + '\n')
  with open(stem + '.md', 'w') as f:
    f.write(md)
  plot(results, xlabel, stem + '.png')
  print(md)


if __name__ == '__main__':
  app.run(main)
