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
    summary.json            final accuracies and bytes sent (`Summary`)
    per_class.npz           final correct predictions per client, head and class (`PerClass`)
    report/                 plots and report.md (`report.py`)
    .lock                   held (flock) by the run using the workdir: host and pid

Every other module reads and writes these through the functions here. A run
on a workdir resumes from its newest checkpoint that verifies; its config must
equal the saved one except for the fields in `RESUMABLE` (how long, how often
to log and save, where the data lives, how clients are run, on how many
devices and hosts and how many at once: none changes what a step computes,
though `strategy`, `population.resident` and `model.fused_passes` may change
the last bits of the floats). `num_steps`
stays fixed under a cosine schedule, whose shape depends on it. See
docs/durable_runs.md.
"""

import dataclasses
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


# ------------------------------------------------------------------ summary.json


@dataclasses.dataclass(frozen=True)
class ClientSummary:
  """One client's final accuracies (fractions, one per head), bytes it sends per step, and
  under DP its ε at the run's δ (None, and absent from the JSON, without DP)."""
  id: int
  private_acc: list[float]
  shared_acc: list[float]
  bytes_sent_per_step: int
  steps_taken: int | None = None  # steps it took part in (None in summaries from before)
  epsilon: float | None = None  # under DP: its ε at the run's δ


@dataclasses.dataclass(frozen=True)
class Summary:
  """summary.json: the run's final accuracies (fractions, one per head) and communication.

  `mean_*_acc` average over clients; `bytes_sent_per_step` counts all clients
  (the encoded bytes under `config.wire`); `fedavg_bytes_per_round` is what
  FedAvg would send for the same models (0 in summaries written before it was
  recorded). `dp` (DP runs only, else None and absent from the JSON):
  {'delta', 'noise_multiplier', 'clip_norm', 'accountant'}, each client's ε in
  `clients[i].epsilon`.
  """
  num_clients: int
  num_heads: int
  steps: int
  wall_seconds: float
  mean_private_acc: list[float]
  mean_shared_acc: list[float]
  clients: list[ClientSummary]
  bytes_sent_per_step: int
  fedavg_bytes_per_round: int = 0
  dp: dict | None = None

  @classmethod
  def create(cls, config, acc, sent_N, fedavg_N, wall_seconds: float, steps_N=None,
             epsilons_N=None, dp: dict | None = None) -> 'Summary':
    """From the final `evaluate.Accuracies`, the bytes each client sends (step, round), the
    steps each took part in, and under DP each client's ε and the `dp` block."""
    steps = [None] * config.num_clients if steps_N is None else [int(t) for t in steps_N]
    eps = [None] * config.num_clients if epsilons_N is None else [float(e) for e in epsilons_N]
    return cls(
        num_clients=config.num_clients, num_heads=config.num_heads, steps=config.num_steps,
        wall_seconds=wall_seconds,
        mean_private_acc=acc.private_NxH.mean(0).tolist(),
        mean_shared_acc=acc.shared_NxH.mean(0).tolist(),
        clients=[ClientSummary(i, acc.private_NxH[i].tolist(), acc.shared_NxH[i].tolist(),
                               int(round(sent_N[i])), steps[i], eps[i])
                 for i in range(config.num_clients)],
        bytes_sent_per_step=int(round(sent_N.sum())),
        fedavg_bytes_per_round=int(fedavg_N.sum()), dp=dp)

  def to_json(self) -> dict:
    """The JSON object of summary.json (its keys in this order; optional fields that are None,
    as in summaries written before they existed or without DP, are left out)."""
    out = dataclasses.asdict(self)
    if self.dp is None:
      del out['dp']
    for c in out['clients']:
      for key in ('steps_taken', 'epsilon'):
        if c[key] is None:
          del c[key]
    return out

  @classmethod
  def from_json(cls, obj: dict) -> 'Summary':
    return cls(**{**obj, 'clients': [ClientSummary(**c) for c in obj['clients']]})


def write_summary(workdir: str, summary: Summary) -> None:
  checkpoint.write_atomic(path(workdir, SUMMARY),
                lambda f: f.write(json.dumps(summary.to_json(), indent=1).encode()))


def read_summary(workdir: str) -> Summary:
  """summary.json of a finished run (FileNotFoundError before the run ends)."""
  with open(path(workdir, SUMMARY)) as f:
    return Summary.from_json(json.load(f))


# ------------------------------------------------------------------ per_class.npz


@dataclasses.dataclass(frozen=True)
class PerClass:
  """per_class.npz: the final evaluation per class, for studies finer than summary.json."""
  correct_NxHxC: np.ndarray  # correct predictions of client i's head k on test class c
  count_C: np.ndarray        # test examples per class
  primary_NxC: np.ndarray    # bool: client i owns class c


def write_per_class(workdir: str, per_class: PerClass) -> None:
  checkpoint.write_atomic(path(workdir, PER_CLASS),
                lambda f: np.savez(f, **dataclasses.asdict(per_class)))


def read_per_class(workdir: str) -> PerClass:
  with np.load(path(workdir, PER_CLASS)) as z:
    return PerClass(**{f.name: z[f.name] for f in dataclasses.fields(PerClass)})


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
