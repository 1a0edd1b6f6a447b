"""Where a run's outputs live in its workdir, and their types: the one owner of the layout.

A workdir holds:

    config.json             the run's config; a later run on the workdir is compared to it
    partition.json          dataset facts and the partition: num_classes, image_shape,
                            num_public, and per client its primary classes, size and
                            label counts
    partition_indices.npz   indices into the training split: `client_<i>` and `public`
    checkpoints/<step>/     the population (format: `checkpoint.py`)
    skipped_checkpoints/    checkpoints that failed verification, moved aside on resume
    metrics.jsonl           one JSON record per log and eval step (`writers.py`)
    tensorboard/            TensorBoard event files (`writers.py`)
    profile/                a `jax.profiler` trace, when `profile.num_steps` > 0
    summary.json            final accuracies and bytes sent (`summary.Summary`)
    per_class.npz           final correct predictions per client, head and class
                            (`summary.PerClass`)
    report/                 plots and report.md (`report.py`)
    .lock                   held (flock) by the run using the workdir: host and pid

Every other module reads and writes these through the functions here (the final
results through `summary`). A run on a workdir resumes from its newest
checkpoint that verifies; its config must equal the saved one except for the
fields in `RESUMABLE` (how long, how often to log and save, where the data
lives, how clients are run, on how many devices and hosts and how many at once:
none changes what a step computes, though `strategy`, `population.resident`
and `model.fused_passes` may change the last bits of the floats). `num_steps`
stays fixed under a cosine schedule, whose shape depends on it. See
docs/durable_runs.md.
"""

import errno
import json
import math
import os
import shutil

from absl import logging
import ml_collections
import numpy as np

from mhd_jax import config_base
from mhd_jax.outputs import checkpoint

CONFIG = 'config.json'
PARTITION = 'partition.json'
PARTITION_INDICES = 'partition_indices.npz'
CHECKPOINTS = 'checkpoints'
METRICS = 'metrics.jsonl'
TENSORBOARD = 'tensorboard'
PROFILE = 'profile'
SUMMARY = 'summary.json'
PER_CLASS = 'per_class.npz'
REPORT = 'report'
LOCK = '.lock'
# What a run writes into its workdir; `--overwrite` removes exactly these.
OUTPUTS = (CHECKPOINTS, CONFIG, PARTITION, PARTITION_INDICES, METRICS, SUMMARY, PER_CLASS,
           REPORT, TENSORBOARD, PROFILE, checkpoint.SKIPPED)
# What a finished run has written (a study reuses such a run).
FINAL = (SUMMARY, PER_CLASS, METRICS)
RESUMABLE = ('num_steps', 'log_every', 'eval_every', 'checkpoint.every', 'checkpoint.keep',
             'data.data_dir', 'strategy', 'model.fused_passes', 'num_devices',
             'distributed.initialize',
             'distributed.coordinator_address', 'distributed.num_processes',
             'distributed.process_id', 'strategy_measure_steps', 'profile.start_step',
             'profile.num_steps', 'population.resident')


def path(workdir: str, name: str) -> str:
  """WORKDIR/name, for one of the names above (`METRICS`, `REPORT`, ...)."""
  return os.path.join(workdir, name)


def finished(workdir: str) -> bool:
  """The workdir holds a finished run's final outputs (`FINAL`)."""
  return all(os.path.exists(path(workdir, name)) for name in FINAL)


# ------------------------------------------------------------------ metrics.jsonl


def read_jsonl(file: str) -> list[dict]:
  """The records of a JSON-lines file; a torn last line (a killed writer) is skipped."""
  if not os.path.exists(file):
    return []
  records = []
  with open(file) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return records


def read_metrics(workdir: str) -> list[dict]:
  """metrics.jsonl's records: training every log_every steps, and evaluations."""
  return read_jsonl(path(workdir, METRICS))


# ------------------------------------------------------------------ config and partition


def write_metadata(workdir: str, config, data) -> None:
  """Writes config.json, partition.json and partition_indices.npz (see the module doc)."""
  part = data.partition
  facts = {
      'num_classes': int(data.num_classes),
      'image_shape': [int(d) for d in data.image_shape],
      'num_public': len(part.public_indices),
      'primary_classes': [c.tolist() for c in part.primary_classes],
      'client_sizes': [len(idx) for idx in part.client_indices],
      'label_counts': part.label_counts(data.train_labels).tolist(),
  }
  checkpoint.write_atomic(path(workdir, CONFIG),
                lambda f: f.write(config.to_json(indent=1, sort_keys=True).encode()))
  text = '{\n' + ',\n'.join(f' {json.dumps(k)}: {json.dumps(v)}' for k, v in facts.items())
  checkpoint.write_atomic(path(workdir, PARTITION), lambda f: f.write((text + '\n}\n').encode()))
  indices = {f'client_{i}': idx for i, idx in enumerate(part.client_indices)}
  checkpoint.write_atomic(path(workdir, PARTITION_INDICES),
                lambda f: np.savez_compressed(f, public=part.public_indices, **indices))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  with open(path(workdir, CONFIG)) as f:
    return ml_collections.ConfigDict(json.load(f))


def read_partition(workdir: str) -> dict:
  with open(path(workdir, PARTITION)) as f:
    return json.load(f)


def checkpoint_manager(workdir: str, config=None, lead: bool = True):
  """The manager of WORKDIR/checkpoints (`checkpoint.manager`); no config: restore only."""
  return checkpoint.manager(path(os.path.abspath(workdir), CHECKPOINTS), config, lead)


# ------------------------------------------------------------------ using a workdir


def _defaults() -> dict:
  """configs/default.py's fields, dotted ({} where the configs package cannot be imported)."""
  try:
    from configs import default  # pylint: disable=g-import-not-at-top
  except ImportError:
    return {}
  return config_base.dotted(json.loads(default.get_config().to_json()))


def config_differences(saved: dict, config) -> list[str]:
  """'field: saved -> new' for every field that may not change when resuming.

  A field the saved config lacks (one added to mhd_jax after the run began) is
  unchanged when the new config holds its default: every field added later
  defaults to the behaviour the code had before it.
  """
  old, new = config_base.dotted(saved), config_base.dotted(json.loads(config.to_json()))
  defaults = _defaults()
  old.update({k: v for k, v in new.items() if k not in old and k in defaults
              and _same(v, defaults[k])})
  allowed = set(RESUMABLE)
  if new.get('optimizer.schedule') == 'cosine':
    allowed.discard('num_steps')
  absent = '<absent>'
  return [f'{k}: {old.get(k, absent)!r} -> {new.get(k, absent)!r}'
          for k in sorted(old.keys() | new.keys())
          if k not in allowed and not _same(old.get(k, absent), new.get(k, absent))]


def _same(a, b) -> bool:
  """Equal, counting NaN equal to NaN (JSON keeps a NaN field as NaN; NaN != NaN)."""
  nan = lambda x: isinstance(x, float) and math.isnan(x)
  return a == b or (nan(a) and nan(b))


def _writable_problem(workdir: str) -> str | None:
  """Why `workdir` cannot be written to (it, or its nearest existing parent), or None."""
  parent = os.path.abspath(workdir)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    return (f'workdir {workdir}: {parent} is a file, not a directory; choose another --workdir.')
  if not os.access(parent, os.W_OK | os.X_OK):
    return f'workdir {workdir}: {parent} is not writable; choose another --workdir.'
  return None


def check_workdir(workdir: str, config, overwrite: bool) -> None:
  """Refuses a workdir that holds a run of another config, unless `overwrite`.

  Raises:
    ConfigError: the workdir is a URL (gs://...), a file or not writable, or
      its config.json is unreadable or differs from `config` in a field not in
      `RESUMABLE`, and `overwrite` is False.
  """
  if '://' in workdir:
    raise config_base.ConfigError([
        f'workdir {workdir} is a URL; the logs and report are written with plain file I/O: '
        'use a local path (a bucket mounted with GCS-FUSE, NFS, ...).'])
  problem = _writable_problem(workdir)
  if problem:
    raise config_base.ConfigError([problem])
  file = path(workdir, CONFIG)
  if overwrite or not os.path.exists(file):
    return
  try:
    with open(file) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise config_base.ConfigError([
        f'workdir {workdir}: config.json is unreadable ({e}); choose another --workdir, or '
        'pass --overwrite to replace that run.']) from None
  diffs = config_differences(saved, config)
  if diffs:
    more = f' and {len(diffs) - 3} more' if len(diffs) > 3 else ''
    raise config_base.ConfigError([
        f'workdir {workdir} holds a run with a different config ({"; ".join(diffs[:3])}{more}); '
        'choose another --workdir, or pass --overwrite to replace that run.'])


def clear_workdir(workdir: str) -> None:
  """Deletes what a run writes into `workdir` (`OUTPUTS`); other files stay."""
  for name in OUTPUTS:
    target = path(workdir, name)
    if os.path.isdir(target):
      shutil.rmtree(target)
    elif os.path.exists(target):
      os.remove(target)


class WorkdirLock:
  """An exclusive lock on WORKDIR/.lock (fcntl.flock), held while a run uses the workdir.

  The kernel drops a flock when its process dies, so a lock left by a killed
  run (SIGKILL, OOM) never blocks the resume; the file keeps the holder's host
  and pid only to name it. On a shared filesystem, flock is as good as the
  filesystem's lock support (NFSv4: yes, across hosts; some FUSE mounts: only
  on one host); only process 0 takes it (see docs/durable_runs.md).
  """

  def __init__(self, workdir: str):
    self.path = path(workdir, LOCK)
    self._fd = None

  def acquire(self) -> None:
    """Takes the lock, or raises ConfigError naming the run that holds it."""
    import fcntl  # pylint: disable=g-import-not-at-top  # POSIX only
    import socket  # pylint: disable=g-import-not-at-top
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.read(fd, 200).decode(errors='replace').strip() or 'another process'
      os.close(fd)
      if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise config_base.ConfigError([
            f'workdir {os.path.dirname(self.path)} is in use by a running run ({holder}); '
            'wait for it to end or choose another --workdir.']) from None
      if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # e.g. some FUSE mounts
        logging.warning('the filesystem of %s cannot lock (%s): nothing keeps a second run off '
                        'this workdir.', self.path, e.strerror)
        return
      raise
    os.ftruncate(fd, 0)
    os.write(fd, f'host {socket.gethostname()} pid {os.getpid()}\n'.encode())
    self._fd = fd

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing drops the flock; the file stays (harmless)
      self._fd = None
