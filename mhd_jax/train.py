"""The training loop: `train_and_evaluate(config, workdir)`.

Durability (see `checkpoint.py`, `safety.py` and docs/durable_runs.md):
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

import itertools
import json
import os
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from mhd_jax import autotune
from mhd_jax import baselines
from mhd_jax import checkpoint
from mhd_jax import communication
from mhd_jax import config_check
from mhd_jax import data as data_lib
from mhd_jax import evaluate
from mhd_jax import logs
from mhd_jax import clients
from mhd_jax import distill
from mhd_jax import graph_schedule
from mhd_jax import groups as groups_lib
from mhd_jax import layout as layout_lib
from mhd_jax import participation
from mhd_jax import programs
from mhd_jax import report
from mhd_jax import safety
from mhd_jax import state as state_lib
from mhd_jax import topology

TERMS = distill.TERMS


def communication_costs(specs, state, adjacency, image_shape, config):
  """([N] bytes each client sends per step, [N] FedAvg bytes per round for the same models).

  Only what another client's loss reads (`communication.read_probabilities`);
  under target='random', the expected value per step.
  """
  heads, embs, dims, fedavg = [], [], [], []
  for spec, group in zip(specs, state.groups):
    one = jax.tree.map(lambda x: x[0], group)
    head, emb, dim = communication.public_output_sizes(
        spec.model, one.params, one.batch_stats, image_shape, config.data.public_batch_size)
    heads += [head] * spec.num_clients
    embs += [emb] * spec.num_clients
    dims += [dim] * spec.num_clients
    fedavg += [communication.fedavg_bytes_per_round(one.params)] * spec.num_clients
  read, emb_read = communication.read_probabilities(adjacency, config.num_heads, config, dims)
  return communication.bytes_sent_per_step(read, emb_read, heads, embs), np.array(fedavg)


def _eval_record(acc: evaluate.Accuracies) -> dict:
  return {'mean_private_acc': acc.private_NxH.mean(0).tolist(),
          'mean_shared_acc': acc.shared_NxH.mean(0).tolist(),
          'private_acc': acc.private_NxH.tolist(),
          'shared_acc': acc.shared_NxH.tolist()}


def client_table(acc: evaluate.Accuracies, steps_N=None) -> str:
  """Per-client private / shared accuracy (%) of every head, plus the mean; with `steps_N`,
  a last column of the steps each client took part in (`participation.steps_taken`)."""
  n, h = acc.private_NxH.shape
  head = 'client ' + ' '.join(f'priv{k:<2d} shared{k:<2d}' for k in range(h))
  rows = [head]
  for name, p, s in [(str(i), acc.private_NxH[i], acc.shared_NxH[i]) for i in range(n)] + [
      ('mean', acc.private_NxH.mean(0), acc.shared_NxH.mean(0))]:
    rows.append(f'{name:>6} ' + ' '.join(f'{100 * p[k]:6.1f} {100 * s[k]:8.1f}'
                                         for k in range(h)))
  if steps_N is not None:
    steps = ['  steps'] + [f' {t:6d}' for t in steps_N] + [f' {np.mean(steps_N):6.1f}']
    rows = [r + t for r, t in zip(rows, steps)]
  return '\n'.join(rows)


def _sync(name: str) -> None:
  """Waits for every process (nothing to wait for on one)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _initial_state(mngr, specs, image_shape, config, layout, lead=True):
  """(state, step, wall seconds so far, log window) from the newest checkpoint that verifies,
  or a fresh population. The window (`_window_record`) is None at a log step.

  Checkpoints hold the real clients only (no padding), so any device count
  can restore them; the state comes back padded and placed on the mesh.
  Newer checkpoints that fail verification are skipped with one line each
  (`checkpoint.restore_newest_verified`).
  """
  latest = mngr.latest_step()
  if latest is None:
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0)
    return layout.init_state(specs, image_shape, rng), 0, 0.0, None
  if latest > config.num_steps:
    raise config_check.ConfigError([
        f'{mngr.directory} holds a checkpoint of step {latest}, beyond num_steps='
        f'{config.num_steps}; raise num_steps or choose another --workdir.'])
  state, meta, step = checkpoint.restore_newest_verified(
      mngr, layout.restore_target(checkpoint.abstract_state(specs, image_shape)), lead)
  _sync('checkpoints verified')
  logging.info('resuming from the checkpoint of step %d in %s.', step, mngr.directory)
  return layout.pad_state(state), step, float(meta['wall_seconds']), meta.get('log_window')


def _log_train(step, sums, count, taken_N, timed, sent_N, config, log, board):
  """Progress line, metrics.jsonl record and TensorBoard scalars of one log window.

  `sums` holds each metric summed over the window's `count` steps (on device,
  pulled here once), 0 on the steps a client sat out (`programs.taken_only`), and
  `taken_N` how many of them each client took part in, so the logged metrics are
  each client's means over its own steps (NaN for a client that took part in
  none; the means over clients leave it out); `timed` is
  (steps, seconds spent in them) from `logs.StepTimer`, so steps/s leaves out
  compiling, restoring, evaluation and checkpoints (after a resume inside a
  window, `count` counts the steps before it too, `timed` only this session's).
  """
  steps, seconds = timed
  taken_N = np.where(taken_N > 0, taken_N, np.nan)  # NaN: sat out the whole window
  metrics = {k: np.asarray(v, np.float64) / taken_N
             for k, v in jax.device_get(sums).as_dict().items()}
  rate = steps / max(seconds, 1e-9)
  examples_per_step = config.num_clients * (config.data.batch_size
                                            + config.data.public_batch_size)
  means = {k: float(np.nanmean(metrics[k])) if np.isfinite(taken_N).any() else float('nan')
           for k in TERMS}
  logging.info('step %d/%d | %.1f steps/s, %.0f client-steps/s, %.0f examples/s | ETA %.0fs'
               ' | %s', step, config.num_steps, rate, rate * config.num_clients,
               rate * examples_per_step, (config.num_steps - step) / rate,
               ' '.join(f'{k} {v:.4f}' for k, v in means.items()))
  log.write({'step': step, 'steps_per_sec': rate,
             'client_steps_per_sec': rate * config.num_clients,
             'examples_per_sec': rate * examples_per_step, 'window_steps': count, **means,
             'clients': {k: metrics[k].tolist() for k in TERMS}})
  scalars = {'mean/steps_per_sec': rate, **logs.per_client('bytes_sent', sent_N * step)}
  for k in TERMS:
    scalars.update(logs.per_client(k, metrics[k]))
  board.write(step, scalars)


def _window_record(sums, count) -> dict | None:
  """A log window cut by a checkpoint, as JSON for its `meta` (float32 sums round-trip exactly)."""
  if not count:
    return None
  return {'count': count, 'sums': {k: np.asarray(v).tolist()
                                   for k, v in jax.device_get(sums).as_dict().items()}}


def _window_from_record(record):
  """(sums, count) of a restored window (None, 0 when the checkpoint is at a log step)."""
  if not record:
    return None, 0
  return distill.Metrics(**{k: jnp.asarray(v, jnp.float32) for k, v in record['sums'].items()}
                         ), record['count']


@jax.jit
def _add_metrics(sums, metrics):
  """The window's running float32 sums of the per-client metrics, on device (no host sync per
  step); `sums` None starts a window (float32 whatever the model's dtype, as a restored one)."""
  f32 = lambda x: x.astype(jnp.float32)
  if sums is None:
    return jax.tree.map(f32, metrics)
  return jax.tree.map(lambda a, b: a + f32(b), sums, metrics)


def _compile_train_step(config, specs, layout, image_shape, args, steps_left):
  """(strategy, compiled train step); 'auto' on a model with convolutions measures
  (`autotune`). Compiled here, before the first step, so no step's time holds it."""
  make = lambda s: programs.train_step(layout, specs, config, s)
  per_device = [s.num_clients // layout.mesh.devices.size for s in layout.padded_specs(specs)]
  t = time.time()
  strategy, step = autotune.compile_fastest(
      make, autotune.candidates(config, specs, image_shape, steps_left), args,
      autotune.cache_key(config, specs[0].model.num_classes, image_shape, per_device,
                         layout.mesh.devices.size),
      config.get('strategy_measure_steps', 0))
  logging.info('train step compiled in %.1f s.', time.time() - t)
  return strategy, step


def _log_eval(step, acc, log, board) -> None:
  rec = _eval_record(acc)
  logging.info('eval step %d | mean private acc %s | mean shared acc %s', step,
               np.round(rec['mean_private_acc'], 4).tolist(),
               np.round(rec['mean_shared_acc'], 4).tolist())
  log.write({'step': step, 'eval': rec})
  scalars = {}
  for k in range(acc.private_NxH.shape[1]):
    scalars.update(logs.per_client(f'private_acc_head{k}', acc.private_NxH[:, k]))
    scalars.update(logs.per_client(f'shared_acc_head{k}', acc.shared_NxH[:, k]))
  board.write(step, scalars)


def _summary(config, acc, sent, fedavg, wall_seconds, steps_N) -> dict:
  return {
      'num_clients': config.num_clients, 'num_heads': config.num_heads,
      'steps': config.num_steps, 'wall_seconds': wall_seconds,
      'mean_private_acc': acc.private_NxH.mean(0).tolist(),
      'mean_shared_acc': acc.shared_NxH.mean(0).tolist(),
      'clients': [{'id': i, 'private_acc': acc.private_NxH[i].tolist(),
                   'shared_acc': acc.shared_NxH[i].tolist(),
                   'bytes_sent_per_step': int(round(sent[i])),
                   'steps_taken': int(steps_N[i])}
                  for i in range(config.num_clients)],
      'bytes_sent_per_step': int(round(sent.sum())),
      'fedavg_bytes_per_round': int(fedavg.sum()),
  }


def train_and_evaluate(config, workdir: str, overwrite: bool = False) -> dict:
  """Trains the population described by `config`, writes logs and summary to `workdir`.

  Resumes from the latest checkpoint in `workdir` if there is one. Writes
  `metrics.jsonl` (one JSON record per log/eval step), `tensorboard/`,
  `checkpoints/` and their metadata, and at the end `summary.json`
  (README, "Outputs"), `per_class.npz` (final correct predictions per client, head and
  class; examples per class; primary classes) and `report/`. Returns the summary.
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
  checkpoint.check_workdir(workdir, config, overwrite)
  adjacency = topology.build(config)
  layout = layout_lib.Layout.create(groups_lib.group_sizes(config),
                                    layout_lib.make_mesh(config.num_devices))
  data = data_lib.get_data(config, layout.local_client_ids())  # this process's clients
  config_check.validate_partition(data.partition, config)
  lead = jax.process_index() == 0  # the process that writes all but the checkpoints
  lock = checkpoint.WorkdirLock(workdir)
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


def _run(config, workdir, overwrite, start, adjacency, layout, data, lead, early) -> dict:
  """`train_and_evaluate` once the config is checked and the workdir locked.

  `early` has caught SIGTERM since then: one during start-up stops the loop
  after its first step (saved); one after the loop, during the final
  evaluation or report, raises `Preempted` of the final (saved) step.
  """
  if overwrite and lead:
    checkpoint.clear_workdir(workdir)
  _sync('workdir ready')
  specs = groups_lib.make_specs(config, data.num_classes)
  mngr = checkpoint.manager(workdir, config, lead)
  state, start_step, wall_before, window = _initial_state(mngr, specs, data.image_shape, config,
                                                          layout, lead)
  if lead:
    checkpoint.write_metadata(workdir, config, data)
  step_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
  first_bad = jnp.zeros(config.num_clients, jnp.int32)
  dynamics = (graph_schedule.build(config), participation.build(config))
  batches = map(layout.place_batch, data.train_batches(start_step))
  if start_step < config.num_steps:
    first = next(batches)
    batches = itertools.chain([first], batches)
    strategy, train_step = _compile_train_step(config, specs, layout, data.image_shape,
                                               (state, first, step_rng, first_bad, dynamics),
                                               config.num_steps - start_step)
  else:  # resumed from the final checkpoint: nothing to compile but the evaluation
    strategy = clients.strategy_for(config.strategy, specs, data.image_shape)
  finite_state = safety.make_state_check(layout)
  predict = programs.predict(layout, specs, strategy)
  average_real = baselines.make_average(specs, adjacency)  # over the real clients only
  def average(state, dynamics, step):  # over the graph and participants of step `step`
    net = programs.network_at(dynamics, step)
    return layout.pad_state(average_real(layout.unpad_state(state), net.adjacency_SxS,
                                         net.active_S))
  average = jax.jit(average)
  primary = data.partition.primary_mask()
  sent, fedavg = communication_costs(specs, state, adjacency, data.image_shape, config)
  logging.info('%d clients, %d heads, topology %s, %d steps; bytes sent per step: %d in all, '
               '%.0f per client (FedAvg: %.0f per client per round).', config.num_clients,
               config.num_heads, config.topology, config.num_steps, sent.sum(), sent.mean(),
               fedavg.mean())
  logging.info('strategy %s on %d %s device(s), %d process(es); %d padded client(s).',
               strategy, layout.mesh.devices.size, jax.default_backend(), jax.process_count(),
               layout.num_padding)

  log, board = logs.Discard(), logs.Discard()
  if lead:
    log = logs.JsonlLog(os.path.join(workdir, 'metrics.jsonl'), start_step)
    board = logs.TensorBoardLog(os.path.join(workdir, 'tensorboard'), start_step, config)
  wall = lambda: wall_before + time.time() - start
  every, acc = config.checkpoint.every, None
  sums, count = _window_from_record(window)  # the log window's metric sums, on device
  timer = logs.StepTimer()  # steps/s over training steps only
  profile = config.get('profile') or {}
  profiler = logs.ProfileWindow(os.path.join(workdir, 'profile'), profile.get('start_step', 0),
                                profile.get('num_steps', 0))
  try:
    with safety.SigtermWatch(mngr, start_step, early) as sigterm:
      for step in range(start_step + 1, config.num_steps + 1):
        with profiler.step(step):
          timer.begin_step()
          state, metrics, first_bad = train_step(state, next(batches), step_rng, first_bad, dynamics)
          sums = _add_metrics(sums, metrics)
          count += 1
          if config.average_every and step % config.average_every == 0:
            state = average(state, dynamics, step)  # FedAvg / gossip baseline
        profiler.after(step, state)
        last = step == config.num_steps
        if step % config.log_every == 0 or last:
          timer.pause(state)
          safety.check_finite(first_bad, mngr, finite_state(state), step)
          taken_N = participation.steps_taken(dynamics[1], step - count + 1, step)
          _log_train(step, sums, count, taken_N, timer.take(), sent, config, log, board)
          sums, count = None, 0
        if step % config.eval_every == 0 or last:
          timer.pause(state)
          acc = evaluate.accuracies(predict, state, data.eval_batches(), primary)
          _log_eval(step, acc, log, board)
        stop = sigterm.stop_at(step)
        if (every and step % every == 0) or last or stop:
          timer.pause(state)
          safety.check_finite(first_bad, mngr, finite_state(state), step)  # never save a bad state
          window = _window_record(sums, count)
          checkpoint.save(mngr, step, layout.unpad_state(state), wall(), force=True,
                          extra=window and {'log_window': window})
        if stop and not last:
          mngr.wait_until_finished()
          raise safety.Preempted(step)
  finally:
    profiler.close()
    mngr.wait_until_finished()
    mngr.close()
    log.close()
    board.close()

  safety.stop_if_terminated(early, config.num_steps)
  if acc is None:  # resumed from the final checkpoint: nothing left to train
    acc = evaluate.accuracies(predict, state, data.eval_batches(), primary)
  steps_N = participation.steps_taken(dynamics[1], 1, config.num_steps)
  logging.info('final accuracies (%%):\n%s', client_table(acc, steps_N))
  summary = _summary(config, acc, sent, fedavg, wall(), steps_N)
  if lead:
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=1)
    np.savez(os.path.join(workdir, 'per_class.npz'), correct_NxHxC=acc.correct_NxHxC,
             count_C=acc.count_C, primary_NxC=primary)
    report.write(os.path.join(workdir, 'report'),
                 logs.read_jsonl(os.path.join(workdir, 'metrics.jsonl')), acc, adjacency, summary)
  safety.stop_if_terminated(early, config.num_steps)
  _sync('outputs written')  # no process returns before the workdir is complete
  return summary
