"""The checkpoint format: orbax items of the population, with checksums, verified on restore.

A checkpoint folder `<step>/` (under WORKDIR/checkpoints, see `workdir.py`) holds
the orbax items `state` (the TrainState: every client's params, batch
statistics and optimizer state, and the step) and `meta` (JSON: step,
wall_seconds), and `checksums.json` (sha256 and size of every file of both
items).

`checksums.json` is written on orbax's background thread, after the items are
written and before the step folder is renamed into place, so a finished
checkpoint always has one and the loop never waits for the hashing. A run on
a workdir resumes from the newest checkpoint that verifies (`verify`): newer
ones that do not are named in one line each and moved to
`skipped_checkpoints/` beside the checkpoints, and the run resumes exactly
from the older one (docs/durable_runs.md). A save that fails, when it is made
or on orbax's background thread, raises `SaveError` in one line.
"""

import contextlib
import glob
import hashlib
import json
import os
import shutil
import threading
import time

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from absl import logging

from mhd_jax import config_base
from mhd_jax.algorithm import step as step_lib
from mhd_jax.data import contract as data_contract
from mhd_jax.population import state as state_lib

SKIPPED = 'skipped_checkpoints'
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
      write_atomic(path, lambda f, d=step_dir: f.write(json.dumps(_file_digests(d)).encode()))


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


def manager(directory: str, config=None, lead: bool = True) -> ocp.CheckpointManager:
  """The checkpoint manager of `directory` (absolute); without a config, one to restore from.

  With a config, `lead` (process 0) writes each checkpoint's checksums.json.
  Callers get it from `workdir.checkpoint_manager`, which knows where it lives.
  """
  if config is None:
    options = ocp.CheckpointManagerOptions(create=False)
  else:
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=config.checkpoint.every or 1, max_to_keep=config.checkpoint.keep,
        cleanup_tmp_directories=True,  # a save cut short by SIGKILL leaves a tmp folder
        async_options=ocp.AsyncOptions(post_finalization_callback=(
            (lambda: _write_checksums(directory)) if lead else None)))
  return ocp.CheckpointManager(directory, options=options, item_names=_ITEMS)


class SaveError(RuntimeError):
  """A checkpoint could not be saved; the message is one line (the cause is chained)."""


def _failed(what: str, error: Exception, started: set) -> SaveError:
  """The `SaveError` of a failed save, once the threads it started have had time to end.

  A save that fails part-way leaves orbax threads running (creating the step
  folder, then signalling it): one still alive when the interpreter exits
  blocks the exit, its peer waiting up to orbax's 300 s for a signal that never
  comes. They end in milliseconds when given the time; a thread of orbax that
  lives on (its metadata store's worker) costs the wait's bound once.
  """
  deadline = time.time() + 5.0
  for thread in set(threading.enumerate()) - started:
    while time.time() < deadline:
      try:
        thread.join(max(0.0, deadline - time.time()))
        break
      except RuntimeError:  # started but not running yet: joinable in a moment
        time.sleep(0.01)
  message = ' '.join(str(error).split())[:300] or type(error).__name__
  return SaveError(f'{what} failed: {type(error).__name__}: {message}')


def save(mngr: ocp.CheckpointManager, step: int, state: state_lib.TrainState, wall_seconds: float,
         force: bool = False, extra: dict | None = None) -> bool:
  """Saves (asynchronously) the state at `step`; False when the interval says no.

  `extra` (JSON) joins `meta`: the training loop keeps there the metric sums
  of a log window the checkpoint cuts in two.

  Raises:
    SaveError: this save, or the one before it (`wait`), failed.
  """
  wait(mngr)  # orbax would too, but a failure of the last save is not this step's
  started = set(threading.enumerate())
  try:
    return mngr.save(step, force=force, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave({'step': step, 'wall_seconds': wall_seconds, **(extra or {})})))
  except Exception as e:  # pylint: disable=broad-except  # any failure ends the run in one line
    raise _failed(f'saving the checkpoint of step {step} in {mngr.directory}', e, started) from e


def wait(mngr: ocp.CheckpointManager) -> None:
  """Waits for the save in flight, if any.

  Raises:
    SaveError: it failed (its commit on orbax's background thread).
  """
  started = set(threading.enumerate())
  try:
    mngr.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    raise _failed(f'saving a checkpoint in {mngr.directory}', e, started) from e


def close(mngr: ocp.CheckpointManager) -> None:
  """Waits for the save in flight (`wait`), then closes the manager."""
  try:
    wait(mngr)
  except SaveError:
    with contextlib.suppress(Exception):  # closing may raise the same failure: said once
      mngr.close()
    raise
  mngr.close()


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
    config_base.ConfigError: checkpoints exist and none verifies.
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
    raise config_base.ConfigError([
        f'no checkpoint in {directory} verifies (steps {sorted(skipped)} moved to '
        f'{SKIPPED}/); pass --overwrite to start afresh.'])
  return None


def write_atomic(path: str, write) -> None:
  """`write(file)` to a temporary file, then renames it: a kill never leaves half a file."""
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    write(f)
  os.replace(tmp, path)
