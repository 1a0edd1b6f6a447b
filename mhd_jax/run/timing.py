"""Timing the training loop: steps/s over training steps only, and a profiler window.

`StepTimer` keeps compile, restore, evaluation and checkpoint time out of the
logged steps/s; `ProfileWindow` traces a few chosen steps into WORKDIR/profile.
"""

import contextlib
import os
import time

from absl import logging
import jax


def _now() -> float:
  return time.perf_counter()


class StepTimer:
  """Seconds spent in training steps, apart from the rest of the loop.

  `begin_step()` before each step starts the clock (if stopped) and counts the
  step; `pause(x)` waits for `x` (steps run asynchronously) and stops it.
  Pause before anything that is not training (evaluation, checkpoints, logs):
  their time, and compile and restore time before the first step, stay out
  of `take()`'s (steps, seconds) of the window.
  """

  def __init__(self):
    self._since, self._steps, self._seconds = None, 0, 0.0

  def begin_step(self) -> None:
    if self._since is None:
      self._since = _now()
    self._steps += 1

  def pause(self, x) -> None:
    if self._since is not None:
      jax.block_until_ready(x)
      self._seconds += _now() - self._since
      self._since = None

  def take(self) -> tuple[int, float]:
    """(steps, training seconds) since the last `take`; call it paused."""
    window, self._steps, self._seconds = (self._steps, self._seconds), 0, 0.0
    return window


class ProfileWindow:
  """A `jax.profiler` trace of steps `first` .. `first + count - 1` into `logdir`.

  JAX writes `plugins/profile/<time>/<host>.xplane.pb` (TensorBoard's profile
  plugin: `tensorboard --logdir=WORKDIR/profile`, tab "Profile") and beside it
  `<host>.trace.json.gz` or `perfetto_trace.json.gz` (drop it on
  https://ui.perfetto.dev). A run resumed inside the window traces its rest.
  Steps carry `StepTraceAnnotation`s, so the plugin's step view splits them.
  """

  def __init__(self, logdir: str, first: int, count: int):
    self._logdir, self._first, self._last = logdir, first, first + count - 1
    self._on = False
    self._count = count

  def step(self, step: int):
    """Context for one step: starts the trace at the window's first step, annotates its steps."""
    if self._count and not self._on and self._first <= step <= self._last:
      os.makedirs(self._logdir, exist_ok=True)
      jax.profiler.start_trace(self._logdir, create_perfetto_trace=True)
      self._on = True
    if not self._on:
      return contextlib.nullcontext()
    return jax.profiler.StepTraceAnnotation('train', step_num=step)

  def after(self, step: int, x) -> None:
    """Ends the trace after the window's last step, once `x` is computed."""
    if self._on and step >= self._last:
      jax.block_until_ready(x)
      self.close()
      logging.info('profile of steps %d-%d written to %s.', max(self._first, 1), self._last,
                   self._logdir)

  def close(self) -> None:
    if self._on:
      self._on = False
      jax.profiler.stop_trace()
