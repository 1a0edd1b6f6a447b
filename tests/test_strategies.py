"""Client-parallel strategies: the same step whatever the strategy; what each gives XLA."""

import jax
import numpy as np
import pytest

from mhd_jax.placement import clients
from mhd_jax.population import state as state_lib
from mhd_jax.run import programs
from tests import test_step as ts


def compiled_step(specs, config, strategy):
  step = jax.jit(programs.make_train_step(specs, ts.ADJ, config, strategy))
  state = state_lib.init_state(specs, ts.IMAGE, jax.random.PRNGKey(0))
  return step.lower(state, ts.make_batch(0), jax.random.PRNGKey(7)).compile().as_text()


def test_hybrid_strategy_equals_vmap():
  config, specs, batches = ts.distill_config(), ts.make_specs('cnn'), [ts.make_batch(s)
                                                                      for s in range(2)]
  a, ma = ts.run_steps(specs, ts.ADJ, config, batches, 'vmap')
  b, mb = ts.run_steps(specs, ts.ADJ, config, batches, 'hybrid')
  ts.assert_trees_close(a.groups[0], b.groups[0], rtol=1e-5, atol=1e-6)
  ts.assert_trees_close(ma, mb, rtol=1e-5, atol=1e-6)


def test_hybrid_writes_convolutions_out_per_client_and_vmap_groups_them():
  """The point of 'hybrid': no grouped convolution (slow on CPU) reaches XLA."""
  config, specs = ts.distill_config(), ts.make_specs('cnn')
  convs = lambda hlo: [l for l in hlo.splitlines() if ' convolution(' in l]
  vmapped, hybrid = (convs(compiled_step(specs, config, s)) for s in ('vmap', 'hybrid'))
  assert any('feature_group_count=3' in l or 'batch_group_count=3' in l for l in vmapped)
  assert not any('group_count' in l for l in hybrid)
  assert len(hybrid) >= ts.N * 2  # at least the private and public forward conv of each client


def test_auto_strategy_per_backend_and_model():
  assert clients.resolve_strategy('auto', 'cpu', convolutions=True) == 'loop'
  assert clients.resolve_strategy('auto', 'cpu', convolutions=False) == 'vmap'
  assert clients.resolve_strategy('auto', 'tpu', convolutions=True) == 'vmap'
  assert clients.resolve_strategy('auto', 'gpu', convolutions=True) == 'vmap'
  assert clients.resolve_strategy('hybrid', 'tpu') == 'hybrid'
  with pytest.raises(ValueError, match='unknown strategy .pmap.*auto, vmap, hybrid, loop'):
    clients.resolve_strategy('pmap')
  # On this (CPU) backend: the models decide.
  assert clients.strategy_for('auto', ts.make_specs('cnn'), ts.IMAGE) == 'loop'
  assert clients.strategy_for('auto', ts.make_specs('mlp'), ts.IMAGE) == 'vmap'
  assert clients.strategy_for('hybrid', ts.make_specs('mlp'), ts.IMAGE) == 'hybrid'


def test_auto_in_map_clients_picks_by_the_function(monkeypatch):
  seen, resolve = [], clients.resolve_strategy
  monkeypatch.setattr(clients, 'resolve_strategy',
                      lambda s, **kw: seen.append(kw['convolutions']) or resolve(s, **kw))
  conv = lambda w, x: jax.lax.conv(x, w, (1, 1), 'SAME')
  dense = lambda w, x: x.reshape(1, -1) @ w
  w, x = np.ones((2, 1, 1, 3, 3), np.float32), np.ones((2, 1, 1, 4, 4), np.float32)
  np.testing.assert_allclose(clients.map_clients(conv, 'auto', w, x),
                             clients.map_clients(conv, 'vmap', w, x))
  assert clients.map_clients(dense, 'auto', np.ones((2, 16, 3)), x).shape == (2, 1, 3)
  assert seen == [True, False]  # the convolution went to 'loop', the matmul to 'vmap'
  assert not clients.uses_convolutions(dense, np.ones((16, 2)), x[0])


@pytest.mark.parametrize('strategy', ['vmap', 'hybrid', 'loop'])
def test_map_clients_slices_mapped_args_and_shares_the_rest(strategy):
  xs = {'a': np.arange(6.0).reshape(3, 2)}
  shared = np.array([10.0, 20.0])
  out = clients.map_clients(lambda x, s: (x['a'] * s).sum(), strategy, xs, shared,
                        in_axes=(0, None))
  np.testing.assert_allclose(out, [20.0, 80.0, 140.0])


@pytest.mark.parametrize('strategy', ['vmap', 'hybrid', 'loop'])
def test_map_clients_keeps_the_callers_containers(strategy):
  xs = [np.ones((3, 2)), 2 * np.ones((3, 2))]  # a list of per-client arrays (3 clients)
  out = clients.map_clients(lambda a: a[0].sum() + 10 * a[1].sum(), strategy, xs)
  np.testing.assert_allclose(out, [42.0, 42.0, 42.0])
  # An empty per-client state first (an MLP's batch_stats is {}).
  out = clients.map_clients(lambda s, a: a[0].sum(), strategy, {}, xs)
  np.testing.assert_allclose(out, [2.0, 2.0, 2.0])
  with pytest.raises(ValueError, match='in_axes must be 0 or None'):
    clients.map_clients(lambda a: a, strategy, np.ones((3, 2)), in_axes=1)
