"""What every dataset serves: the `Data` contract and the batch helpers all datasets share.

A training batch is

    {'private': {'image': [N, B, ...], 'label': [N, B]},
     'public':  {'image': [B_pub, ...]}}

(the public batch carries no labels), plus, when teachers lag tau =
`config.dynamics.staleness` >= 1 steps, `'public_ahead': {'image': [B_pub, ...]}`:
the public batch of step s + tau, which the clients evaluate now for the
receivers of step s + tau (docs/dynamics.md). An evaluation batch is
`{'image': [B, ...], 'label': [B], 'mask': [B]}` with padded examples masked
out. `from_arrays` serves a dataset held in memory (the embedded ones) this way.
This module imports nothing of `mhd_jax.data` (nor TensorFlow), so the
dataset modules and `config_check` can import it without a cycle; the package
re-exports its names (`mhd_jax.data.Data`, ...).
"""

import dataclasses
from typing import Callable, Iterator, Sequence

import numpy as np

from mhd_jax.data import partition as partition_lib

Batch = dict


@dataclasses.dataclass(frozen=True)
class Data:
  """A partitioned dataset.

  Attributes:
    partition: where each training example went.
    num_classes: C.
    image_shape: shape of one image (H, W, channels).
    train_batches: `start_step -> iterator` of training batches, the batch
      for step s being the same whatever step the iterator started from (so a
      resumed run sees the data an uninterrupted one would).
    eval_batches: `() -> iterator` over the whole evaluation split.
    train_labels: labels of the training split (for statistics; never fed to
      another client's computation).
  """
  partition: partition_lib.Partition
  num_classes: int
  image_shape: tuple[int, ...]
  train_batches: Callable[[int], Iterator[Batch]]
  eval_batches: Callable[[], Iterator[Batch]]
  train_labels: np.ndarray


AUGMENTS = ('imagenet', 'cifar', 'none')  # data.augment (TFDS preprocessing in tfds_data)


def staleness(config) -> int:
  """tau: how many steps ahead `public_ahead` is (0: no such batch; configs without `dynamics`)."""
  dynamics = config.get('dynamics')
  return int(dynamics.staleness) if dynamics else 0


def permutation(seed: int, stream: int, epoch: int, pool_size: int) -> np.ndarray:
  """The order in which `stream` walks its pool of `pool_size` examples in `epoch`."""
  return np.random.default_rng([seed, stream, epoch]).permutation(pool_size)


def epoch_indices(seed: int, stream: int, step: int, pool_size: int,
                  batch_size: int) -> np.ndarray:
  """Positions into a pool of `pool_size` examples for batch `step` of a stream.

  The stream walks through a fresh seeded permutation of the pool every epoch,
  so each example is seen once per epoch; the result depends only on
  (seed, stream, step), never on what was drawn before.
  """
  if pool_size == 0:
    raise ValueError(f'stream {stream} has no examples: the partition left it empty.')
  pos = step * batch_size + np.arange(batch_size)
  epoch, within = np.divmod(pos, pool_size)
  out = np.empty(batch_size, np.int64)
  for e in np.unique(epoch):
    out[epoch == e] = permutation(seed, stream, e, pool_size)[within[epoch == e]]
  return out


class Streams:
  """`epoch_indices` of many streams at once: row s of `positions(step)` equals
  `epoch_indices(seed, ids[s], step, sizes[s], batch_size)`, whatever order the steps come in.

  Vectorised over the streams. Each stream keeps the permutations of the few epochs one batch
  can span (a ring of ceil((B - 1) / P) + 1 of them) and draws one only when it enters a new
  epoch, so a step of N streams with pools of P >= B examples draws about N B / P
  permutations (each one NumPy generator, tens of microseconds), not N.
  """

  def __init__(self, seed: int, ids, sizes, batch_size: int):
    self._seed, self._ids, self._b = seed, np.asarray(ids), batch_size
    self._sizes = np.asarray(sizes, np.int64)
    if (self._sizes == 0).any():
      raise ValueError(f'stream {self._ids[np.argmin(self._sizes)]} has no examples: the '
                       'partition left it empty.')
    self._slots = -(-(batch_size - 1) // self._sizes) + 1  # epochs one batch can span
    self._first_slot = np.cumsum(self._slots) - self._slots
    self._held = np.full(self._slots.sum(), -1, np.int64)  # the epoch each slot holds
    self._start = np.cumsum(self._slots * self._sizes) - self._slots * self._sizes
    self._orders = np.empty((self._slots * self._sizes).sum(), np.int64)

  def positions(self, step: int) -> np.ndarray:
    """[S, B] positions into each stream's pool for batch `step`."""
    sizes, slots = self._sizes[:, None], self._slots[:, None]
    epoch, within = np.divmod(step * self._b + np.arange(self._b)[None], sizes)  # [S, B]
    slot = self._first_slot[:, None] + epoch % slots
    stale = self._held[slot] != epoch
    _, first = np.unique(slot[stale], return_index=True)
    for s, e in zip(np.nonzero(stale)[0][first], epoch[stale][first]):  # new epochs only
      at = self._start[s] + e % self._slots[s] * self._sizes[s]
      self._orders[at:at + self._sizes[s]] = permutation(self._seed, self._ids[s], e,
                                                        self._sizes[s])
      self._held[self._first_slot[s] + e % self._slots[s]] = e
    return self._orders[self._start[:, None] + epoch % slots * sizes + within]


def eval_batches_from_arrays(images, labels, batch_size) -> Iterator[Batch]:
  """Batches over a whole split; the last one is padded and masked, nothing dropped."""
  for start in range(0, len(labels), batch_size):
    image, label = images[start:start + batch_size], labels[start:start + batch_size]
    pad = batch_size - len(label)
    yield {'image': np.pad(image, [(0, pad)] + [(0, 0)] * (image.ndim - 1)),
           'label': np.pad(label, (0, pad)),
           'mask': np.arange(batch_size) < len(label)}


def from_arrays(config, client_ids: Sequence[int] | None, train, test, num_classes: int) -> Data:
  """A `Data` over examples held in memory (the embedded datasets): partition, batches, test set.

  `train` and `test` are (examples [M, ...], labels [M]). The private batch of client i at
  step s and the public batch of step s are `epoch_indices` of streams i and N (every client
  at once: `Streams`): they depend on (seed, stream, step) only. With no public set
  (public_fraction = 0, which `config_check` allows only in runs that do not distil) the
  public batch is zeros.
  """
  (train_x, train_y), (test_x, test_y) = train, test
  part = partition_lib.make(train_y, num_classes, config)
  clients = list(range(config.num_clients)) if client_ids is None else list(client_ids)
  b, b_pub = config.data.batch_size, config.data.public_batch_size
  public_stream = config.num_clients  # stream ids 0..N-1 are the clients
  tau = staleness(config)

  def public(step: int) -> dict:
    pool = part.public_indices
    if not len(pool):
      return {'image': np.zeros((b_pub,) + train_x.shape[1:], train_x.dtype)}
    return {'image': train_x[pool[epoch_indices(config.seed, public_stream, step, len(pool),
                                                b_pub)]]}

  sizes = np.array([len(part.client_indices[i]) for i in clients])
  pools = np.concatenate([part.client_indices[i] for i in clients])  # client after client
  starts = (np.cumsum(sizes) - sizes)[:, None]

  def train_batches(start_step: int) -> Iterator[Batch]:
    streams = Streams(config.seed, clients, sizes, b)  # the batches of every client at once
    step = start_step
    while True:
      idx = pools[starts + streams.positions(step)]  # [N, B] indices into the training set
      batch = {'private': {'image': train_x[idx], 'label': train_y[idx]},
               'public': public(step)}
      if tau:
        batch['public_ahead'] = public(step + tau)
      yield batch
      step += 1

  return Data(partition=part, num_classes=num_classes, image_shape=train_x.shape[1:],
              train_batches=train_batches,
              eval_batches=lambda: eval_batches_from_arrays(test_x, test_y,
                                                            config.data.eval_batch_size),
              train_labels=train_y)
