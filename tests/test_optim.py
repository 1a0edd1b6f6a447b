"""The optimizer factory against hand-computed updates: warm-up, cosine decay, gradient clipping,
and a step of the population that sets `optimizer.grad_clip`."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import default
from mhd_jax.network import topology
from mhd_jax.population import groups
from mhd_jax.population import optim
from mhd_jax.population import state as state_lib
from mhd_jax.run import programs


def _opt(**overrides):
  """Plain SGD at learning rate 1 (no momentum, decay, warm-up or clipping), then `overrides`."""
  return ml_collections.ConfigDict(dict(
      name='sgd', learning_rate=1.0, momentum=0.0, weight_decay=0.0, schedule='constant',
      warmup_steps=0, grad_clip=0.0) | overrides)


def _rates(tx, steps: int) -> list[float]:
  """The learning rate of each step: plain SGD moves a zero parameter by -lr on a unit gradient."""
  params = jnp.zeros(1)
  state, rates = tx.init(params), []
  for _ in range(steps):
    updates, state = tx.update(jnp.ones(1), state, params)
    rates.append(-float(updates[0]))
  return rates


def test_constant_schedule_warms_up_linearly_then_holds():
  tx = optim.make_optimizer(_opt(warmup_steps=4), num_steps=100)
  np.testing.assert_allclose(_rates(tx, 6), [0.0, 0.25, 0.5, 0.75, 1.0, 1.0], atol=1e-7)
  np.testing.assert_allclose(_rates(optim.make_optimizer(_opt(), 100), 2), [1.0, 1.0])


def test_cosine_schedule_warms_up_then_decays_to_zero_at_num_steps():
  # Warm-up over 2 steps, then 0.5 (1 + cos(pi k / 4)) over the 4 steps left of num_steps = 6.
  tx = optim.make_optimizer(_opt(schedule='cosine', warmup_steps=2), num_steps=6)
  c = 0.5 * (1 + np.cos(np.pi / 4))  # 0.8536
  np.testing.assert_allclose(_rates(tx, 7), [0.0, 0.5, 1.0, c, 0.5, 1 - c, 0.0], atol=1e-6)
  tx = optim.make_optimizer(_opt(schedule='cosine', learning_rate=2.0), num_steps=4)
  np.testing.assert_allclose(_rates(tx, 4), [2.0, 2 * c, 1.0, 2 * (1 - c)], atol=1e-6)


@pytest.mark.parametrize('grad, update', [
    # |g| = 5 > 1: clipped to [0.6, 0.8] before the decay 0.5 * p is added; lr 0.5.
    ([3.0, 4.0], [-0.55, -0.65]),
    # |g| = 0.5 < 1: unchanged.
    ([0.3, 0.4], [-0.4, -0.45]),
])
def test_sgd_clips_the_gradient_by_its_global_norm_before_weight_decay(grad, update):
  tx = optim.make_optimizer(_opt(learning_rate=0.5, weight_decay=0.5, grad_clip=1.0), 10)
  params = {'a': jnp.ones(1), 'b': jnp.ones(1)}  # the global norm spans both leaves
  g = {'a': jnp.array([grad[0]]), 'b': jnp.array([grad[1]])}
  u, _ = tx.update(g, tx.init(params), params)
  np.testing.assert_allclose([u['a'][0], u['b'][0]], update, rtol=1e-6)


def test_adam_sees_the_clipped_gradients():
  """adamw with grad_clip = adamw fed gradients clipped by hand, over steps where the clip bites
  and where it does not (Adam's first step alone cannot tell: it normalises the scale away)."""
  config = _opt(name='adam', learning_rate=0.1, grad_clip=1.0)
  tx, plain = optim.make_optimizer(config, 10), optax.adamw(0.1, weight_decay=0.0)
  params = jnp.ones(2)
  s, s_plain, s_unclipped = tx.init(params), plain.init(params), plain.init(params)
  for g in ([3.0, 4.0], [0.3, -0.4], [-6.0, 8.0]):
    g = jnp.array(g)
    clipped = g * min(1.0, 1.0 / float(jnp.linalg.norm(g)))
    u, s = tx.update(g, s, params)
    want, s_plain = plain.update(clipped, s_plain, params)
    unclipped, s_unclipped = plain.update(g, s_unclipped, params)
    np.testing.assert_allclose(u, want, rtol=1e-5)
  assert not np.allclose(u, unclipped, rtol=1e-3)  # the clip mattered


def test_a_step_with_grad_clip_moves_every_client_by_exactly_lr_times_the_clip():
  """The population's step with `optimizer.grad_clip` (plain SGD): each client's parameters move
  by lr * clip in global norm, its own gradient clipped on its own (not the stack's)."""
  config = default.get_config()
  config.num_clients = 3
  config.model.width, config.model.depth = 8, 1
  config.optimizer.update(_opt(learning_rate=0.1, grad_clip=1e-3))
  specs = groups.make_specs(config, 10)
  state = state_lib.init_state(specs, (8, 8, 1), jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  batch = {'private': {'image': rng.random((3, 32, 8, 8, 1), np.float32),
                       'label': rng.integers(10, size=(3, 32)).astype(np.int32)},
           'public': {'image': rng.random((64, 8, 8, 1), np.float32)}}
  step = jax.jit(programs.make_train_step(specs, topology.complete(3).toarray(), config))
  moved = lambda new: np.sqrt(sum(
      np.sum((np.asarray(a) - np.asarray(b)) ** 2, axis=tuple(range(1, np.ndim(a))))
      for a, b in zip(jax.tree.leaves(new.groups[0].params),
                      jax.tree.leaves(state.groups[0].params))))
  new, _ = step(state, batch, jax.random.PRNGKey(1))
  np.testing.assert_allclose(moved(new), [0.1 * 1e-3] * 3, rtol=1e-4)
  config.optimizer.grad_clip = 0.0  # without the clip every client moves much further
  specs = groups.make_specs(config, 10)
  free, _ = jax.jit(programs.make_train_step(specs, topology.complete(3).toarray(), config))(
      state, batch, jax.random.PRNGKey(1))
  assert (moved(free) > 100 * 0.1 * 1e-3).all()
