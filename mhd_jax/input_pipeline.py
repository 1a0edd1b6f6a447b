"""Batches for the step: per-client private batches plus one shared public batch.

Every dataset is served through `Data`. A training batch is

    {'private': {'image': [N, B, ...], 'label': [N, B]},
     'public':  {'image': [B_pub, ...]}}

(the public batch carries no labels), and an evaluation batch is
`{'image': [B, ...], 'label': [B], 'mask': [B]}` with padded examples masked
out. The embedded dataset (`digits`, from scikit-learn, 1,797 8x8 images) lives
here; TFDS datasets are served by `tfds_pipeline`.
"""

import dataclasses
from typing import Callable, Iterator, Sequence

import numpy as np

from mhd_jax import partition as partition_lib

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


AUGMENTS = ('imagenet', 'cifar', 'none')  # data.augment (TFDS preprocessing in tfds_pipeline)


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


def _load_digits(seed: int, test_fraction: float):
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = (digits.images.astype(np.float32) / 16.0)[..., None]  # [1797, 8, 8, 1] in [0, 1]
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(labels))
  num_test = int(round(test_fraction * len(labels)))
  test, train = order[:num_test], order[num_test:]
  return (images[train], labels[train]), (images[test], labels[test])


def digits(config, client_ids: Sequence[int] | None = None) -> Data:
  """The embedded UCI digits: a seeded train/test split, then the partition.

  The train/test split uses `config.data.split_seed` (not `config.seed`) so
  that runs with different seeds are evaluated on the same test set.
  """
  (train_x, train_y), (test_x, test_y) = _load_digits(
      config.data.split_seed, config.data.test_fraction)
  part = partition_lib.make(train_y, 10, config)
  clients = list(range(config.num_clients)) if client_ids is None else list(client_ids)
  b, b_pub = config.data.batch_size, config.data.public_batch_size
  public_stream = config.num_clients  # stream ids 0..N-1 are the clients

  def train_batches(start_step: int) -> Iterator[Batch]:
    step = start_step
    while True:
      images, labels = [], []
      for i in clients:
        pool = part.client_indices[i]
        idx = pool[epoch_indices(config.seed, i, step, len(pool), b)]
        images.append(train_x[idx])
        labels.append(train_y[idx])
      pub = part.public_indices[epoch_indices(
          config.seed, public_stream, step, len(part.public_indices), b_pub)]
      yield {'private': {'image': np.stack(images), 'label': np.stack(labels)},
             'public': {'image': train_x[pub]}}
      step += 1

  return Data(partition=part, num_classes=10, image_shape=train_x.shape[1:],
              train_batches=train_batches,
              eval_batches=lambda: eval_batches_from_arrays(
                  test_x, test_y, config.data.eval_batch_size),
              train_labels=train_y)


def get_data(config, client_ids: Sequence[int] | None = None) -> Data:
  """The dataset a config names (`config.data.name`)."""
  if config.data.name == 'digits':
    return digits(config, client_ids)
  from mhd_jax import tfds_pipeline  # pylint: disable=g-import-not-at-top
  return tfds_pipeline.get_data(config, client_ids)
