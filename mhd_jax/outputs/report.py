"""End-of-run report: PNG plots and a markdown table in WORKDIR/report/.

    accuracy_over_steps.png  private (top row) and shared (bottom row) accuracy of
                             every head (columns) at each evaluation: a thin line
                             per client, the mean over clients in black
    private_vs_shared.png    final private and shared accuracy of every client and the
                             mean, one panel per head
    graph.png                the communication graph, clients coloured by their final
                             shared accuracy of head 0 (an arrow j -> i: i learns from j)
    report.md                per-client table of final accuracies, the means, the
                             communication cost and the plots

Above `PLOT_CLIENTS` clients the plots show the spread over clients (the 10th to 90th
percentile band, histograms) instead of a line or a bar per client, and the table lists
the first `evaluate.TABLE_CLIENTS`; `graph.png` is drawn for at most `GRAPH_CLIENTS`
clients and `GRAPH_LINKS` links (an arrow costs about 10 ms), and report.md says when it
is not. Figures are built with `matplotlib.figure.Figure` (no pyplot state), so the
functions are safe to call from a notebook, which can also draw them inline.
"""

import os

from matplotlib import figure
import numpy as np
from scipy import sparse

from mhd_jax.algorithm import evaluate
from mhd_jax.outputs import summary as summary_lib
from mhd_jax.outputs import workdir as wd


PLOT_CLIENTS = 100   # above: the spread over clients, not a line or a bar per client
GRAPH_CLIENTS = 200  # graph.png: at most this many clients ...
GRAPH_LINKS = 500    # ... and links (pairs linked one way or both)


def eval_history(records: list[dict]):
  """(steps [T], private [T, N, H], shared [T, N, H]) from metrics.jsonl's eval records."""
  evals = [r for r in records if 'eval' in r]
  steps = np.array([r['step'] for r in evals])
  private = np.array([r['eval']['private_acc'] for r in evals])
  shared = np.array([r['eval']['shared_acc'] for r in evals])
  return steps, private, shared


def plot_accuracy_over_steps(steps_T, private_TxNxH, shared_TxNxH) -> figure.Figure:
  num_heads = private_TxNxH.shape[2]
  fig = figure.Figure(figsize=(4 * num_heads, 6.5), layout='constrained')
  axes = fig.subplots(2, num_heads, sharex=True, sharey=True, squeeze=False)
  for row, (name, acc) in enumerate([('private', private_TxNxH), ('shared', shared_TxNxH)]):
    for k in range(num_heads):
      ax = axes[row, k]
      if acc.shape[1] <= PLOT_CLIENTS:
        ax.plot(steps_T, acc[:, :, k], '.-', lw=0.8, alpha=0.6)
      else:
        ax.fill_between(steps_T, *np.percentile(acc[:, :, k], [10, 90], axis=1), alpha=0.3,
                        label='10th-90th percentile of clients')
      ax.plot(steps_T, acc[:, :, k].mean(1), 'ko-', lw=2.2, label='mean')
      ax.set_title(f'{name} accuracy, head {k}')
      ax.set_ylim(0, 1)
      ax.grid(alpha=0.3)
      if row == 1:
        ax.set_xlabel('step')
  axes[0, 0].legend(loc='lower right')
  return fig


def plot_private_vs_shared(acc: evaluate.Accuracies) -> figure.Figure:
  """Bars of final private and shared accuracy per client (and the mean), one panel per head;
  above `PLOT_CLIENTS` clients, histograms of them over the clients."""
  n, num_heads = acc.private_NxH.shape
  if n > PLOT_CLIENTS:
    return _histograms(acc)
  fig = figure.Figure(figsize=(max(5.0, 0.45 * (n + 1) * num_heads + 1.5), 3.8),
                      layout='constrained')
  axes = fig.subplots(1, num_heads, sharey=True, squeeze=False)[0]
  x = np.arange(n + 1)
  for k, ax in enumerate(axes):
    for offset, name, acc_NxH in [(-0.2, 'private', acc.private_NxH),
                                  (0.2, 'shared', acc.shared_NxH)]:
      values = np.append(acc_NxH[:, k], acc_NxH[:, k].mean())
      ax.bar(x + offset, values, width=0.4, label=name)
    ax.set_xticks(x, [str(i) for i in range(n)] + ['mean'])
    ax.set(ylim=(0, 1.15), yticks=np.linspace(0, 1, 6), xlabel='client', title=f'head {k}')
    ax.grid(axis='y', alpha=0.3)
  axes[0].set_ylabel('final accuracy')
  axes[0].legend(loc='upper left', ncols=2, fontsize=8)
  return fig


def _histograms(acc: evaluate.Accuracies) -> figure.Figure:
  """Histograms over the clients of their final private and shared accuracy, one panel per
  head."""
  num_heads = acc.private_NxH.shape[1]
  fig = figure.Figure(figsize=(4 * num_heads, 3.8), layout='constrained')
  axes = fig.subplots(1, num_heads, sharey=True, squeeze=False)[0]
  for k, ax in enumerate(axes):
    for name, acc_NxH in [('private', acc.private_NxH), ('shared', acc.shared_NxH)]:
      ax.hist(acc_NxH[:, k], bins=np.linspace(0, 1, 41), alpha=0.6,
              label=f'{name} (mean {acc_NxH[:, k].mean():.3f})')
    ax.set(xlabel='final accuracy', title=f'head {k}')
    ax.legend(loc='upper left', fontsize=8)
  axes[0].set_ylabel('clients')
  return fig


def drawable(adjacency_NxN) -> bool:
  """Whether `draw_graph` draws this graph (at most `GRAPH_CLIENTS` clients and `GRAPH_LINKS`
  links)."""
  a = sparse.csr_array(adjacency_NxN)
  return a.shape[0] <= GRAPH_CLIENTS and sparse.triu((a + a.T) != 0).nnz <= GRAPH_LINKS


def draw_graph(ax, adjacency_NxN, values_N, label: str = 'shared accuracy, head 0') -> None:
  """Draws the graph (dense or scipy.sparse; small: `drawable`) on `ax`: clients on a circle
  coloured by `values_N` in [0, 1].

  An arrow j -> i means A[i, j] > 0 (i learns from j); a double arrow, both ways.
  """
  a = sparse.csr_array(adjacency_NxN).toarray() > 0
  n = a.shape[0]
  angle = np.pi / 2 - 2 * np.pi * np.arange(n) / n
  pos = np.stack([np.cos(angle), np.sin(angle)], 1)
  for i, j in np.argwhere(a):
    if a[j, i] and j < i:
      continue  # drawn once, as a double arrow, from the other side
    ax.annotate('', xy=pos[i], xytext=pos[j], arrowprops=dict(
        arrowstyle='<|-|>' if a[j, i] else '-|>', color='0.55', lw=0.8,
        shrinkA=11, shrinkB=11, mutation_scale=9))
  nodes = ax.scatter(pos[:, 0], pos[:, 1], c=values_N, cmap='viridis', vmin=0, vmax=1, s=420,
                     edgecolors='k', zorder=3)
  for i in range(n):
    colour = 'w' if values_N[i] < 0.6 else 'k'
    ax.text(*pos[i], str(i), ha='center', va='center', fontsize=8, color=colour, zorder=4)
  ax.figure.colorbar(nodes, ax=ax, label=label, shrink=0.8)
  ax.set(xlim=(-1.3, 1.3), ylim=(-1.3, 1.3), aspect='equal', xticks=[], yticks=[])


def plot_graph(adjacency_NxN, values_N) -> figure.Figure:
  fig = figure.Figure(figsize=(6, 5), layout='constrained')
  ax = fig.subplots()
  draw_graph(ax, adjacency_NxN, values_N)
  ax.set_title('communication graph')
  return fig


def markdown_table(acc: evaluate.Accuracies) -> str:
  """Final private / shared accuracy (%) of every client and head (the first
  `evaluate.TABLE_CLIENTS`, then a line for the others), and the mean."""
  num_heads = acc.private_NxH.shape[1]
  head = '| client | ' + ' | '.join(f'private {k} | shared {k}' for k in range(num_heads)) + ' |'
  rows = [head, '|---' * (1 + 2 * num_heads) + '|']
  def row(name, p_H, s_H):
    return f'| {name} | ' + ' | '.join(f'{100 * p:.1f} | {100 * s:.1f}'
                                       for p, s in zip(p_H, s_H)) + ' |'
  rows += [row(f'**{name}**' if name == 'mean' else name, p, s) for name, p, s in acc.rows()]
  if acc.hidden():
    rows += ['', acc.hidden() + '.']
  return '\n'.join(rows)


def write(workdir: str, acc: evaluate.Accuracies, adjacency_NxN,
          summary: summary_lib.Summary) -> list[str]:
  """Writes the plots and report.md into WORKDIR/report (from its metrics.jsonl, the final
  accuracies and the summary); returns the paths written."""
  report_dir = wd.path(workdir, wd.REPORT)
  os.makedirs(report_dir, exist_ok=True)
  figures = {
      'accuracy_over_steps.png': plot_accuracy_over_steps(*eval_history(wd.read_metrics(workdir))),
      'private_vs_shared.png': plot_private_vs_shared(acc),
  }
  graph = drawable(adjacency_NxN)
  if graph:
    figures['graph.png'] = plot_graph(adjacency_NxN, acc.shared_NxH[:, 0])
  paths = []
  for name, fig in figures.items():
    paths.append(os.path.join(report_dir, name))
    fig.savefig(paths[-1], dpi=110)
  lines = [
      f'# Run report: {summary.num_clients} clients, {summary.num_heads} heads, '
      f'{summary.steps} steps',
      '',
      'Final accuracy (%) of every client and head; *private*: on the test examples of '
      'the client\'s primary classes, *shared*: on the whole test set.',
      '',
      markdown_table(acc),
      '',
      f'Bytes sent per step, all clients: {summary.bytes_sent_per_step:,} '
      f'(FedAvg, per round: {summary.fedavg_bytes_per_round:,}).',
      '',
  ] + [f'![{name[:-4]}]({name})' for name in figures] + ([] if graph else [
      '', f'The communication graph is not drawn: it has more than {GRAPH_CLIENTS} clients or '
      f'{GRAPH_LINKS} links.'])
  paths.append(os.path.join(report_dir, 'report.md'))
  with open(paths[-1], 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return paths
