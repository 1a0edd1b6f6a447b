"""Orbax checkpoints of the population, and the run's metadata beside them.

A workdir holds:

    config.json             the run's config; a later run on the workdir is compared to it
    partition.json          dataset facts and the partition: num_classes, image_shape,
                            num_public, and per client its primary classes, size and
                            label counts
    partition_indices.npz   indices into the training split: `client_<i>` and `public`
    checkpoints/<step>/     orbax items `state` (the TrainState: every client's params,
                            batch statistics and optimizer state, and the step) and
                            `meta` (JSON: step, wall_seconds), and `checksums.json`
                            (sha256 and size of every file of both items)
    skipped_checkpoints/    checkpoints that failed verification, moved aside on resume
    .lock                   held (flock) by the run using the workdir: host and pid

`checksums.json` is written on orbax's background thread, after the items are
written and before the step folder is renamed into place, so a finished
checkpoint always has one and the loop never waits for the hashing. A run on
a workdir resumes from the newest checkpoint that verifies (`verify`): newer
ones that do not are named in one line each and moved to
`skipped_checkpoints/`, and the run resumes exactly from the older one. Its
config must equal the saved one except for the fields in `RESUMABLE` (how
long, how often to log and save, where the data lives, how clients are run and
on how many devices and hosts: none changes what a step computes, though `strategy` and
`model.fused_passes` may change the last bits
of the floats). `num_steps` stays fixed under a cosine schedule, whose shape
depends on it.
"""

import errno
import glob
import hashlib
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from absl import logging

from mhd_jax import config_check
from mhd_jax import state as state_lib
from mhd_jax import step as step_lib
from mhd_jax.data import contract as data_contract

RESUMABLE = ('num_steps', 'log_every', 'eval_every', 'checkpoint.every', 'checkpoint.keep',
             'data.data_dir', 'strategy', 'model.fused_passes', 'num_devices',
             'distributed.initialize',
             'distributed.coordinator_address', 'distributed.num_processes',
             'distributed.process_id', 'strategy_measure_steps', 'profile.start_step',
             'profile.num_steps')
SKIPPED = 'skipped_checkpoints'
# What a run writes into its workdir; `--overwrite` removes exactly these.
OUTPUTS = ('checkpoints', 'config.json', 'partition.json', 'partition_indices.npz',
           'metrics.jsonl', 'summary.json', 'per_class.npz', 'report', 'tensorboard', 'profile',
           SKIPPED)
_ITEMS = ('state', 'meta')
CHECKSUMS = 'checksums.json'
_TMP_SUFFIX = '.orbax-checkpoint-tmp'  # orbax's name for a step folder being written


def _file_digests(step_dir: str) -> dict:
  """{relative path: [size, sha256]} of every file of the items in `step_dir`."""
  out = {}
  for item in _ITEMS:
    for root, _, files in os.walk(os.path.join(step_dir, item)):
      for name in sorted(files):
        path = os.path.join(root, name)
        with open(path, 'rb') as f:
          digest = hashlib.sha256(f.read()).hexdigest()
        out[os.path.relpath(path, step_dir)] = [os.path.getsize(path), digest]
  return out


def _write_checksums(directory: str) -> None:
  """Writes checksums.json into the step folder orbax is finalizing (still named *-tmp).

  Orbax calls this on its background thread after the items are written and
  before it renames the folder into place, so the checksums commit with the
  checkpoint. One save is in flight at a time, and a tmp folder left by a
  killed run was removed when the manager was made, so the tmp folder without
  checksums is this save's.
  """
  for step_dir in glob.glob(os.path.join(directory, '*' + _TMP_SUFFIX)):
    path = os.path.join(step_dir, CHECKSUMS)
    if not os.path.exists(path):
      _write_atomic(path, lambda f, d=step_dir: f.write(json.dumps(_file_digests(d)).encode()))


def verify(step_dir: str) -> str | None:
  """Why the checkpoint in `step_dir` cannot be trusted, or None when every file checks out."""
  try:
    with open(os.path.join(step_dir, CHECKSUMS)) as f:
      expected = json.load(f)
  except FileNotFoundError:
    return f'no {CHECKSUMS} (not written by a finished save of this version)'
  except (OSError, ValueError) as e:
    return f'{CHECKSUMS} unreadable ({e})'
  if not expected:
    return f'{CHECKSUMS} lists no files'
  for rel, (size, digest) in sorted(expected.items()):
    path = os.path.join(step_dir, rel)
    if not os.path.isfile(path):
      return f'{rel} is missing'
    if os.path.getsize(path) != size:
      return f'{rel} has {os.path.getsize(path)} bytes, {size} were saved'
    with open(path, 'rb') as f:
      if hashlib.sha256(f.read()).hexdigest() != digest:
        return f'{rel} does not match its sha256'
  return None


def manager(workdir: str, config=None, lead: bool = True) -> ocp.CheckpointManager:
  """The workdir's checkpoint manager; without a config, one to restore from (notebooks).

  With a config, `lead` (process 0) writes each checkpoint's checksums.json.
  """
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if config is None:
    options = ocp.CheckpointManagerOptions(create=False)
  else:
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=config.checkpoint.every or 1, max_to_keep=config.checkpoint.keep,
        cleanup_tmp_directories=True,  # a save cut short by SIGKILL leaves a tmp folder
        async_options=ocp.AsyncOptions(post_finalization_callback=(
            (lambda: _write_checksums(directory)) if lead else None)))
  return ocp.CheckpointManager(directory, options=options, item_names=_ITEMS)


def save(mngr: ocp.CheckpointManager, step: int, state: state_lib.TrainState, wall_seconds: float,
         force: bool = False, extra: dict | None = None) -> bool:
  """Saves (asynchronously) the state at `step`; False when the interval says no.

  `extra` (JSON) joins `meta`: the training loop keeps there the metric sums
  of a log window the checkpoint cuts in two.
  """
  return mngr.save(step, force=force, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      meta=ocp.args.JsonSave({'step': step, 'wall_seconds': wall_seconds, **(extra or {})})))


def abstract_state(specs, image_shape, config=None) -> state_lib.TrainState:
  """Shapes and dtypes of the population's state, without computing it; with teachers that
  lag (`config.dynamics.staleness` >= 1), the lag buffers too (`step.initial_lag`)."""
  tau = data_contract.staleness(config) if config is not None else 0

  def init():
    state = state_lib.init_state(specs, image_shape, jax.random.PRNGKey(0))
    if not tau:
      return state
    publics = jnp.zeros((tau, config.data.public_batch_size, *image_shape), jnp.float32)
    for_each = lambda fn, in_axes: jax.vmap(fn, in_axes=in_axes)
    return state.replace(lag=step_lib.initial_lag(
        state, publics, jnp.ones(sum(s.num_clients for s in specs), bool), specs=specs,
        config=config, for_each=for_each))
  return jax.eval_shape(init)


class CorruptCheckpointError(ValueError):
  """A checkpoint that fails `verify`."""


def restore(mngr: ocp.CheckpointManager, abstract: state_lib.TrainState, step: int | None = None):
  """(state, meta) of checkpoint `step` (default: the latest), verified first.

  Raises:
    CorruptCheckpointError: the checkpoint's files do not match its checksums.
  """
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {mngr.directory}.')
  problem = verify(os.path.join(str(mngr.directory), str(step)))
  if problem:
    raise CorruptCheckpointError(f'checkpoint of step {step} in {mngr.directory}: {problem}.')
  out = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  return out.state, out.meta


def restore_newest_verified(mngr: ocp.CheckpointManager, abstract, lead: bool = True):
  """(state, meta, step) of the newest checkpoint that verifies and restores; None if none exist.

  Each newer checkpoint that fails is named in one warning line and (by
  `lead`) moved to WORKDIR/skipped_checkpoints/, so the run saves that step
  afresh; the manager is reloaded. The caller syncs processes after this.

  Raises:
    config_check.ConfigError: checkpoints exist and none verifies.
  """
  directory = str(mngr.directory)
  skipped = []
  for step in sorted(mngr.all_steps(), reverse=True):
    problem = verify(os.path.join(directory, str(step)))
    if problem is None:
      try:
        out = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except  # any failure: try an older one
        problem = f'restore failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}'
      else:
        if skipped:
          mngr.reload()
        return out.state, out.meta, step
    skipped.append(step)
    aside = os.path.join(os.path.dirname(directory), SKIPPED, str(step))
    logging.warning('skipping the checkpoint of step %d: %s; moved to %s.', step, problem, aside)
    if lead:
      if os.path.exists(aside):
        shutil.rmtree(aside)
      os.makedirs(os.path.dirname(aside), exist_ok=True)
      os.replace(os.path.join(directory, str(step)), aside)
  if skipped:
    raise config_check.ConfigError([
        f'no checkpoint in {directory} verifies (steps {sorted(skipped)} moved to '
        f'{SKIPPED}/); pass --overwrite to start afresh.'])
  return None


def _write_atomic(path: str, write) -> None:
  """`write(file)` to a temporary file, then renames it: a kill never leaves half a file."""
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    write(f)
  os.replace(tmp, path)


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
  _write_atomic(os.path.join(workdir, 'config.json'),
                lambda f: f.write(config.to_json(indent=1, sort_keys=True).encode()))
  text = '{\n' + ',\n'.join(f' {json.dumps(k)}: {json.dumps(v)}' for k, v in facts.items())
  _write_atomic(os.path.join(workdir, 'partition.json'),
                lambda f: f.write((text + '\n}\n').encode()))
  indices = {f'client_{i}': idx for i, idx in enumerate(part.client_indices)}
  _write_atomic(os.path.join(workdir, 'partition_indices.npz'),
                lambda f: np.savez_compressed(f, public=part.public_indices, **indices))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  with open(os.path.join(workdir, 'config.json')) as f:
    return ml_collections.ConfigDict(json.load(f))


def read_partition(workdir: str) -> dict:
  with open(os.path.join(workdir, 'partition.json')) as f:
    return json.load(f)


def config_differences(saved: dict, config) -> list[str]:
  """'field: saved -> new' for every field that may not change when resuming."""
  old, new = config_check.dotted(saved), config_check.dotted(json.loads(config.to_json()))
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
  path = os.path.abspath(workdir)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not os.path.isdir(path):
    return (f'workdir {workdir}: {path} is a file, not a directory; choose another --workdir.')
  if not os.access(path, os.W_OK | os.X_OK):
    return f'workdir {workdir}: {path} is not writable; choose another --workdir.'
  return None


def check_workdir(workdir: str, config, overwrite: bool) -> None:
  """Refuses a workdir that holds a run of another config, unless `overwrite`.

  Raises:
    ConfigError: the workdir is a URL (gs://...), a file or not writable, or
      its config.json is unreadable or differs from `config` in a field not in
      `RESUMABLE`, and `overwrite` is False.
  """
  if '://' in workdir:
    raise config_check.ConfigError([
        f'workdir {workdir} is a URL; the logs and report are written with plain file I/O: '
        'use a local path (a bucket mounted with GCS-FUSE, NFS, ...).'])
  problem = _writable_problem(workdir)
  if problem:
    raise config_check.ConfigError([problem])
  path = os.path.join(workdir, 'config.json')
  if overwrite or not os.path.exists(path):
    return
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise config_check.ConfigError([
        f'workdir {workdir}: config.json is unreadable ({e}); choose another --workdir, or '
        'pass --overwrite to replace that run.']) from None
  diffs = config_differences(saved, config)
  if diffs:
    more = f' and {len(diffs) - 3} more' if len(diffs) > 3 else ''
    raise config_check.ConfigError([
        f'workdir {workdir} holds a run with a different config ({"; ".join(diffs[:3])}{more}); '
        'choose another --workdir, or pass --overwrite to replace that run.'])


def clear_workdir(workdir: str) -> None:
  """Deletes what a run writes into `workdir` (`OUTPUTS`); other files stay."""
  for name in OUTPUTS:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)


class WorkdirLock:
  """An exclusive lock on WORKDIR/.lock (fcntl.flock), held while a run uses the workdir.

  The kernel drops a flock when its process dies, so a lock left by a killed
  run (SIGKILL, OOM) never blocks the resume; the file keeps the holder's host
  and pid only to name it. On a shared filesystem, flock is as good as the
  filesystem's lock support (NFSv4: yes, across hosts; some FUSE mounts: only
  on one host); only process 0 takes it (see docs/durable_runs.md).
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, '.lock')
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
        raise config_check.ConfigError([
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
