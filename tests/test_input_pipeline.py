"""The digits pipeline, followed example by example: every image carries its training index.

`_load_digits` is replaced by one whose images hold their own index in every
pixel (labels, split and partition stay the real ones), so a batch says
exactly which examples it drew.
"""

import numpy as np
import pytest

from mhd_jax import input_pipeline
from tests.conftest import short_config

REAL_LOAD = input_pipeline._load_digits  # pylint: disable=protected-access


@pytest.fixture(scope='module')
def data():
  (train_x, train_y), (test_x, test_y) = REAL_LOAD(0, 0.25)
  ids = lambda n, offset: np.broadcast_to(np.arange(offset, offset + n, dtype=np.float32)
                                          [:, None, None, None], (n, 8, 8, 1))
  tagged = ((ids(len(train_y), 0), train_y), (ids(len(test_y), 10_000), test_y))
  with pytest.MonkeyPatch.context() as m:
    m.setattr(input_pipeline, '_load_digits', lambda seed, fraction: tagged)
    config = short_config(**{'data.batch_size': 16, 'data.public_batch_size': 24,
                             'data.eval_batch_size': 128})
    yield config, input_pipeline.digits(config), train_y, test_y


def _ids(images) -> np.ndarray:
  return images[..., 0, 0, 0].astype(np.int64)


def test_each_client_draws_only_from_its_own_pool_and_covers_it_once_per_epoch(data):
  config, d, train_y, _ = data
  part, b = d.partition, config.data.batch_size
  longest = max(len(p) for p in part.client_indices)
  batches = [next(d.train_batches(s)) for s in range(-(-longest // b))]  # one epoch of each
  for i, pool in enumerate(part.client_indices):
    drawn = np.concatenate([_ids(batch['private']['image'][i]) for batch in batches])
    assert set(drawn) <= set(pool), f'client {i} drew from another pool'
    np.testing.assert_array_equal(np.sort(drawn[:len(pool)]), pool)  # each example once
    labels = np.concatenate([batch['private']['label'][i] for batch in batches])
    np.testing.assert_array_equal(labels, train_y[drawn])  # labels travel with their images


def test_public_stream_uses_only_public_examples(data):
  _, d, _, _ = data
  part = d.partition
  private = set(np.concatenate(part.client_indices))
  drawn = np.concatenate([_ids(batch['public']['image'])
                          for batch, _ in zip(d.train_batches(0), range(30))])
  assert set(drawn) <= set(part.public_indices) and not set(drawn) & private
  assert 'label' not in next(d.train_batches(0))['public']


def test_a_resumed_stream_serves_the_same_batches(data):
  _, d, _, _ = data
  from_start = d.train_batches(0)
  for _ in range(7):
    next(from_start)
  resumed = next(d.train_batches(7))
  expected = next(from_start)
  for key in ('image', 'label'):
    np.testing.assert_array_equal(resumed['private'][key], expected['private'][key])
  np.testing.assert_array_equal(resumed['public']['image'], expected['public']['image'])


def test_evaluation_covers_the_test_set_once_and_masks_the_padding(data):
  config, d, _, test_y = data
  batches = list(d.eval_batches())
  assert all(len(batch['label']) == config.data.eval_batch_size for batch in batches)
  ids = np.concatenate([_ids(batch['image'])[batch['mask']] for batch in batches])
  np.testing.assert_array_equal(ids, 10_000 + np.arange(len(test_y)))
  labels = np.concatenate([batch['label'][batch['mask']] for batch in batches])
  np.testing.assert_array_equal(labels, test_y)
  padded = len(batches) * config.data.eval_batch_size - len(test_y)
  assert padded > 0 and (~batches[-1]['mask']).sum() == padded
