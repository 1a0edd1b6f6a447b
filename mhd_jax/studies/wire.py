"""Studies of what crosses the wire (issue 16): accuracy against bytes, and against ε.

Same shape as `claims`: each study is `(base, opts) -> (variants,
analyse)`, every variant runs on every seed, means ± std are over seeds
(ddof=1), and ↑ / ↓ mark a difference beyond the noise (`tables.mark`, two
standard errors) against the study's reference row. Accuracies (%) are the
mean over clients of head 0's private accuracy and the last head's shared
accuracy (`tables.headline`'s figures).
"""

import numpy as np

from mhd_jax.studies import methods
from mhd_jax.studies import tables

# Both studies run this many steps unless --config.num_steps is given on the command line
# (`STEPS` is applied only where the base config keeps the default's 1500). Chosen so that a
# study of 3 seeds finishes in about 10 minutes with --jobs 2 on 2 CPU cores (docs/results.md).
STEPS = {'communication': 600, 'privacy': 600}
DEFAULT_STEPS = 1500  # configs/default.py's num_steps

# What the communication study sends: the default sends every head as float32 every step.
WIRES = {
    'float32, all classes': {},
    'top-3': {'wire.topk': 3},
    'top-1': {'wire.topk': 1},
    '8 bits': {'wire.bits': 8},
    '4 bits': {'wire.bits': 4},
    'top-3, 4 bits': {'wire.topk': 3, 'wire.bits': 4},
    'head 0 only (heads_sent=1)': {'wire.heads_sent': 1},
    'every 4th step': {'wire.every': 4},
}
QUICK_WIRES = ('float32, all classes', 'top-1', 'head 0 only (heads_sent=1)')
NOISES = (0.6, 1.0, 2.0)  # the privacy study's noise multipliers sigma (plus no DP)
CLIP = 1.0                # its clip norm C


def _steps(base, name: str) -> dict:
  """num_steps = STEPS[name] (30 evaluations) unless the base config's num_steps was changed
  (or --quick)."""
  if base.num_steps != DEFAULT_STEPS:
    return {}
  return {'num_steps': STEPS[name], 'eval_every': max(1, STEPS[name] // 30)}


def _accuracy(summary) -> tuple[float, float]:
  """(private acc of head 0, shared acc of the last head), % averaged over clients."""
  return (100 * summary.mean_private_acc[0], 100 * summary.mean_shared_acc[-1])


def bytes_per_step(summary, config) -> float:
  """All clients' bytes per step: the encoded outputs, or FedAvg's per round / average_every."""
  if config.average_every:
    return summary.fedavg_bytes_per_round / config.average_every
  return float(summary.bytes_sent_per_step)


def _figures(summaries, runs) -> dict:
  """Per seed: private and shared accuracy (%), bytes per step, ε (mean and max over clients)."""
  out = {'private': [], 'shared': [], 'bytes_per_step': [], 'epsilon_mean': [],
         'epsilon_max': []}
  for s, run in zip(summaries, runs):
    private, shared = _accuracy(s)
    out['private'].append(private)
    out['shared'].append(shared)
    out['bytes_per_step'].append(bytes_per_step(s, run.config))
    eps = [c.epsilon for c in s.clients if c.epsilon is not None]
    out['epsilon_mean'].append(float(np.mean(eps)) if eps else None)
    out['epsilon_max'].append(float(np.max(eps)) if eps else None)
  return out


def _acc_cells(figs, ref) -> list[str]:
  return [tables.cell(figs[k], tables.mark(figs[k], ref and ref[k]))
          for k in ('private', 'shared')]


# ------------------------------------------------------------------ communication


def communication(base, opts):
  """Accuracy against bytes per step: compressed MHD outputs and FedAvg.

  MHD (H=3, the default config) with what each client sends encoded as
  `config.wire` says: all C classes as float32 (the reference), the top-k
  classes with their ids, 8- or 4-bit codes on a per-row scale, only head 0,
  or every 4th step only; and FedAvg (every 10 steps, its bytes per round
  spread over the steps between). Bytes per step count all clients' encoded
  arrays (values, class ids, scales) as `summary.json` does. Columns: bytes
  per step (all clients) and their share of float32's, private accuracy of
  head 0 and shared accuracy of the last head (%). ↑ / ↓: beats / trails the
  float32 row beyond the noise.
  """
  steps = _steps(base, 'communication')
  wires = {k: v for k, v in WIRES.items() if not opts.quick or k in QUICK_WIRES}
  variants = {f'MHD, {k}': {**methods.MHD, **steps, **v} for k, v in wires.items()}
  variants['FedAvg (every 10 steps)'] = {**methods.FEDAVG, **steps}

  def analyse(summaries, runs):
    results = {v: _figures(summaries[v], runs[v]) for v in variants}
    ref = results['MHD, float32, all classes']
    lines = ['| variant | bytes per step (all clients) | share of float32 | private | shared |',
             '|---|---|---|---|---|']
    full = np.mean(ref['bytes_per_step'])
    for v, figs in results.items():
      b = np.mean(figs['bytes_per_step'])
      other = None if figs is ref else ref
      lines.append(f'| {v} | {b:,.0f} | {b / full:.3f} | ' + ' | '.join(_acc_cells(figs, other))
                   + ' |')
    return results, '\n'.join(lines), lambda path: _plot(results, 'bytes_per_step',
                                                        'bytes per step, all clients (log)', path)

  return variants, analyse


# ------------------------------------------------------------------ privacy


def privacy(base, opts):
  """Accuracy against ε: DP-SGD on each client's private term, MHD and naive distillation.

  MHD (H=3) and naive distillation (H=1) without DP and with DP-SGD at clip
  norm 1 and noise multipliers σ = 0.6, 1, 2 (`dp.*`; the MLP has no
  BatchNorm). ε is each client's at δ = 1e-5 by the PLD accountant, assuming
  Poisson sampling with q = B / n_i (docs/privacy.md); the table gives its
  mean and largest value over clients (mean over seeds: the partition and
  hence n_i depend on the seed). Columns: ε, private accuracy of head 0 and
  shared accuracy of the last head (%). ↑ / ↓: beats / trails the same
  method without DP beyond the noise.
  """
  steps = _steps(base, 'privacy')
  noises = NOISES[1:2] if opts.quick else NOISES
  compared = {'MHD (H=3)': methods.MHD, 'naive (H=1)': methods.NAIVE}
  variants = {}
  for m, o in compared.items():
    variants[f'{m}, no DP'] = {**o, **steps}
    for s in noises:
      variants[f'{m}, sigma={s}'] = {**o, **steps, 'dp.enabled': True, 'dp.noise_multiplier': s,
                                     'dp.clip_norm': CLIP}

  def analyse(summaries, runs):
    results = {v: _figures(summaries[v], runs[v]) for v in variants}
    lines = ['| variant | ε (mean over clients) | ε (largest client) | private | shared |',
             '|---|---|---|---|---|']
    for v, figs in results.items():
      ref = None if v.endswith('no DP') else results[v.split(',')[0] + ', no DP']
      eps = ['∞ (no DP)' if None in figs[k] else tables.cell(figs[k])
             for k in ('epsilon_mean', 'epsilon_max')]
      lines.append(f'| {v} | ' + ' | '.join(eps + _acc_cells(figs, ref)) + ' |')
    return results, '\n'.join(lines), lambda path: _plot(results, 'epsilon_mean',
                                                        'ε at δ = 1e-5, mean over clients (log)',
                                                        path)

  return variants, analyse


def _plot(results: dict, x_key: str, xlabel: str, path: str):
  """Private and shared accuracy against `x_key`, one point per variant (error bars: std over
  seeds); variants without a value of x (no DP) are drawn as dashed lines."""
  plt = tables.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(13, 5))
  for ax, key in zip(axes, ('shared', 'private')):
    for i, (name, figs) in enumerate(results.items()):
      y, color = figs[key], f'C{i % 10}'
      if None in figs[x_key]:
        ax.axhline(np.mean(y), color=color, ls='--', label=name)
        continue
      ax.errorbar(np.mean(figs[x_key]), np.mean(y), yerr=np.std(y, ddof=1) if len(y) > 1 else 0,
                  xerr=np.std(figs[x_key]) if len(y) > 1 else 0, fmt='o', color=color,
                  capsize=3, label=name)
    ax.set_xscale('log')
    tables.label(ax, f'{key} accuracy', xlabel, f'{key} accuracy (%)')
  tables.save(plt, fig, path)
