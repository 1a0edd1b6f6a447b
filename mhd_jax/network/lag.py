"""Teachers that lag tau steps: a ring buffer of the public outputs clients sent.

Public batches are keyed by step, so a client can compute now what a receiver
will read tau steps later. At step t (1-based; the clients hold theta_{t-1}):

    sent_N, outputs = read_and_push(buffer, t, ahead, active_N)

where `ahead` are the clients' outputs with theta_{t-1} on the public batch of
step t + tau (the one extra public forward), and `outputs` are those they
computed at step t - tau with theta_{t-tau-1} on the public batch of step t:
the lagged candidates for this step's targets, each usable only where `sent_N`
(the sender was active when it computed them). The slot of public batch b is
b % tau, so a step reads and refills the same slot and the buffer holds tau
slots, no more; no pointer is kept, the step number says where everything is.
Before step 1 the buffer is filled (`push` of batches 1 .. tau) with the
initial models' outputs, so steps t <= tau see a lag of t - 1.

Every leaf is [N, tau, ...], client axis first like the `Group` leaves, so the
buffer is padded and sharded on the client axis like the rest of the state
and is saved with it for an exact resume (docs/dynamics.md).
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class LagBuffer:
  outputs: Any          # pytree, leaves [N, tau, ...]: outputs on the public batch of a slot
  sent_NxT: jax.Array   # bool [N, tau]: the client was active when it computed the slot


def staleness(buffer: LagBuffer) -> int:
  """tau, from the buffer's shape (static)."""
  return buffer.sent_NxT.shape[1]


def empty(outputs_like: Any, tau: int) -> LagBuffer:
  """A buffer of tau >= 1 slots for outputs shaped like `outputs_like` (leaves [N, ...])."""
  if tau < 1:
    raise ValueError(f'lag.empty: tau must be >= 1 (tau = 0 needs no buffer), got {tau}.')
  zeros = lambda x: jnp.zeros((x.shape[0], tau) + x.shape[1:], x.dtype)
  n = jax.tree.leaves(outputs_like)[0].shape[0]
  return LagBuffer(outputs=jax.tree.map(zeros, outputs_like),
                   sent_NxT=jnp.zeros((n, tau), bool))


def _slot(buffer: LagBuffer, batch_step) -> jax.Array:
  return jnp.asarray(batch_step, jnp.int32) % staleness(buffer)


def push(buffer: LagBuffer, batch_step, outputs: Any, sent_N) -> LagBuffer:
  """Stores outputs (leaves [N, ...]) on the public batch of step `batch_step`."""
  i = _slot(buffer, batch_step)
  put = lambda buf, x: jax.lax.dynamic_update_index_in_dim(buf, x.astype(buf.dtype), i, axis=1)
  return LagBuffer(outputs=jax.tree.map(put, buffer.outputs, outputs),
                   sent_NxT=put(buffer.sent_NxT, jnp.asarray(sent_N, bool)))


def read(buffer: LagBuffer, batch_step) -> tuple[jax.Array, Any]:
  """(sent_N, outputs with leaves [N, ...]) stored for the public batch of step `batch_step`."""
  i = _slot(buffer, batch_step)
  get = lambda buf: jax.lax.dynamic_index_in_dim(buf, i, axis=1, keepdims=False)
  return get(buffer.sent_NxT), jax.tree.map(get, buffer.outputs)


def read_and_push(buffer: LagBuffer, step, ahead: Any, active_N) -> tuple[jax.Array, Any,
                                                                          LagBuffer]:
  """(sent_N, outputs, buffer) at training step `step`, in the one safe order.

  Reads what was sent for this step's public batch, then stores `ahead` (the
  clients' outputs now on the batch of step + tau, sent where `active_N`) in
  the slot just read; pushing first would overwrite it.
  """
  sent_N, outputs = read(buffer, step)
  return sent_N, outputs, push(buffer, step + staleness(buffer), ahead, active_N)


def nbytes(num_clients: int, tau: int, num_heads: int, public_batch: int, num_classes: int,
           embedding_dim: int = 0, bytes_per_value: int = 4) -> int:
  """Bytes of a buffer of logits [N, tau, H, B_pub, C] (plus embeddings [N, tau, B_pub, D]
  when embedding distillation is on) and its flags [N, tau]."""
  values = num_clients * tau * public_batch * (num_heads * num_classes + embedding_dim)
  return values * bytes_per_value + num_clients * tau
