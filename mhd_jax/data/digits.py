"""The embedded dataset: scikit-learn's UCI digits (1,797 8x8 grey images, 10 classes).

Needs no download and no TensorFlow, so tests and the default config run anywhere.
"""

from typing import Sequence

import numpy as np

from mhd_jax.data import contract

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
  train, test = _load_digits(config.data.split_seed, config.data.test_fraction)
  return contract.from_arrays(config, client_ids, train, test, 10)
