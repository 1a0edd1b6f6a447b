"""What a run reports as it trains: the log window, progress lines, records and tables.

Training metrics are summed on device over a log window (`Window`) and pulled
to the host once per window, so the logged values are window means. A window
cut by a checkpoint is saved in the checkpoint's metadata and restored on
resume (`Window.record`/`Window.restore`).
"""

import dataclasses

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from mhd_jax.algorithm import distill
from mhd_jax.algorithm import evaluate
from mhd_jax.outputs import writers

TERMS = distill.TERMS


@jax.jit
def _add(sums, metrics):
  """Running float32 sums of the per-client metrics, on device (no host sync per step); `sums`
  None starts a window (float32 whatever the model's dtype, as a restored one)."""
  f32 = lambda x: x.astype(jnp.float32)
  if sums is None:
    return jax.tree.map(f32, metrics)
  return jax.tree.map(lambda a, b: a + f32(b), sums, metrics)


@dataclasses.dataclass
class Window:
  """The metrics of the steps since the last log step: on-device sums and their count."""
  sums: distill.Metrics | None = None
  count: int = 0

  def add(self, metrics: distill.Metrics) -> None:
    self.sums, self.count = _add(self.sums, metrics), self.count + 1

  def means(self, taken_N) -> dict:
    """{term: [N] float64 mean over the steps each client took part in}, pulled from the device
    once. The sums hold 0 on the steps a client sat out (`programs.taken_only`); `taken_N`
    counts the others (NaN for a client that took part in none)."""
    taken_N = np.where(np.asarray(taken_N) > 0, taken_N, np.nan)
    return {k: np.asarray(v, np.float64) / taken_N
            for k, v in jax.device_get(self.sums).as_dict().items()}

  def record(self) -> dict | None:
    """The window as JSON for a checkpoint's meta (float32 sums round-trip exactly); None when
    empty (a checkpoint at a log step)."""
    if not self.count:
      return None
    return {'count': self.count, 'sums': {k: np.asarray(v).tolist()
                                          for k, v in jax.device_get(self.sums).as_dict().items()}}

  @classmethod
  def restore(cls, record) -> 'Window':
    if not record:
      return cls()
    return cls(distill.Metrics(**{k: jnp.asarray(v, jnp.float32)
                                  for k, v in record['sums'].items()}), record['count'])


def eval_record(acc: evaluate.Accuracies) -> dict:
  return {'mean_private_acc': acc.private_NxH.mean(0).tolist(),
          'mean_shared_acc': acc.shared_NxH.mean(0).tolist(),
          'private_acc': acc.private_NxH.tolist(),
          'shared_acc': acc.shared_NxH.tolist()}


def client_table(acc: evaluate.Accuracies, steps_N=None) -> str:
  """Per-client private / shared accuracy (%) of every head, plus the mean; with `steps_N`,
  a last column of the steps each client took part in (`participation.steps_taken`)."""
  h = acc.private_NxH.shape[1]
  head = 'client ' + ' '.join(f'priv{k:<2d} shared{k:<2d}' for k in range(h))
  rows = [head]
  for name, p, s in acc.rows():
    rows.append(f'{name:>6} ' + ' '.join(f'{100 * p[k]:6.1f} {100 * s[k]:8.1f}'
                                         for k in range(h)))
  if steps_N is not None:
    shown = len(rows) - 2
    steps = ['  steps'] + [f' {t:6d}' for t in steps_N[:shown]] + [f' {np.mean(steps_N):6.1f}']
    rows = [r + t for r, t in zip(rows, steps)]
  if acc.hidden():
    rows.insert(-1, acc.hidden())
  return '\n'.join(rows)


def log_train(step, window: Window, taken_N, timed, sent_N, config, writer):
  """Progress line, metrics.jsonl record and TensorBoard scalars of one log window.

  `window` holds each metric summed over its steps (on device, pulled here
  once) and `taken_N` how many of them each client took part in, so the logged
  metrics are each client's means over its own steps (NaN for a client that
  took part in none; the means over clients leave it out); `timed` is
  (steps, seconds spent in them) from `timing.StepTimer`, so steps/s leaves out
  compiling, restoring, evaluation and checkpoints (after a resume inside a
  window, `count` counts the steps before it too, `timed` only this session's).
  """
  steps, seconds = timed
  metrics, count = window.means(taken_N), window.count
  rate = steps / max(seconds, 1e-9)
  examples_per_step = config.num_clients * (config.data.batch_size
                                            + config.data.public_batch_size)
  any_taken = np.asarray(taken_N).any()
  means = {k: float(np.nanmean(metrics[k])) if any_taken else float('nan') for k in TERMS}
  logging.info('step %d/%d | %.1f steps/s, %.0f client-steps/s, %.0f examples/s | ETA %.0fs'
               ' | %s', step, config.num_steps, rate, rate * config.num_clients,
               rate * examples_per_step, (config.num_steps - step) / rate,
               ' '.join(f'{k} {v:.4f}' for k, v in means.items()))
  writer.write_record({'step': step, 'steps_per_sec': rate,
                       'client_steps_per_sec': rate * config.num_clients,
                       'examples_per_sec': rate * examples_per_step, 'window_steps': count,
                       **means, 'clients': {k: metrics[k].tolist() for k in TERMS}})
  scalars = {'mean/steps_per_sec': rate, **writers.per_client('bytes_sent', sent_N * step)}
  for k in TERMS:
    scalars.update(writers.per_client(k, metrics[k]))
  writer.write_scalars(step, scalars)


def log_eval(step, acc, writer) -> None:
  rec = eval_record(acc)
  logging.info('eval step %d | mean private acc %s | mean shared acc %s', step,
               np.round(rec['mean_private_acc'], 4).tolist(),
               np.round(rec['mean_shared_acc'], 4).tolist())
  writer.write_record({'step': step, 'eval': rec})
  scalars = {}
  for k in range(acc.private_NxH.shape[1]):
    scalars.update(writers.per_client(f'private_acc_head{k}', acc.private_NxH[:, k]))
    scalars.update(writers.per_client(f'shared_acc_head{k}', acc.shared_NxH[:, k]))
  writer.write_scalars(step, scalars)


def log_privacy(step, epsilons_N, dp_block: dict, writer) -> None:
  """ε of every client after `step` steps: the log line, a metrics.jsonl record and TensorBoard."""
  eps = np.asarray(epsilons_N, np.float64)
  logging.info('DP after %d steps: epsilon per client %s at delta %g (noise %g, clip %g; %s)',
               step, np.round(eps, 3).tolist(), dp_block['delta'],
               dp_block['noise_multiplier'], dp_block['clip_norm'], dp_block['accountant'])
  writer.write_record({'step': step, 'dp': dict(dp_block, epsilon=eps.tolist())})
  writer.write_scalars(step, writers.per_client('epsilon', eps))
