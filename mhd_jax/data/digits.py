"""The embedded dataset: scikit-learn's UCI digits (1,797 8x8 grey images, 10 classes).

Needs no download and no TensorFlow, so tests and the default config run anywhere.
"""

from typing import Iterator, Sequence

import numpy as np

from mhd_jax.data import contract
from mhd_jax.data import partition as partition_lib

NUM_EXAMPLES = 1797  # sklearn's load_digits, before the train/test split


def _load_digits(seed: int, test_fraction: float):
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  raw = datasets.load_digits()
  images = (raw.images.astype(np.float32) / 16.0)[..., None]  # [1797, 8, 8, 1] in [0, 1]
  labels = raw.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(labels))
  num_test = int(round(test_fraction * len(labels)))
  test, train = order[:num_test], order[num_test:]
  return (images[train], labels[train]), (images[test], labels[test])


def digits(config, client_ids: Sequence[int] | None = None) -> contract.Data:
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
  tau = contract.staleness(config)

  def public(step: int) -> dict:
    pub = part.public_indices[contract.epoch_indices(
        config.seed, public_stream, step, len(part.public_indices), b_pub)]
    return {'image': train_x[pub]}

  sizes = np.array([len(part.client_indices[i]) for i in clients])
  pools = np.concatenate([part.client_indices[i] for i in clients])  # client after client
  starts = (np.cumsum(sizes) - sizes)[:, None]

  def train_batches(start_step: int) -> Iterator[contract.Batch]:
    streams = contract.Streams(config.seed, clients, sizes, b)  # batches of every client at once
    step = start_step
    while True:
      idx = pools[starts + streams.positions(step)]  # [N, B] indices into the training set
      batch = {'private': {'image': train_x[idx], 'label': train_y[idx]},
               'public': public(step)}
      if tau:
        batch['public_ahead'] = public(step + tau)
      yield batch
      step += 1

  return contract.Data(partition=part, num_classes=10, image_shape=train_x.shape[1:],
                       train_batches=train_batches,
                       eval_batches=lambda: contract.eval_batches_from_arrays(
                           test_x, test_y, config.data.eval_batch_size),
                       train_labels=train_y)
