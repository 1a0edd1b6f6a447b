"""How the studies show their numbers: mean ± std cells marked beyond the noise, the grid
table and plot, and the matplotlib set-up every study's plot shares.

Means ± std are over seeds; a difference is marked as beyond the noise by
`metrics.exceeds_noise` (more than two standard errors).
"""

import numpy as np

from mhd_jax.outputs import summary as summary_lib
from mhd_jax.studies import metrics


def stats(values) -> tuple[float, float]:
  """(mean, std with ddof=1) of the values that are not None; NaN for none."""
  v = np.asarray([x for x in values if x is not None], float)
  if not v.size:
    return float('nan'), float('nan')
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def cell(values, mark_: str = '') -> str:
  """'mean ± std' over seeds; '(r/S)' when only r of S seeds reached it, 'never' for none."""
  reached = [x for x in values if x is not None]
  if not reached:
    return 'never'
  m, s = stats(reached)
  more = f' ({len(reached)}/{len(values)})' if len(reached) < len(values) else ''
  return f'{m:.1f} ± {s:.1f}{mark_}{more}'


def mark(values, reference, lower_is_better: bool = False) -> str:
  """' ↑' / ' ↓' where `values` beat / trail `reference` beyond the noise, else ''."""
  if reference is None or not metrics.exceeds_noise(values, reference):
    return ''
  return ' ↑' if (np.mean(values) > np.mean(reference)) != lower_is_better else ' ↓'


def headline(summaries: list[summary_lib.Summary], clients=None) -> dict:
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


def table(results: dict, title: str) -> str:
  """Private and shared accuracy per cell, and the shared AUC over steps where cells hold it."""
  cols = list(next(iter(results.values())))
  auc = all('auc_mean' in c for row in results.values() for c in row.values())
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


def grid_markdown(grid_results: dict, xlabel: str, num_seeds: int) -> str:
  first = next(iter(next(iter(grid_results.values())).values()))
  auc = ("; AUC = the last head's mean shared accuracy over the run (area under "
         'accuracy-over-steps / steps, %)') if 'auc_mean' in first else ''
  return (f'Mean ± std over {num_seeds} seeds; private = mean private accuracy of head 0, '
          f'shared = mean shared accuracy of the last head (%){auc}.\n\n'
          + table(grid_results, xlabel) + '\n')


def pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def label(ax, title, xlabel, ylabel):
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


def save(plt, fig, path):
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot(results: dict, xlabel: str, path: str):
  """Shared and private accuracy per grid row (one line or bar set per column);
  a third panel for transitivity (accuracy vs hops, one line per H)."""
  plt = pyplot()
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
  save(plt, fig, path)
