"""Where training records go: one `MetricWriter` per process, as CLU's `clu.metric_writers`.

`create(workdir, lead, config, start_step)` gives process 0 a `MultiWriter`
over `metrics.jsonl` and TensorBoard, and every other process a `NoOpWriter`,
so the loop writes without asking which process it is on. The two files
keep different views of the same numbers:

- `metrics.jsonl` keeps `write_record`s: one JSON record per log or eval step,
  nested (per-client lists, the eval's accuracy tables), for `workdir.read_metrics`.
- TensorBoard keeps `write_scalars` and `write_hparams`: tags `mean/<metric>`
  for the mean over clients and `<metric>/client_<i>` per client (`per_client`; up to
  `TAG_CLIENTS` clients: 10,000 clients' tags took 14 s per log step);
  `bytes_sent` counts all bytes sent so far.

Both grow over a run's whole life, across restarts. A run resumed from the
checkpoint of step s redoes the steps after s, so the records the interrupted
process wrote after s are dropped: `metrics.jsonl` keeps exactly its records
with step <= s (and loses a line torn by a kill), and the TensorBoard log gets
a session-start marker at step s + 1, from which TensorBoard drops the earlier
process's points at steps > s. Each step is recorded once, and a resumed
run's records equal an uninterrupted run's (but for the timings).

TensorBoard files are written with TensorBoard's record writer, without
importing TensorFlow (its event-file writer would, to reach `tf.io.gfile`,
which costs seconds per run). Every write is flushed: a killed run loses no
record it wrote.
"""

import json
import os
import socket
import time
from typing import Any, Mapping, Sequence

import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer import record_writer

from mhd_jax import config_base
from mhd_jax.outputs import workdir as wd


class MetricWriter:
  """The interface (CLU's names), and a writer that keeps nothing: non-lead processes use it.

  Subclasses override what they keep; each says which records those are.
  """

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Scalars of one step, by tag."""
    del step, scalars

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """The run's hyperparameters (bool, number or str values)."""
    del hparams

  def write_record(self, record: Mapping[str, Any]) -> None:
    """One structured record (JSON, with its `step`): a log or eval step of metrics.jsonl."""
    del record

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


NoOpWriter = MetricWriter


class MultiWriter(MetricWriter):
  """Passes every call to each of `writers`."""

  def __init__(self, writers: Sequence[MetricWriter]):
    self._writers = tuple(writers)

  def write_scalars(self, step, scalars) -> None:
    for w in self._writers:
      w.write_scalars(step, scalars)

  def write_hparams(self, hparams) -> None:
    for w in self._writers:
      w.write_hparams(hparams)

  def write_record(self, record) -> None:
    for w in self._writers:
      w.write_record(record)

  def flush(self) -> None:
    for w in self._writers:
      w.flush()

  def close(self) -> None:
    for w in self._writers:
      w.close()


class JsonlWriter(MetricWriter):
  """metrics.jsonl: keeps the `write_record`s, one JSON record per line, each with its `step`."""

  def __init__(self, file: str, start_step: int):
    """Keeps the records with step <= start_step (none on a fresh start), then appends."""
    kept = [r for r in wd.read_jsonl(file) if r['step'] <= start_step]
    with open(file + '.tmp', 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
    os.replace(file + '.tmp', file)
    self._file = open(file, 'a')

  def write_record(self, record) -> None:
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def _next_file_time(logdir: str) -> int:
  """Seconds for a new event file's name, later than every file there (TensorBoard reads
  files in name order, and the session-start marker must come after the earlier points)."""
  times = [int(name.split('.')[3]) for name in os.listdir(logdir)
           if name.startswith('events.out.tfevents.') and name.split('.')[3].isdigit()]
  return max([int(time.time())] + [t + 1 for t in times])


class TensorBoardWriter(MetricWriter):
  """Keeps the scalars (one event per step, holding all of it) and the hyperparameters.

  One event file per session, named after every earlier one; it starts with a
  session-start marker at `start_step + 1`.
  """

  def __init__(self, logdir: str, start_step: int):
    os.makedirs(logdir, exist_ok=True)
    name = (f'events.out.tfevents.{_next_file_time(logdir):010d}.{socket.gethostname()}.'
            f'{os.getpid()}.0')
    self._trial = os.path.basename(os.path.dirname(os.path.abspath(logdir)))
    self._writer = record_writer.RecordWriter(open(os.path.join(logdir, name), 'wb'))
    self._add(event_pb2.Event(file_version='brain.Event:2'))
    # A session start: from the second on, TensorBoard drops the points of earlier
    # files at steps >= this one (the steps the resumed run redoes).
    self._add(event_pb2.Event(step=start_step + 1, session_log=event_pb2.SessionLog(
        status=event_pb2.SessionLog.START)))
    self._writer.flush()

  def _add(self, event) -> None:
    event.wall_time = time.time()
    self._writer.write(event.SerializeToString())

  def write_hparams(self, hparams) -> None:
    """At step 0, with the workdir's name as the trial id."""
    self._add(event_pb2.Event(step=0, summary=hparams_summary.hparams_pb(
        dict(hparams), trial_id=self._trial)))
    self._writer.flush()

  def write_scalars(self, step, scalars) -> None:
    summary = summary_pb2.Summary()
    for tag, value in scalars.items():
      summary.value.extend(scalar_summary.scalar_pb(tag, float(value)).value)
    self._add(event_pb2.Event(step=step, summary=summary))
    self._writer.flush()

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def flat_hparams(config) -> dict:
  """The config as TensorBoard hyperparameters: dotted names, bool/number/str values."""
  return {k: v if isinstance(v, (bool, int, float, str)) else str(v)
          for k, v in config_base.dotted(config.to_dict()).items()}


TAG_CLIENTS = 100  # per-client TensorBoard tags up to this many clients (each costs ~0.2 ms)


def per_client(metric: str, values_N) -> dict:
  """Scalars `mean/<metric>` and `<metric>/client_<i>` for a value per client; above
  `TAG_CLIENTS` clients the mean only (metrics.jsonl keeps every client's value)."""
  values_N = np.asarray(values_N, np.float64)
  each = enumerate(values_N) if len(values_N) <= TAG_CLIENTS else ()
  return {f'mean/{metric}': values_N.mean(), **{f'{metric}/client_{i}': v for i, v in each}}


def create(workdir: str, lead: bool, config, start_step: int) -> MetricWriter:
  """The process's writer for a run (re)starting after `start_step` (0: a fresh run).

  `lead` (process 0): metrics.jsonl and TensorBoard in `workdir`, the config
  as hyperparameters on a fresh run; any other process: a `NoOpWriter`.
  """
  if not lead:
    return NoOpWriter()
  writer = MultiWriter([JsonlWriter(wd.path(workdir, wd.METRICS), start_step),
                        TensorBoardWriter(wd.path(workdir, wd.TENSORBOARD), start_step)])
  if start_step == 0:
    writer.write_hparams(flat_hparams(config))
  return writer
