"""The training loop: `train_and_evaluate(config, workdir)`.

Durability (see `checkpoint.py`, `safety.py`, `writers.py` and docs/durable_runs.md):
- the population is checkpointed every `checkpoint.every` steps and at the
  end; a run on a workdir that holds checkpoints resumes from the latest one
  and ends exactly as an uninterrupted run would, since the batch of step s
  depends only on (seed, s) and the step's randomness is fold_in(rng, s);
- SIGTERM (preemption) makes the loop save the current step and raise
  `Preempted`; on several hosts JAX's preemption service catches it and every
  process saves at the same step (orbax `reached_preemption`);
- a non-finite loss raises `NonFiniteLossError` naming the first step and the
  clients, and no checkpoint of a bad state is ever written.
"""

import dataclasses
import itertools
import os
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from mhd_jax import data as data_lib
from mhd_jax.algorithm import baselines
from mhd_jax.algorithm import evaluate
from mhd_jax.network import graph_schedule
from mhd_jax.network import neighbours
from mhd_jax.network import participation
from mhd_jax.network import topology
from mhd_jax.outputs import checkpoint
from mhd_jax.outputs import report
from mhd_jax.outputs import workdir as wd
from mhd_jax.outputs import writers
from mhd_jax.placement import autotune
from mhd_jax.placement import clients
from mhd_jax.placement import cohorts as cohorts_lib
from mhd_jax.placement import layout as layout_lib
from mhd_jax.population import groups as groups_lib
from mhd_jax.run import config_check
from mhd_jax.run import programs
from mhd_jax.run import progress
from mhd_jax.run import residency
from mhd_jax.run import safety
from mhd_jax.run import streaming
from mhd_jax.run import timing
from mhd_jax.wire import communication
from mhd_jax.wire import privacy

def _sync(name: str) -> None:
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
  _sync('checkpoints verified')
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
  logging.info('train step compiled in %.1f s.', time.time() - t)
  return strategy, step


def train_and_evaluate(config, workdir: str, overwrite: bool = False) -> dict:
  """Trains the population described by `config`, writes logs and summary to `workdir`.

  Resumes from the latest checkpoint in `workdir` if there is one. Writes
  `metrics.jsonl` (one JSON record per log/eval step), `tensorboard/`,
  `checkpoints/` and their metadata, and at the end `summary.json`,
  `per_class.npz` and `report/` (`workdir.py` says what each holds). Returns
  the summary (`workdir.Summary.to_json()`).
  On several processes (`distributed.initialize`), each saves its part of the
  checkpoints and process 0 alone writes the other files.

  Args:
    config: the run's config (checked first: `config_check.ConfigError`).
    workdir: where everything is written.
    overwrite: replace a run of another config found in `workdir` instead of
      refusing it (the earlier run's outputs are deleted).

  Raises:
    config_check.ConfigError: a bad config, or a workdir of another run.
    safety.NonFiniteLossError: a loss term became NaN or Inf.
    safety.Preempted: SIGTERM arrived; the current step was checkpointed.
  """
  start = time.time()
  layout_lib.initialize_distributed(config)  # before anything touches the devices
  config_check.validate(config)
  for warning in config_check.warnings(config):  # unusual but runnable: one line each
    logging.warning('config: %s', warning)
  wd.check_workdir(workdir, config, overwrite)
  adjacency = topology.build(config)
  layout = layout_lib.Layout.create(groups_lib.group_sizes(config),
                                    layout_lib.make_mesh(config.num_devices))
  data = data_lib.get_data(config, layout.local_client_ids())  # this process's clients
  config_check.validate_partition(data.partition, config)
  layout = residency.place(config, layout, data)  # or cohorts streamed through it
  lead = jax.process_index() == 0  # the process that writes all but the checkpoints
  lock = wd.WorkdirLock(workdir)
  if lead:  # refuses a workdir in use before anything in it changes
    try:
      os.makedirs(workdir, exist_ok=True)
      lock.acquire()
    except OSError as e:
      raise config_check.ConfigError([f'workdir {workdir} cannot be written: {e}']) from None
  try:
    with safety.SigtermWatch(None, 0) as early:  # start-up, compile and report: see `_run`
      return _run(config, workdir, overwrite, start, adjacency, layout, data, lead, early)
  finally:
    lock.release()


@dataclasses.dataclass
class _Run:
  """What the loop needs, built once by `_prepare` (the state changes as it trains)."""
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
  epsilons: list | None = None  # DP runs: each client's ε at the end (`_epsilons`)


def _prepare(config, workdir, adjacency, layout, data, lead):
  """(`_Run`, batches): the state restored or initialised, the programs compiled."""
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
        (state, first, _step_rng(config), jnp.zeros(config.num_clients, jnp.int32), dynamics),
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
  return _Run(
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
  width = schedule.table.width if sparse else s
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


def _epsilons(config, data):
  """Each client's ε after num_steps steps (PLD; seconds per distinct client size), or None
  without DP."""
  if not (config.get('dp') and config.dp.enabled):
    return None
  sizes = [len(idx) for idx in data.partition.client_indices]
  return privacy.client_epsilons(config, sizes, config.num_steps)


def _step_rng(config):
  return jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)


def _train(config, workdir, run: _Run, batches, layout, data, lead, early, wall):
  """The training loop from `run.start_step`; returns the last evaluation (None if no step)."""
  writer = writers.create(workdir, lead, config, run.start_step)
  step_rng, first_bad = _step_rng(config), jnp.zeros(config.num_clients, jnp.int32)
  every, acc, state, window = config.checkpoint.every, None, run.state, run.window
  primary, mngr = data.partition.primary_mask(), run.mngr
  timer = timing.StepTimer()  # steps/s over training steps only
  profile = config.get('profile') or {}
  profiler = timing.ProfileWindow(wd.path(workdir, wd.PROFILE), profile.get('start_step', 0),
                                  profile.get('num_steps', 0))
  try:
    with safety.SigtermWatch(mngr, run.start_step, early) as sigterm:
      for step in range(run.start_step + 1, config.num_steps + 1):
        with profiler.step(step):
          timer.begin_step()
          state, metrics, first_bad = run.train_step(state, next(batches), step_rng, first_bad,
                                                     run.dynamics)
          window.add(metrics)
          if config.average_every and step % config.average_every == 0:
            state = run.average(state, run.dynamics, step)  # FedAvg / gossip baseline
        profiler.after(step, state)
        last = step == config.num_steps
        if step % config.log_every == 0 or last:
          timer.pause(state)
          safety.check_finite(first_bad, mngr, run.finite_state(state), step)
          taken_N = participation.steps_taken(run.dynamics[1], step - window.count + 1, step)
          progress.log_train(step, window, taken_N, timer.take(), run.sent, config, writer)
          window = progress.Window()
        if step % config.eval_every == 0 or last:
          timer.pause(state)
          acc = evaluate.accuracies(run.predict, state, data.eval_batches(), primary)
          progress.log_eval(step, acc, writer)
        stop = sigterm.stop_at(step)
        if (every and step % every == 0) or last or stop:
          timer.pause(state)
          safety.check_finite(first_bad, mngr, run.finite_state(state), step)  # never save a bad state
          record = window.record()
          checkpoint.save(mngr, step, layout.unpad_state(state), wall(), force=True,
                          extra=record and {'log_window': record})
        if stop and not last:
          mngr.wait_until_finished()
          raise safety.Preempted(step)
    run.epsilons = _epsilons(config, data) if run.start_step < config.num_steps else None
    if run.epsilons is not None:
      progress.log_privacy(config.num_steps, run.epsilons, privacy.summary_block(config), writer)
  finally:
    profiler.close()
    mngr.wait_until_finished()
    mngr.close()
    writer.close()
  run.state = state
  return acc


def _run(config, workdir, overwrite, start, adjacency, layout, data, lead, early) -> dict:
  """`train_and_evaluate` once the config is checked and the workdir locked.

  `early` has caught SIGTERM since then: one during start-up stops the loop
  after its first step (saved); one after the loop, during the final
  evaluation or report, raises `Preempted` of the final (saved) step.
  """
  if overwrite and lead:
    wd.clear_workdir(workdir)
  _sync('workdir ready')
  run, batches = _prepare(config, workdir, adjacency, layout, data, lead)
  wall = lambda: run.wall_before + time.time() - start
  acc = _train(config, workdir, run, batches, layout, data, lead, early, wall)
  safety.stop_if_terminated(early, config.num_steps)
  primary = data.partition.primary_mask()
  if acc is None:  # resumed from the final checkpoint: nothing left to train
    acc = evaluate.accuracies(run.predict, run.state, data.eval_batches(), primary)
  steps_N = participation.steps_taken(run.dynamics[1], 1, config.num_steps)
  logging.info('final accuracies (%%):\n%s', progress.client_table(acc, steps_N))
  if run.epsilons is None:  # resumed from the final checkpoint (or no DP)
    run.epsilons = _epsilons(config, data)
  summary = wd.Summary.create(
      config, acc, run.sent, run.fedavg, wall(), steps_N, run.epsilons,
      privacy.summary_block(config) if run.epsilons is not None else None)
  if lead:
    wd.write_summary(workdir, summary)
    wd.write_per_class(workdir, wd.PerClass(acc.correct_NxHxC, acc.count_C, primary))
    report.write(workdir, acc, adjacency, summary)
  safety.stop_if_terminated(early, config.num_steps)
  _sync('outputs written')  # no process returns before the workdir is complete
  return summary.to_json()
