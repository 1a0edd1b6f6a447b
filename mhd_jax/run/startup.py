"""A run's start-up: the state restored or initialised, the train step compiled, and the
other programs the loop needs (`Run`), built once by `prepare`.

The state comes from the newest checkpoint that verifies, or fresh (with its
lag buffers filled when teachers lag); checkpoints hold the real clients only,
so any device count restores them. The train step is compiled here, before
the first step, so no step's time holds the compile.
"""

import dataclasses
import itertools
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from mhd_jax.algorithm import baselines
from mhd_jax.network import graph_schedule
from mhd_jax.network import neighbours
from mhd_jax.network import participation
from mhd_jax.outputs import checkpoint
from mhd_jax.outputs import workdir as wd
from mhd_jax.placement import autotune
from mhd_jax.placement import clients
from mhd_jax.placement import cohorts as cohorts_lib
from mhd_jax.placement import layout as layout_lib
from mhd_jax.population import groups as groups_lib
from mhd_jax.run import config_check
from mhd_jax.run import programs
from mhd_jax.run import progress
from mhd_jax.run import safety
from mhd_jax.run import streaming
from mhd_jax.wire import communication


def sync(name: str) -> None:
  """Waits for every process (nothing to wait for on one)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _programs(layout):
  """The programs of a population resident on the layout, or streamed in cohorts."""
  return streaming if isinstance(layout, cohorts_lib.Cohorts) else programs


def _initial_state(mngr, specs, data, config, layout, lead=True):
  """(state, step, wall seconds so far, log window) from the newest checkpoint that verifies,
  or a fresh population (with teachers that lag, its lag buffers filled: `_fresh_lag`).
  The window (`progress.Window.record`) is None at a log step.

  Checkpoints hold the real clients only (no padding), so any device count
  can restore them; the state comes back padded and placed on the mesh.
  Newer checkpoints that fail verification are skipped with one line each
  (`checkpoint.restore_newest_verified`).
  """
  latest, image_shape = mngr.latest_step(), data.image_shape
  if latest is None:
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0)
    return _fresh_lag(layout.init_state(specs, image_shape, rng), specs, data, config,
                      layout), 0, 0.0, None
  if latest > config.num_steps:
    raise config_check.ConfigError([
        f'{mngr.directory} holds a checkpoint of step {latest}, beyond num_steps='
        f'{config.num_steps}; raise num_steps or choose another --workdir.'])
  state, meta, step = checkpoint.restore_newest_verified(
      mngr, layout.restore_target(checkpoint.abstract_state(specs, image_shape, config)), lead)
  sync('checkpoints verified')
  logging.info('resuming from the checkpoint of step %d in %s.', step, mngr.directory)
  return layout.pad_state(state), step, float(meta['wall_seconds']), meta.get('log_window')


def _fresh_lag(state, specs, data, config, layout):
  """A fresh state with its lag buffers (teachers that lag tau >= 1 steps): the initial models'
  outputs on the public batches of steps 1..tau (docs/dynamics.md); unchanged when tau = 0."""
  tau = config.dynamics.staleness
  if not tau:
    return state
  publics = [b['public']['image'] for b in itertools.islice(data.train_batches(0), tau)]
  return _programs(layout).initial_lag(layout, specs, config, 'vmap')(
      state, layout.replicate(np.stack(publics)))


def _compile_train_step(config, specs, layout, image_shape, args, steps_left):
  """(strategy, compiled train step); 'auto' on a model with convolutions measures
  (`autotune`). Compiled here, before the first step, so no step's time holds it."""
  make = lambda s: _programs(layout).train_step(layout, specs, config, s)
  per_device = [s.num_clients // layout.mesh.devices.size for s in layout.padded_specs(specs)]
  t = time.time()
  strategy, step = autotune.compile_fastest(
      make, autotune.candidates(config, specs, image_shape, steps_left), args,
      autotune.cache_key(config, specs[0].model.num_classes, image_shape, per_device,
                         layout.mesh.devices.size),
      config.get('strategy_measure_steps', 0))
  logging.info('train step compiled in %.1f s; XLA step memory %.1f MiB per device.',
               time.time() - t, _memory_bytes(step) / 2**20)
  return strategy, step


def _memory_bytes(step) -> int:
  """A compiled step's buffers per device (XLA's memory analysis); a streamed step's own
  count (its larger pass, plus the next cohort's inputs in flight)."""
  return step.memory_bytes() if hasattr(step, 'memory_bytes') else layout_lib.compiled_bytes(step)


@dataclasses.dataclass
class Run:
  """What the loop needs, built once by `prepare` (the state changes as it trains)."""
  specs: tuple
  mngr: object
  state: object
  start_step: int
  wall_before: float
  window: progress.Window
  train_step: object
  predict: object
  average: object
  finite_state: object
  dynamics: tuple
  sent: np.ndarray
  fedavg: np.ndarray
  epsilons: list | None = None  # DP runs: each client's ε at the end (`train`)
  trained_at: float = 0.0  # time.time() when start-up ended, then when the last step had run


def prepare(config, workdir, adjacency, layout, data, lead):
  """(`Run`, batches): the state restored or initialised, the programs compiled."""
  specs = groups_lib.make_specs(config, data.num_classes)
  mngr = wd.checkpoint_manager(workdir, config, lead)
  state, start_step, wall_before, window = _initial_state(mngr, specs, data, config, layout,
                                                          lead)
  if lead:
    wd.write_metadata(workdir, config, data)
  dynamics = (graph_schedule.build(config), participation.build(config))
  exchange = _exchange(config, dynamics[0], layout, data.num_classes)
  batches = map(layout.place_batch, data.train_batches(start_step))
  train_step = None
  if start_step < config.num_steps:
    first = next(batches)
    batches = itertools.chain([first], batches)
    strategy, train_step = _compile_train_step(
        config, specs, layout, data.image_shape,
        (state, first, step_rng(config), jnp.zeros(config.num_clients, jnp.int32), dynamics),
        config.num_steps - start_step)
  else:  # resumed from the final checkpoint: nothing to compile but the evaluation
    strategy = clients.strategy_for(config.strategy, specs, data.image_shape)
  average_real = baselines.make_average(specs, adjacency)  # over the real clients only
  streamed = isinstance(layout, cohorts_lib.Cohorts)
  sent, fedavg = communication.costs(specs, state, adjacency, data.image_shape, config)
  logging.info('%d clients, %d heads, topology %s, %d steps; bytes sent per step: %d in all, '
               '%.0f per client (FedAvg: %.0f per client per round).', config.num_clients,
               config.num_heads, config.topology, config.num_steps, sent.sum(), sent.mean(),
               fedavg.mean())
  logging.info('strategy %s on %d %s device(s), %d process(es); %d padded client(s); '
               'exchange %s.', strategy, layout.mesh.devices.size, jax.default_backend(),
               jax.process_count(), layout.num_padding, exchange)
  return Run(
      specs, mngr, state, start_step, wall_before, progress.Window.restore(window), train_step,
      _programs(layout).predict(layout, specs, strategy),
      streaming.average(average_real) if streamed else jax.jit(
          lambda state, dynamics, step: _average(state, dynamics, step, average_real, layout)),
      streaming.state_check(layout) if streamed else safety.make_state_check(layout),
      dynamics, sent, fedavg), batches


def _exchange(config, schedule, layout, num_classes) -> str:
  """What the step's exchange runs on, for the log; a forced one that cannot hold the
  population is refused here, before anything compiles."""
  sparse, s = schedule.table is not None, sum(layout.padded)
  # The graph's own table even when dense: a refusal says what the table would need.
  width = (schedule.table if sparse else
           neighbours.build(list(np.asarray(schedule.graphs_GxNxK)))[0]).width
  problem = neighbours.fits(sparse, s, width, config.num_heads, config.data.public_batch_size,
                            num_classes, layout_lib.memory_bytes(layout.mesh))
  if problem and config.get('exchange', 'auto') != 'auto':
    raise config_check.ConfigError([problem])
  return f'sparse (a neighbour table of {width} columns)' if sparse else 'dense'


def _average(state, dynamics, step, average_real, layout):
  """FedAvg / gossip averaging over the real clients, on the graph and participants of `step`."""
  net = programs.network_at(dynamics, step)
  return layout.pad_state(average_real(layout.unpad_state(state), net.weights_SxK,
                                       net.active_S, net.senders_SxK))


def step_rng(config):
  """The run's key of the training steps (each step folds its number in)."""
  return jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
