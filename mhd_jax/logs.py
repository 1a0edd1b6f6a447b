"""Where training records go: `metrics.jsonl` and TensorBoard event files.

Both grow over a run's whole life, across restarts. A run resumed from the
checkpoint of step s redoes the steps after s, so the records the interrupted
process wrote after s are dropped: `metrics.jsonl` keeps exactly its records
with step <= s (and loses a line torn by a kill), and the TensorBoard log gets
a session-start marker at step s + 1, from which TensorBoard drops the earlier
process's points at steps > s. Each step is recorded once, and a resumed
run's records equal an uninterrupted run's (but for the timings).

TensorBoard files are written with TensorBoard's record writer, without
importing TensorFlow (its event-file writer would, to reach `tf.io.gfile`,
which costs seconds per run). Tags: `mean/<metric>` for the mean over clients
and `<metric>/client_<i>` per client; `bytes_sent` counts all bytes sent so far.
"""

import contextlib
import json
import os
import socket
import time

from absl import logging
import jax
import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer import record_writer

from mhd_jax import config_check


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSON-lines file; a torn last line (a killed writer) is skipped."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return records


class JsonlLog:
  """`metrics.jsonl`: one JSON record per line, each with its `step`."""

  def __init__(self, path: str, start_step: int):
    """Keeps the records with step <= start_step (none on a fresh start), then appends."""
    kept = [r for r in read_jsonl(path) if r['step'] <= start_step]
    with open(path + '.tmp', 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
    os.replace(path + '.tmp', path)
    self._file = open(path, 'a')

  def write(self, record: dict) -> None:
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def flat_hparams(config) -> dict:
  """The config as TensorBoard hyperparameters: dotted names, bool/number/str values."""
  return {k: v if isinstance(v, (bool, int, float, str)) else str(v)
          for k, v in config_check.dotted(config.to_dict()).items()}


def per_client(metric: str, values_N) -> dict:
  """Scalars `mean/<metric>` and `<metric>/client_<i>` for a value per client."""
  values_N = np.asarray(values_N, np.float64)
  return {f'mean/{metric}': values_N.mean(),
          **{f'{metric}/client_{i}': v for i, v in enumerate(values_N)}}


def _next_file_time(logdir: str) -> int:
  """Seconds for a new event file's name, later than every file there (TensorBoard reads
  files in name order, and the session-start marker must come after the earlier points)."""
  times = [int(name.split('.')[3]) for name in os.listdir(logdir)
           if name.startswith('events.out.tfevents.') and name.split('.')[3].isdigit()]
  return max([int(time.time())] + [t + 1 for t in times])


class Discard:
  """Stands in for `JsonlLog` and `TensorBoardLog` on processes that write no logs."""

  def write(self, *args) -> None:
    del args

  def close(self) -> None:
    pass


class TensorBoardLog:
  """Scalars per client and their mean, and the config as hyperparameters.

  Writes one event file per session with TensorBoard's record writer, one
  event per step holding all of that step's scalars.
  """

  def __init__(self, logdir: str, start_step: int, config):
    os.makedirs(logdir, exist_ok=True)
    name = (f'events.out.tfevents.{_next_file_time(logdir):010d}.{socket.gethostname()}.'
            f'{os.getpid()}.0')
    self._writer = record_writer.RecordWriter(open(os.path.join(logdir, name), 'wb'))
    self._add(event_pb2.Event(file_version='brain.Event:2'))
    # A session start: from the second on, TensorBoard drops the points of earlier
    # files at steps >= this one (the steps the resumed run redoes).
    self._add(event_pb2.Event(step=start_step + 1, session_log=event_pb2.SessionLog(
        status=event_pb2.SessionLog.START)))
    if start_step == 0:
      trial = os.path.basename(os.path.dirname(os.path.abspath(logdir)))
      self._add(event_pb2.Event(step=0, summary=hparams_summary.hparams_pb(
          flat_hparams(config), trial_id=trial)))
    self._writer.flush()

  def _add(self, event) -> None:
    event.wall_time = time.time()
    self._writer.write(event.SerializeToString())

  def write(self, step: int, scalars: dict) -> None:
    """Writes (and flushes) one event with every scalar of `step`."""
    summary = summary_pb2.Summary()
    for tag, value in scalars.items():
      summary.value.extend(scalar_summary.scalar_pb(tag, float(value)).value)
    self._add(event_pb2.Event(step=step, summary=summary))
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


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
