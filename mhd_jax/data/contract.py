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
    perm = np.random.default_rng([seed, stream, e]).permutation(pool_size)
    out[epoch == e] = perm[within[epoch == e]]
  return out


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
  step s and the public batch of step s are `epoch_indices` of streams i and N: they depend
  on (seed, stream, step) only. With no public set (public_fraction = 0, which `config_check`
  allows only in runs that do not distil) the public batch is zeros.
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

  def train_batches(start_step: int) -> Iterator[Batch]:
    step = start_step
    while True:
      images, labels = [], []
      for i in clients:
        pool = part.client_indices[i]
        idx = pool[epoch_indices(config.seed, i, step, len(pool), b)]
        images.append(train_x[idx])
        labels.append(train_y[idx])
      batch = {'private': {'image': np.stack(images), 'label': np.stack(labels)},
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
