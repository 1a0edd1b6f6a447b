"""The data package: its shape (one registry, no cycle, no TensorFlow for digits), and the
digits pipeline followed example by example.

For the latter `_load_digits` is replaced by one whose images hold their own index
in every pixel (labels, split and partition stay the real ones), so a batch says
exactly which examples it drew.
"""

import ast
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import default
from mhd_jax import data as data_lib
from mhd_jax.data import contract
from mhd_jax.data import digits
from mhd_jax.run import config_check
from mhd_jax.run import data_check
from tests.conftest import ROOT, short_config

REAL_LOAD = digits._load_digits  # pylint: disable=protected-access
REAL_PERMUTATION = contract.permutation


@pytest.fixture(scope='module')
def data():
  (train_x, train_y), (test_x, test_y) = REAL_LOAD(0, 0.25)
  ids = lambda n, offset: np.broadcast_to(np.arange(offset, offset + n, dtype=np.float32)
                                          [:, None, None, None], (n, 8, 8, 1))
  tagged = ((ids(len(train_y), 0), train_y), (ids(len(test_y), 10_000), test_y))
  with pytest.MonkeyPatch.context() as m:
    m.setattr(digits, '_load_digits', lambda seed, fraction: tagged)
    config = short_config(**{'data.batch_size': 16, 'data.public_batch_size': 24,
                             'data.eval_batch_size': 128})
    yield config, digits.digits(config), train_y, test_y


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


@pytest.mark.parametrize('batch_size', [1, 5, 32])
def test_streams_are_each_streams_epoch_indices_in_any_step_order(batch_size, monkeypatch):
  """`Streams` (every client at once, an epoch's permutation kept while a batch may need it)
  against `epoch_indices` (one stream at a time): pools shorter and longer than a batch,
  steps forwards, backwards and repeated; a pool of 100 draws its permutation once an epoch."""
  ids, sizes = np.array([5, 0, 9, 2, 7, 1, 4, 3]), np.array([1, 2, 3, 7, 31, 32, 33, 100])
  streams = contract.Streams(3, ids, sizes, batch_size)
  for step in [0, 1, 2, 40, 3, 3, 41, 1000, 999, 0] + list(range(5, 25)):
    want = [data_lib.epoch_indices(3, i, step, p, batch_size) for i, p in zip(ids, sizes)]
    np.testing.assert_array_equal(streams.positions(step), np.stack(want))
  drawn = []
  monkeypatch.setattr(contract, 'permutation', lambda *a: drawn.append(a) or REAL_PERMUTATION(*a))
  streams = contract.Streams(3, [3], [100], batch_size)
  for step in range(100 // batch_size):  # one epoch
    streams.positions(step)
  assert drawn == [(3, 3, 0, 100)]
  with pytest.raises(ValueError, match='stream 9 has no examples'):
    contract.Streams(0, [8, 9], [4, 0], 2)


def test_with_no_public_set_the_public_batch_is_zeros_and_one_client_holds_all():
  """public_fraction = 0, allowed where nothing distils (the MNIST-1D external check)."""
  config = short_config(**{'num_clients': 1, 'num_heads': 1, 'topology': 'none',
                           'public_fraction': 0.0, 'dynamics.staleness': 2})
  assert config_check.problems(config, num_devices=1) == []
  d = data_lib.get_data(config)
  data_check.validate_partition(d.partition, config)
  assert [len(p) for p in d.partition.client_indices] == [len(d.train_labels)]
  batch = next(d.train_batches(3))
  for key in ('public', 'public_ahead'):
    assert batch[key]['image'].shape == (64, 8, 8, 1) and not batch[key]['image'].any()


def _digest(tree) -> str:
  h = hashlib.sha256()
  for k in sorted(tree):
    h.update(k.encode())
    h.update(_digest(tree[k]).encode() if isinstance(tree[k], dict)
             else np.ascontiguousarray(tree[k]).tobytes())
  return h.hexdigest()[:16]


def test_batches_are_those_of_the_pre_package_pipeline(monkeypatch):
  """Digests of step 7 of the default config (all clients; clients 1 and 3), taken from
  `input_pipeline.py` before it became this package: same (seed, step), same batch."""
  monkeypatch.setattr(digits, '_load_digits', REAL_LOAD)  # the module fixture may tag images
  config = default.get_config()
  assert _digest(next(data_lib.get_data(config).train_batches(7))) == '3246f59fe5b75696'
  assert _digest(next(data_lib.get_data(config, [1, 3]).train_batches(7))) == '6fc18a0154d8ec8e'
  (_, train_y), (_, test_y) = REAL_LOAD(0, 0.25)
  assert len(train_y) + len(test_y) == digits.NUM_EXAMPLES  # what config_check counts on


def test_dispatch_and_validation_read_one_registry_of_dataset_names(monkeypatch):
  config = short_config(**{'data.name': 'toy'})
  served = object()
  monkeypatch.setitem(data_lib.EMBEDDED, 'toy', lambda c, ids: (served, c.data.name, ids))
  assert data_lib.get_data(config, [2]) == (served, 'toy', [2])
  assert data_check.dataset_problem('toy') is None  # pylint: disable=protected-access
  monkeypatch.delitem(data_lib.EMBEDDED, 'toy')
  problem = data_check.dataset_problem('toy')  # pylint: disable=protected-access
  assert problem.startswith("unknown dataset 'toy'") and "'digits'" in problem


def test_dataset_modules_import_no_package_init_so_nothing_cycles():
  """Only `__init__` imports the package; the modules beneath it import `contract` (or each
  other), never `mhd_jax.data` itself, which dispatches to them."""
  folder = os.path.join(ROOT, 'mhd_jax', 'data')
  for name in sorted(os.listdir(folder)):
    if not name.endswith('.py') or name == '__init__.py':
      continue
    with open(os.path.join(folder, name)) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        assert 'mhd_jax.data' not in [a.name for a in node.names], name
      elif isinstance(node, ast.ImportFrom):
        assert not (node.module == 'mhd_jax' and 'data' in [a.name for a in node.names]), name
        assert not (node.level and node.module is None), f'{name}: relative import of the package'


_DIGITS_WITHOUT_TF = r"""
import importlib, sys
from configs import default
from mhd_jax import data
from mhd_jax.run import config_check
config = default.get_config()
config_check.validate(config)
next(data.get_data(config).train_batches(0))
loaded = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'tensorflow_datasets'})
assert not loaded, f'the digits path loaded {loaded}'
for first in ('mhd_jax.data.tfds_data', 'mhd_jax.data.prepare', 'mhd_jax.data.digits',
              'mhd_jax.data.contract', 'mhd_jax.run.config_check', 'mhd_jax.run.train'):
  for m in [m for m in sys.modules if m.startswith('mhd_jax')]:
    del sys.modules[m]
  importlib.import_module(first)  # each module can be the first one imported
print('ok')
"""


def test_digits_never_loads_tensorflow_and_any_module_can_be_imported_first():
  out = subprocess.run([sys.executable, '-c', _DIGITS_WITHOUT_TF], cwd=ROOT, text=True,
                       capture_output=True, timeout=300, check=False)
  assert out.returncode == 0 and out.stdout.strip().endswith('ok'), out.stderr[-2000:]
