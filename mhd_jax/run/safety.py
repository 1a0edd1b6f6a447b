"""What stops a run cleanly: non-finite values and SIGTERM (preemption).

- A non-finite loss or state raises `NonFiniteLossError` naming the first
  step and the clients; no checkpoint of a bad state is ever written.
- SIGTERM makes the loop save the current step and raise `Preempted`; on
  several hosts JAX's preemption service catches it and every process saves
  at the same step (orbax `reached_preemption`).
"""

import signal
import threading

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from mhd_jax.outputs import checkpoint
from mhd_jax.placement import layout as layout_lib
from mhd_jax.population import state as state_lib


class NonFiniteLossError(FloatingPointError):
  """A loss term became NaN or Inf; the message names the step and the clients."""


class Preempted(Exception):
  """SIGTERM arrived; the state of `step` was checkpointed."""

  def __init__(self, step: int):
    self.step = step
    super().__init__(f'preempted (SIGTERM) at step {step}; its checkpoint is saved.')


def finite_per_client(state: state_lib.TrainState):
  """[stacked] True where every parameter, batch statistic and optimizer value is finite."""
  per_group = []
  for group in state.groups:
    leaves = [x for x in jax.tree.leaves(group) if jnp.issubdtype(x.dtype, jnp.inexact)]
    n = leaves[0].shape[0]
    per_group.append(jnp.all(jnp.stack([jnp.isfinite(x).reshape(n, -1).all(1) for x in leaves]),
                             axis=0))
  return jnp.concatenate(per_group)


def make_state_check(layout: layout_lib.Layout):
  """Jitted `state -> [N] finite` over the real clients, replicated (every host reads it).

  Run where the loop syncs (log steps, before every save, the last step),
  not every step: a pass over every parameter and optimizer value costs as
  much as a third of the default config's step. Nothing is missed between
  checks: a non-finite parameter or optimizer value makes the next step's
  loss non-finite, which the per-step watch records; so the step named is
  exact, but for a non-finite batch statistic, which only evaluation reads
  (then: "by" that step).
  """
  real = jnp.asarray(layout.real_clients())
  return jax.jit(lambda state: finite_per_client(state)[real], out_shardings=layout.replicated)


def check_finite(first_bad_N, mngr, state_finite_N, step: int) -> None:
  """Raises NonFiniteLossError if a loss so far, or the state after `step`, is not finite."""
  bad = np.asarray(jax.device_get(first_bad_N))
  bad = np.where((bad == 0) & ~np.asarray(jax.device_get(state_finite_N)), step, bad)
  if bad.any():
    step = int(bad[bad > 0].min())
    checkpoint.wait(mngr)  # the latest save may still be in flight
    latest = mngr.latest_step()
    kept = (f'the last finite checkpoint (step {latest}) is kept in {mngr.directory}'
            if latest is not None else 'no checkpoint was saved')
    raise NonFiniteLossError(
        f'non-finite loss or parameters at step {step} in clients '
        f'{np.flatnonzero(bad == step).tolist()}; the run stops and {kept}.')


class SigtermWatch:
  """While active, SIGTERM sets `requested` instead of killing the process.

  On several processes JAX's preemption service owns SIGTERM instead (it was
  installed by `jax.distributed.initialize`): `stop_at(step)` asks orbax
  whether all processes have reached the step at which they agreed to stop.
  That agreement is over the steps done in this session (every process starts
  from the same checkpoint): a notice that arrives before the first step,
  while the run restores or compiles, has them stop after that step.
  """

  def __init__(self, mngr, start_step: int, outer=None):
    self._mngr, self._start, self._outer = mngr, start_step, outer
    self._multi = jax.process_count() > 1 and jax.config.jax_enable_preemption_service

  def stop_at(self, step: int) -> bool:
    if self._multi and not self.requested:
      self.requested = self._mngr.reached_preemption(step - self._start)
      if self.requested:
        logging.warning('preemption notice: every process saves step %d, then stops.', step)
    return self.requested

  def __enter__(self):
    # A SIGTERM caught by the `outer` watch (start-up: data, restore, init) stops after step 1.
    self.requested, self._previous = bool(self._outer and self._outer.requested), None
    if threading.current_thread() is threading.main_thread() and not self._multi:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM: saving a checkpoint after this step, then stopping.')
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def stop_if_terminated(watch, step: int) -> None:
  """Raises `Preempted` if SIGTERM came once the final checkpoint (of `step`) was saved."""
  if watch.requested:
    raise Preempted(step)
