"""Orbax checkpoints of the population, and the run's metadata beside them.

A workdir holds:

    config.json             the run's config; a later run on the workdir is compared to it
    partition.json          dataset facts and the partition: num_classes, image_shape,
                            num_public, and per client its primary classes, size and
                            label counts
    partition_indices.npz   indices into the training split: `client_<i>` and `public`
    checkpoints/<step>/     orbax items `state` (the TrainState: every client's params,
                            batch statistics and optimizer state, and the step) and
                            `meta` (JSON: step, wall_seconds)

A run on a workdir that holds checkpoints resumes from the latest one. Its
config must equal the saved one except for the fields in `RESUMABLE` (how
long, how often to log and save, where the data lives, how clients are run and
on how many devices and hosts: none changes what a step computes, though `strategy` may change the last bits
of the floats). `num_steps` stays fixed under a cosine schedule, whose shape
depends on it.
"""

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from mhd_jax import config_check
from mhd_jax import population as pop

RESUMABLE = ('num_steps', 'log_every', 'eval_every', 'checkpoint.every', 'checkpoint.keep',
             'data.data_dir', 'strategy', 'num_devices', 'distributed.initialize',
             'distributed.coordinator_address', 'distributed.num_processes',
             'distributed.process_id', 'strategy_measure_steps', 'profile.start_step',
             'profile.num_steps')
# What a run writes into its workdir; `--overwrite` removes exactly these.
OUTPUTS = ('checkpoints', 'config.json', 'partition.json', 'partition_indices.npz',
           'metrics.jsonl', 'summary.json', 'per_class.npz', 'report', 'tensorboard', 'profile')
_ITEMS = ('state', 'meta')


def manager(workdir: str, config=None) -> ocp.CheckpointManager:
  """The workdir's checkpoint manager; without a config, one to restore from (notebooks)."""
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if config is None:
    options = ocp.CheckpointManagerOptions(create=False)
  else:
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=config.checkpoint.every or 1, max_to_keep=config.checkpoint.keep,
        cleanup_tmp_directories=True)  # a save cut short by SIGKILL leaves a tmp folder
  return ocp.CheckpointManager(directory, options=options, item_names=_ITEMS)


def save(mngr: ocp.CheckpointManager, step: int, state: pop.TrainState, wall_seconds: float,
         force: bool = False, extra: dict | None = None) -> bool:
  """Saves (asynchronously) the state at `step`; False when the interval says no.

  `extra` (JSON) joins `meta`: the training loop keeps there the metric sums
  of a log window the checkpoint cuts in two.
  """
  return mngr.save(step, force=force, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      meta=ocp.args.JsonSave({'step': step, 'wall_seconds': wall_seconds, **(extra or {})})))


def abstract_state(specs, image_shape) -> pop.TrainState:
  """Shapes and dtypes of the population's state, without computing it."""
  return jax.eval_shape(lambda: pop.init_state(specs, image_shape, jax.random.PRNGKey(0)))


def restore(mngr: ocp.CheckpointManager, abstract: pop.TrainState, step: int | None = None):
  """(state, meta) of checkpoint `step` (default: the latest)."""
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {mngr.directory}.')
  out = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  return out.state, out.meta


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
          if k not in allowed and old.get(k, absent) != new.get(k, absent)]


def check_workdir(workdir: str, config, overwrite: bool) -> None:
  """Refuses a workdir that holds a run of another config, unless `overwrite`.

  Raises:
    ConfigError: the workdir is a URL (gs://...), or its config.json differs from `config` in a field
      not in `RESUMABLE`, and `overwrite` is False.
  """
  if '://' in workdir:
    raise config_check.ConfigError([
        f'workdir {workdir} is a URL; the logs and report are written with plain file I/O: '
        'use a local path (a bucket mounted with GCS-FUSE, NFS, ...).'])
  path = os.path.join(workdir, 'config.json')
  if overwrite or not os.path.exists(path):
    return
  with open(path) as f:
    diffs = config_differences(json.load(f), config)
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
