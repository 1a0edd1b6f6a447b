"""MNIST-1D: the published models' sizes and what they read."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from mhd_jax import models
from mhd_jax.models import mnist1d as mnist1d_models
from mhd_jax.placement import clients
from mhd_jax.placement import layout

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


def test_the_gru_reads_forward_and_backward():
  """A change at position 20 reaches the forward units from 20 on, the backward up to 20."""
  gru = mnist1d_models.GRU()
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 40, 1))
  variables = gru.init(jax.random.PRNGKey(0), x, train=False)
  changed = lambda y: np.asarray(gru.apply(variables, y, train=False)).reshape(2, 40, 12)
  moved = np.abs(changed(x.at[:, 20].add(1.0)) - changed(x)).max(axis=0) > 0  # [40, 12]
  assert np.flatnonzero(moved[:, :6].any(1)).tolist() == list(range(20, 40))
  assert np.flatnonzero(moved[:, 6:].any(1)).tolist() == list(range(0, 21))


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


def test_the_gru_runs_on_stacked_clients_placed_on_a_mesh():
  """Clients' own parameters, one shared batch (the public one), under `shard_map`: the
  scan's carry must vary over the mesh as the parameters do."""
  gru = mnist1d_models.GRU()
  u = jax.random.normal(jax.random.PRNGKey(1), (3, 40, 1))
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  stacked = jax.vmap(lambda k: gru.init(k, u, train=False))(keys)
  placed = clients.for_each_client(lambda v, x: gru.apply(v, x, train=False), 'vmap',
                                   mesh=layout.make_mesh(), in_axes=(0, None))
  out = jax.jit(placed)(stacked, u)
  alone = gru.apply(jax.tree.map(lambda p: p[1], stacked), u, train=False)
  np.testing.assert_allclose(out[1], alone, rtol=1e-5, atol=1e-6)
