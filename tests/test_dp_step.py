"""DP-SGD inside the stacked step: the private CE's gradient clipped per example and noised per
client, the distillation terms' gradient added as is."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mhd_jax.algorithm import step as step_lib
from mhd_jax.population import state as state_lib
from mhd_jax.run import programs
from tests.test_step import (ADJ, C, IMAGE, N, assert_trees_close, distill_config, make_batch,
                             make_specs, run_steps)


def _dp(config, noise, clip):
  config = config.copy_and_resolve_references()
  config.dp = ml_collections.ConfigDict(dict(enabled=True, noise_multiplier=noise,
                                             clip_norm=clip, delta=1e-5))
  return config


def test_zero_noise_and_infinite_clipping_is_the_plain_step():
  """Bypasses config_check (which refuses both values): the step alone, three steps."""
  config, specs = distill_config('confidence_weighted', include_self=True), make_specs()
  batches = [make_batch(s) for s in range(3)]
  plain, m0 = run_steps(specs, ADJ, config, batches)
  dp, m1 = run_steps(specs, ADJ, _dp(config, 0.0, float('inf')), batches)
  assert_trees_close(dp, plain, rtol=1e-5, atol=1e-6)
  assert_trees_close(m1, m0, rtol=1e-5, atol=1e-6)
  assert np.all(m0.kd_main > 0) and np.all(m0.kd_aux > 0)  # distillation took part


def test_a_clients_noised_update_ignores_the_other_clients_private_data():
  config, specs = _dp(distill_config('confidence_weighted'), 1.0, 0.5), make_specs()
  adjacency = np.ones((N, N), np.float32) - np.eye(N)
  batch = make_batch(0)
  other = jax.tree.map(np.copy, batch)
  other['private']['image'][1] = np.random.default_rng(1).normal(
      size=other['private']['image'][1].shape)
  other['private']['label'][1] = (other['private']['label'][1] + 1) % C
  state = state_lib.init_state(specs, IMAGE, jax.random.PRNGKey(0))
  step = jax.jit(programs.make_train_step(specs, adjacency, config))
  a, _ = step(state, batch, jax.random.PRNGKey(0))
  b, _ = step(state, other, jax.random.PRNGKey(0))
  for i in range(N):
    same = jax.tree.map(lambda x, y: bool(np.array_equal(x[i], y[i])), a.groups, b.groups)
    assert all(jax.tree.leaves(same)) == (i != 1), f'client {i}'
  # The noise is there, and differs between clients: a noiseless step moves elsewhere.
  quiet, _ = jax.jit(programs.make_train_step(specs, adjacency, _dp(config, 0.0, 0.5)))(
      state, batch, jax.random.PRNGKey(0))
  diff = jax.tree.map(lambda x, y: x - y, a.groups[0].params, quiet.groups[0].params)
  d0, d1 = (np.concatenate([np.ravel(x[i]) for x in jax.tree.leaves(diff)]) for i in (0, 1))
  assert np.linalg.norm(d0) > 1e-3 and not np.allclose(d0, d1)


def test_each_example_is_clipped_on_a_constructed_batch():
  """No distillation, no noise, SGD at learning rate 1: the update is -mean_b clip_C(g_b), with
  g_b from per-example gradients written out here (not privacy's ghost norms)."""
  config = _dp(distill_config(), 0.0, 2.0)
  config.nu_main = config.nu_aux = config.nu_emb = 0.0
  (spec,) = make_specs()
  specs = (state_lib.GroupSpec(spec.model, optax.sgd(1.0), N),)
  batch = make_batch(0)
  batch['private']['image'][:, 0] *= 40.0  # one example per client far beyond the clip norm
  batch['private']['image'][:, 1] *= 1e-3  # and one well within it
  state = state_lib.init_state(specs, IMAGE, jax.random.PRNGKey(0))
  new, _ = jax.jit(programs.make_train_step(specs, ADJ, config))(
      state, batch, jax.random.PRNGKey(0))

  def one(params, x, y):
    return step_lib.per_example_ce(spec.model, params, x[None], y[None])[0]
  norms = []
  for i in range(N):
    params = jax.tree.map(lambda x: x[i], state.groups[0].params)
    g_B = jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(
        params, batch['private']['image'][i], batch['private']['label'][i])
    norm_B = jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, 1)
                          for g in jax.tree.leaves(g_B)))
    f_B = jnp.minimum(1.0, 2.0 / norm_B)
    expected = jax.tree.map(lambda p, g: p - jnp.tensordot(f_B, g, 1) / g.shape[0], params, g_B)
    assert_trees_close(jax.tree.map(lambda x: x[i], new.groups[0].params), expected,
                       rtol=1e-5, atol=1e-7)
    norms.append(norm_B)
  norms = np.stack(norms)
  assert np.all(norms[:, 0] > 2.0) and np.all(norms[:, 1] < 2.0)  # both sides of the clip
