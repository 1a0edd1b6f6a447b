"""Tests for mhd_jax/network/lag.py: the lagged outputs are those of the tau-steps-old models on this
step's public batch, with the senders' activity, through jit and a resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mhd_jax.network import lag

N, H, B, C, D = 3, 2, 4, 5, 6


def _outputs(theta_N, batch_step):
  """A stand-in for the clients' public outputs: a known function of (parameters, batch)."""
  base = theta_N * 1000.0 + jnp.float32(batch_step)
  return {'logits': jnp.broadcast_to(base[:, None, None, None], (N, H, B, C)),
          'embedding': jnp.broadcast_to(base[:, None, None] + 0.5, (N, B, D)).astype(jnp.bfloat16)}


def _theta(t):
  """The clients' parameters after t steps (distinct per client and step)."""
  return jnp.arange(N, dtype=jnp.float32) * 100.0 + t


def _active(t):
  return (t * 7 + jnp.arange(N) * 3) % 4 != 0  # traced or not


def _filled(tau):
  buffer = lag.empty(_outputs(_theta(0), 0), tau)
  for b in range(1, tau + 1):  # the initial models' outputs on the batches of steps 1 .. tau
    buffer = lag.push(buffer, b, _outputs(_theta(0), b), jnp.ones(N, bool))
  return buffer


def _step(buffer, t):
  """Step t: the lagged candidates, and the buffer with theta_{t-1}'s outputs on batch t + tau."""
  ahead = _outputs(_theta(t - 1), t + lag.staleness(buffer))
  return lag.read_and_push(buffer, t, ahead, _active(t))


@pytest.mark.parametrize('tau', [1, 2, 5])
def test_targets_are_the_tau_steps_old_models_on_this_steps_batch(tau):
  buffer = _filled(tau)
  assert lag.staleness(buffer) == tau
  for t in range(1, 4 * tau + 4):
    sent, got, buffer = _step(buffer, t)
    old = max(t - tau - 1, 0)  # theta_{t-tau-1}; the initial models for t <= tau
    jax.tree.map(np.testing.assert_array_equal, got, _outputs(_theta(old), t))
    np.testing.assert_array_equal(sent, _active(t - tau) if t > tau else np.ones(N, bool))


def test_buffer_shapes_are_client_first_and_keep_dtypes():
  buffer = _filled(3)
  assert buffer.outputs['logits'].shape == (N, 3, H, B, C)
  assert buffer.outputs['embedding'].shape == (N, 3, B, D)
  assert buffer.outputs['embedding'].dtype == jnp.bfloat16 and buffer.sent_NxT.shape == (N, 3)
  assert lag.nbytes(N, 3, H, B, C, D, 4) == (
      sum(x.size * 4 for x in jax.tree.leaves(buffer.outputs)) + buffer.sent_NxT.size)


def test_traced_step_compiles_once_and_resume_is_exact():
  tau, traces = 3, []

  def counted(buffer, t):
    traces.append(t)
    return _step(buffer, t)

  jitted = jax.jit(counted)
  buffer, results = _filled(tau), []
  for t in range(1, 13):
    sent, got, buffer = jitted(buffer, jnp.int32(t))
    results.append((sent, got))
    if t == 6:  # a checkpoint: the buffer's arrays and the step, nothing else
      saved = jax.tree.map(np.asarray, buffer)
  assert len(traces) == 1
  resumed = jax.tree.map(jnp.asarray, saved)
  for t in range(7, 13):
    sent, got, resumed = jitted(resumed, jnp.int32(t))
    np.testing.assert_array_equal(sent, results[t - 1][0])
    jax.tree.map(np.testing.assert_array_equal, got, results[t - 1][1])


def test_tau_zero_needs_no_buffer():
  with pytest.raises(ValueError, match='tau must be >= 1'):
    lag.empty(_outputs(_theta(0), 0), 0)
