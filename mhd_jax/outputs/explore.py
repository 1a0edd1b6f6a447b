"""A finished (or interrupted) run, loaded for study: `mhd_jax.load(workdir)`.

    run = mhd_jax.load('/tmp/mhd_default')    # the latest checkpoint
    run.config.num_heads, run.step, run.adjacency
    run.predict(client=2, head=1, images=x)    # [B] predicted classes
    run.logits(client=2, images=x)             # [H, B, C]
    acc = run.accuracies()                     # evaluate.Accuracies on the eval split
    acc.private_NxH, acc.shared_NxH, acc.per_class()   # [N, H], [N, H], [N, H, C]
    run.client_accuracy(2)                     # {'private': [H], 'shared': [H]}
    run.metrics(), run.summary()               # metrics.jsonl records, summary.Summary

Everything comes from the workdir: the config and dataset facts written
beside the checkpoints, and the checkpoint itself. Nothing is re-stated.
"""

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from mhd_jax import data as data_lib
from mhd_jax.algorithm import evaluate
from mhd_jax.data import partition as partition_lib
from mhd_jax.network import topology
from mhd_jax.outputs import checkpoint
from mhd_jax.outputs import summary as summary_lib
from mhd_jax.outputs import workdir as wd
from mhd_jax.placement import clients
from mhd_jax.population import groups as groups_lib
from mhd_jax.population import state as state_lib


@dataclasses.dataclass
class Run:
  """A population restored from a workdir, with per-client helpers.

  Attributes:
    workdir: where it was loaded from.
    config: the run's config (`config.json`).
    step: the step of the loaded checkpoint.
    state: the population's TrainState (clients stacked per group).
    specs: the population's groups (model, optimizer, size).
    adjacency: [N, N], A[i, j] > 0 when client i learns from client j: a numpy array up to
      `DENSE_CLIENTS` clients, above them a scipy.sparse csr_array (`.toarray()` is 4 N^2
      bytes).
    partition: dataset facts and the partition (`partition.json`): num_classes,
      image_shape, primary_classes, client_sizes, label_counts.
  """
  workdir: str
  config: Any
  step: int
  state: state_lib.TrainState
  specs: tuple
  adjacency: Any
  partition: dict
  _cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

  @property
  def num_clients(self) -> int:
    return self.config.num_clients

  def primary_mask(self) -> np.ndarray:
    """[N, C] bool: client i owns class c."""
    return partition_lib.primary_mask(self.partition['primary_classes'],
                                      self.partition['num_classes'])

  def logits(self, client: int, images) -> np.ndarray:
    """[H, B, C] logits of every head of `client` on images [B, ...] (eval mode)."""
    g, one = state_lib.client_slice(self.state, self.specs, client)
    logits, _ = self._apply(g)({'params': one.params, 'batch_stats': one.batch_stats},
                               np.asarray(images, np.float32))
    return np.asarray(logits)

  def predict(self, client: int, head: int, images) -> np.ndarray:
    """[B] classes that head `head` of `client` predicts for images [B, ...]."""
    return self.logits(client, images)[head].argmax(-1)

  def _apply(self, group: int):
    key = ('apply', group)
    if key not in self._cache:
      self._cache[key] = jax.jit(functools.partial(self.specs[group].model.apply, train=False))
    return self._cache[key]

  @functools.cached_property
  def data(self) -> data_lib.Data:
    """The run's dataset and partition (built again from the config)."""
    return data_lib.get_data(self.config)

  def accuracies(self) -> evaluate.Accuracies:
    """Private and shared accuracy of every client and head on the evaluation split."""
    if 'accuracies' not in self._cache:
      for_each = lambda fn, in_axes: clients.for_each_client(fn, self.config.strategy,
                                                             in_axes=in_axes)
      predict = jax.jit(evaluate.make_predict(self.specs, for_each))
      self._cache['accuracies'] = evaluate.accuracies(
          predict, self.state, self.data.eval_batches(), self.primary_mask())
    return self._cache['accuracies']

  def client_accuracy(self, client: int) -> dict:
    """{'private': [H], 'shared': [H]} accuracies of one client's heads."""
    acc = self.accuracies()
    return {'private': acc.private_NxH[client].tolist(),
            'shared': acc.shared_NxH[client].tolist()}

  def metrics(self) -> list[dict]:
    """The records of metrics.jsonl (training every log_every steps, and evaluations)."""
    return wd.read_metrics(self.workdir)

  def summary(self) -> summary_lib.Summary | None:
    """summary.json, or None if the run has not finished."""
    try:
      return summary_lib.read_summary(self.workdir)
    except FileNotFoundError:
      return None


DENSE_CLIENTS = 2000  # `Run.adjacency` is dense up to this many clients (16 MB)


def load(workdir: str, step: int | None = None) -> Run:
  """Loads the checkpoint of `step` (default: the latest) of the run in `workdir`."""
  config = wd.read_config(workdir)
  facts = wd.read_partition(workdir)
  specs = groups_lib.make_specs(config, facts['num_classes'])
  mngr = wd.checkpoint_manager(workdir)
  try:
    state, meta = checkpoint.restore(
        mngr, checkpoint.abstract_state(specs, tuple(facts['image_shape']), config), step)
  finally:
    mngr.close()
  adjacency = topology.build(config)
  if config.num_clients <= DENSE_CLIENTS:
    adjacency = adjacency.toarray()
  return Run(workdir=workdir, config=config, step=int(meta['step']), state=state, specs=specs,
             adjacency=adjacency, partition=facts)
