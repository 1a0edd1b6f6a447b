"""Private and shared accuracy of every client and head (docs/algorithm.md).

*Private accuracy* of client i: accuracy (argmax over all C classes) on the
test examples whose label is one of client i's primary classes. *Shared
accuracy*: accuracy on the whole test set. Both come from per-class counts of
correct predictions, which are kept (`correct_NxHxC`) for finer studies.
"""

import dataclasses
import functools
from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mhd_jax import models
from mhd_jax.population import state as state_lib


def _predict_one(model, params, batch_stats, x):
  return jnp.argmax(models.forward(model, params, batch_stats, x, train=False)[0], axis=-1)


def make_predict(specs: Sequence[state_lib.GroupSpec], for_each: Callable | None = None):
  """`predict(state, images_BxHxWxC) -> predictions [S, H, B]` in eval mode, every stacked
  client run by `for_each` (`(fn, in_axes) -> fn over clients`, e.g. with a mesh each
  device on its own clients: `placement.clients.for_each_client`; default `jax.vmap`)."""
  for_each = for_each or (lambda fn, in_axes: jax.vmap(fn, in_axes=in_axes))

  def predict(state: state_lib.TrainState, images):
    return jnp.concatenate([
        for_each(functools.partial(_predict_one, spec.model), in_axes=(0, 0, None))(
            group.params, group.batch_stats, images)
        for spec, group in zip(specs, state.groups)])

  return predict


TABLE_CLIENTS = 100  # the log's and the report's tables list this many clients, then the mean


@dataclasses.dataclass(frozen=True)
class Accuracies:
  """Evaluation results; accuracies are fractions in [0, 1]."""
  private_NxH: np.ndarray
  shared_NxH: np.ndarray
  correct_NxHxC: np.ndarray  # correct predictions per true class
  count_C: np.ndarray        # test examples per class

  def rows(self):
    """(name, private_H, shared_H) of the first `TABLE_CLIENTS` clients, then the mean over
    all of them: the rows of every table (`summary.json` holds every client)."""
    n = min(self.private_NxH.shape[0], TABLE_CLIENTS)
    return [(str(i), self.private_NxH[i], self.shared_NxH[i]) for i in range(n)] + [
        ('mean', self.private_NxH.mean(0), self.shared_NxH.mean(0))]

  def hidden(self) -> str | None:
    """The line a table shows for the clients `rows` leaves out (None when it shows all)."""
    n = self.private_NxH.shape[0]
    if n <= TABLE_CLIENTS:
      return None
    return (f'... and {n - TABLE_CLIENTS:,} more clients (every client is in summary.json); '
            f'the mean is over all {n:,}')

  def per_class(self) -> np.ndarray:
    """[N, H, C] accuracy of each client and head on each class."""
    return self.correct_NxHxC / np.maximum(self.count_C, 1)


def accuracies(predict, state, batches: Iterable[dict], primary_NxC: np.ndarray) -> Accuracies:
  """Runs `predict` over evaluation batches (padded examples masked out)."""
  n, c = primary_NxC.shape
  correct, count = None, np.zeros(c, np.int64)
  for batch in batches:
    preds_NxHxB = np.asarray(jax.device_get(predict(state, batch['image'])))
    label, mask = np.asarray(batch['label']), np.asarray(batch['mask'], bool)
    hit = (preds_NxHxB == label) & mask  # [N, H, B]
    onehot_BxC = np.eye(c, dtype=np.int64)[label] * mask[:, None]
    batch_correct = hit.astype(np.int64) @ onehot_BxC
    correct = batch_correct if correct is None else correct + batch_correct
    count += onehot_BxC.sum(0)
  private = (correct * primary_NxC[:, None, :]).sum(-1) / np.maximum(
      (count * primary_NxC).sum(-1), 1)[:, None]
  shared = correct.sum(-1) / max(count.sum(), 1)
  return Accuracies(private, shared, correct, count)
