"""The training loop: `train_and_evaluate(config, workdir)`.

It checks the config and the workdir, locks the workdir, lets `startup` restore or
initialise the state and compile the step, runs the loop (`_train`) and writes
the final results (`_run`). Durability (see `checkpoint.py`, `safety.py`,
`writers.py` and docs/durable_runs.md):
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

import os
import time

from absl import logging
import jax
import jax.numpy as jnp

from mhd_jax import data as data_lib
from mhd_jax.algorithm import evaluate
from mhd_jax.network import participation
from mhd_jax.network import topology
from mhd_jax.outputs import checkpoint
from mhd_jax.outputs import report
from mhd_jax.outputs import summary as summary_lib
from mhd_jax.outputs import workdir as wd
from mhd_jax.outputs import writers
from mhd_jax.placement import layout as layout_lib
from mhd_jax.population import groups as groups_lib
from mhd_jax.run import config_check
from mhd_jax.run import data_check
from mhd_jax.run import progress
from mhd_jax.run import residency
from mhd_jax.run import safety
from mhd_jax.run import startup
from mhd_jax.run import timing
from mhd_jax.wire import privacy


def train_and_evaluate(config, workdir: str, overwrite: bool = False) -> dict:
  """Trains the population described by `config`, writes logs and summary to `workdir`.

  Resumes from the latest checkpoint in `workdir` if there is one. Writes
  `metrics.jsonl` (one JSON record per log/eval step), `tensorboard/`,
  `checkpoints/` and their metadata, and at the end `summary.json`,
  `per_class.npz` and `report/` (`workdir.py` says what each holds). Returns
  the summary (`summary.Summary.to_json()`).
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
    checkpoint.SaveError: a checkpoint could not be saved (one line; the cause chained).
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
  data_check.validate_data(config, data)  # before anything is written or compiled
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


def _epsilons(config, data):
  """Each client's ε after num_steps steps (PLD; seconds per distinct client size), or None
  without DP."""
  if not (config.get('dp') and config.dp.enabled):
    return None
  sizes = [len(idx) for idx in data.partition.client_indices]
  return privacy.client_epsilons(config, sizes, config.num_steps)


def _train(config, workdir, run: startup.Run, batches, layout, data, lead, early, wall):
  """The training loop from `run.start_step`; returns the last evaluation (None if no step)."""
  writer = writers.create(workdir, lead, config, run.start_step)
  step_rng, first_bad = startup.step_rng(config), jnp.zeros(config.num_clients, jnp.int32)
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
          run.trained_at = time.time()
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
          checkpoint.wait(mngr)
          raise safety.Preempted(step)
    run.epsilons = _epsilons(config, data) if run.start_step < config.num_steps else None
    if run.epsilons is not None:
      progress.log_privacy(config.num_steps, run.epsilons, privacy.summary_block(config), writer)
  finally:
    profiler.close()
    try:
      checkpoint.close(mngr)  # a failed save raises `checkpoint.SaveError` here at the latest
    finally:
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
  startup.sync('workdir ready')
  run, batches = startup.prepare(config, workdir, adjacency, layout, data, lead)
  run.trained_at = time.time()  # the loop moves it to its last step
  logging.info('start-up: %.1f s until the first step.', run.trained_at - start)
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
  summary = summary_lib.Summary.create(
      config, acc, run.sent, run.fedavg, wall(), steps_N, run.epsilons,
      privacy.summary_block(config) if run.epsilons is not None else None)
  if lead:
    summary_lib.write_summary(workdir, summary)
    summary_lib.write_per_class(workdir,
                                summary_lib.PerClass(acc.correct_NxHxC, acc.count_C, primary))
    report.write(workdir, acc, adjacency, summary)
  safety.stop_if_terminated(early, config.num_steps)
  startup.sync('outputs written')  # no process returns before the workdir is complete
  logging.info('end of run: %.1f s after the last step (final evaluation, checkpoint, summary, '
               'report).', time.time() - run.trained_at)
  return summary.to_json()
