"""MNIST-1D: generated once and cached, the global RNGs untouched, bad sizes refused in one
line, a short run end to end (tiny datasets); the published models' sizes and what they read."""

import os
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mhd_jax
from configs import default
from mhd_jax import models
from mhd_jax.data import mnist1d
from mhd_jax.models import mnist1d as mnist1d_models
from mhd_jax.placement import clients
from mhd_jax.placement import layout
from mhd_jax.run import config_check
from mhd_jax.run import train
from tests.conftest import short_config
from tests.test_fuzz_config import _check  # pylint: disable=protected-access  # exit 2, one line

TINY = 40  # examples generated: 4 a class, milliseconds


@pytest.fixture(name='cache')
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv('MHD_DATA_CACHE', str(tmp_path))
  return tmp_path


def test_generation_is_deterministic_cached_and_keyed_by_its_arguments(cache, monkeypatch):
  from mnist1d import data as mnist1d_data  # pylint: disable=g-import-not-at-top
  x, y = mnist1d.load(TINY)
  assert x.shape == (TINY, 40, 1) and x.dtype == np.float32 and np.bincount(y).tolist() == [4] * 10
  path = mnist1d.cache_path({**mnist1d.PUBLISHED_ARGS, 'num_samples': TINY})
  assert os.listdir(cache) == [os.path.basename(path)]  # one file, no temporary left
  made = []
  real = mnist1d_data.make_dataset
  monkeypatch.setattr(mnist1d_data, 'make_dataset', lambda args: made.append(args) or real(args))
  x2, y2 = mnist1d.load(TINY)  # read back, not generated
  assert not made
  np.testing.assert_array_equal(x2, x)
  np.testing.assert_array_equal(y2, y)
  os.remove(path)
  x3, _ = mnist1d.load(TINY)  # generated again: the same examples
  np.testing.assert_array_equal(x3, x)
  x4, _ = mnist1d.load(2 * TINY)  # another argument: another file
  assert [a.num_samples for a in made] == [TINY, 2 * TINY] and len(os.listdir(cache)) == 2
  assert not np.array_equal(x4[:TINY], x)


def test_published_arguments_are_the_packages():
  from mnist1d import data as mnist1d_data  # pylint: disable=g-import-not-at-top
  args = mnist1d_data.get_dataset_args(as_dict=True)
  del args['url']  # never read: nothing is downloaded
  assert {**args, 'train_split': 1.0} == mnist1d.PUBLISHED_ARGS


def test_loading_leaves_the_global_generators_as_they_were(cache):
  del cache
  np.random.seed(123)
  random.seed(456)
  np_before, py_before = np.random.get_state(), random.getstate()
  mnist1d.load(TINY)  # generates (a fresh cache), which seeds both generators
  np_after = np.random.get_state()
  assert np_after[0] == np_before[0] and np.array_equal(np_after[1], np_before[1])
  assert np_after[2:] == np_before[2:] and random.getstate() == py_before


BAD = {
    'samples not a multiple of 10': ['--config.data.num_samples=5005'],
    'no samples': ['--config.data.num_samples=0'],
    'test set as large as the data': ['--config.data.num_test=5000'],
    'a 2-D model': ['--config.model.name=cnn'],
}


@pytest.mark.parametrize('name', sorted(BAD))
def test_bad_sizes_and_models_are_refused_in_one_line_before_any_data(name, tmp_path, capfd,
                                                                      monkeypatch):
  monkeypatch.setattr(mnist1d, 'load', lambda n: pytest.fail('data loaded before the checks'))
  _check(['--config.data.name=mnist1d', *BAD[name]], str(tmp_path / 'run'), capfd)


@pytest.mark.parametrize('name', sorted(mnist1d_models.BACKBONES))
def test_the_published_models_take_dp_sgd(name):
  """No batch statistics: each example's gradient is its own, so DP-SGD may clip it."""
  config = short_config(**{'data.name': 'mnist1d', 'model.name': name, 'dp.enabled': True})
  assert config_check.problems(config, num_devices=1) == []


def test_a_short_run_trains_and_reloads(cache, tmp_path):
  """Two clients, 150 training and 50 test examples, 10 steps."""
  del cache
  config = short_config(**{'data.name': 'mnist1d', 'data.num_samples': 200,
                           'data.num_test': 50, 'model.name': 'linear', 'num_clients': 2,
                           'num_heads': 2, 'num_steps': 10, 'data.batch_size': 8,
                           'data.public_batch_size': 8, 'strategy': 'vmap'})
  summary = train.train_and_evaluate(config, str(tmp_path))
  run = mhd_jax.load(str(tmp_path))
  assert run.partition['image_shape'] == [40, 1] and summary['steps'] == 10
  assert len(run.data.train_labels) == 150 and run.data.partition.public_indices.size == 45
  np.testing.assert_allclose(run.accuracies().shared_NxH.mean(0), summary['mean_shared_acc'],
                             atol=1e-6)


# Parameters of the published models (notebooks/models.py), counted with one head.
PUBLISHED = {'linear': 410, 'mnist1d_mlp': 15_210, 'mnist1d_cnn': 5_210, 'mnist1d_gru': 5_134}


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_published_models_have_the_published_parameter_counts(name):
  config = default.get_config().model
  config.name = name
  model = models.make_model(config, num_heads=1, num_classes=10)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((2, 40, 1)),
                                             train=False))['params']
  assert sum(np.prod(p.shape) for p in jax.tree.leaves(params)) == PUBLISHED[name]


def test_the_mlp_adds_its_second_layer_to_its_first():
  """Embedding h + relu(W2 h + b2), h = relu(W1 x + b1): with W2, b2 = 0 it is h itself."""
  mlp = mnist1d_models.MLP()
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 40, 1))
  params = mlp.init(jax.random.PRNGKey(0), x, train=False)['params']
  params['Dense_1'] = jax.tree.map(jnp.zeros_like, params['Dense_1'])
  first = params['Dense_0']
  h = jax.nn.relu(x.reshape(3, 40) @ first['kernel'] + first['bias'])
  np.testing.assert_allclose(mlp.apply({'params': params}, x, train=False), h, rtol=1e-6)
  assert h.shape == (3, 100) and (h > 0).any()


def test_the_gru_reads_both_ways_and_runs_placed_on_a_mesh():
  """A change at position 20 reaches the forward units from 20 on and the backward ones up to
  20; and clients with their own parameters on one shared batch (the public one) run under
  `shard_map`, where a scan's carry must vary over the mesh as the parameters do."""
  gru = mnist1d_models.GRU()
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 40, 1))
  u = jnp.concatenate([x, x.at[:, 20].add(1.0)])
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  stacked = jax.vmap(lambda k: gru.init(k, u, train=False))(keys)
  placed = clients.for_each_client(lambda v, y: gru.apply(v, y, train=False), 'vmap',
                                   mesh=layout.make_mesh(min(2, jax.device_count())),
                                   in_axes=(0, None))
  e_Nx2x480 = np.asarray(jax.jit(placed)(stacked, u))
  assert not np.allclose(e_Nx2x480[0], e_Nx2x480[1])  # each client its own parameters
  for e_2x480 in e_Nx2x480:
    moved = (e_2x480[0] != e_2x480[1]).reshape(40, 12)
    assert np.flatnonzero(moved[:, :6].any(1)).tolist() == list(range(20, 40))
    assert np.flatnonzero(moved[:, 6:].any(1)).tolist() == list(range(0, 21))
