"""The training loop: `train_and_evaluate(config, workdir)`."""

import json
import os
import time

from absl import logging
import jax
import numpy as np

from mhd_jax import communication
from mhd_jax import evaluate
from mhd_jax import input_pipeline
from mhd_jax import population as pop
from mhd_jax import sharding
from mhd_jax import step as step_lib
from mhd_jax import topology

TERMS = ('loss', 'ce', 'kd_main', 'kd_aux', 'emb', 'train_acc')


def communication_costs(specs, state, adjacency, image_shape, config):
  """([N] bytes each client sends per step, [N] FedAvg bytes per round for the same models)."""
  output, fedavg = [], []
  for spec, group in zip(specs, state.groups):
    one = jax.tree.map(lambda x: x[0], group)
    output += [communication.public_output_bytes(
        spec.model, one.params, one.batch_stats, image_shape, config.data.public_batch_size,
        bool(config.nu_emb))] * spec.num_clients
    fedavg += [communication.fedavg_bytes_per_round(one.params)] * spec.num_clients
  return communication.bytes_sent_per_step(adjacency, output), np.array(fedavg)


def _eval_record(acc: evaluate.Accuracies) -> dict:
  return {'mean_private_acc': acc.private_NxH.mean(0).tolist(),
          'mean_shared_acc': acc.shared_NxH.mean(0).tolist(),
          'private_acc': acc.private_NxH.tolist(),
          'shared_acc': acc.shared_NxH.tolist()}


def client_table(acc: evaluate.Accuracies) -> str:
  """Per-client private / shared accuracy (%) of every head, plus the mean."""
  n, h = acc.private_NxH.shape
  head = 'client ' + ' '.join(f'priv{k:<2d} shared{k:<2d}' for k in range(h))
  rows = [head]
  for name, p, s in [(str(i), acc.private_NxH[i], acc.shared_NxH[i]) for i in range(n)] + [
      ('mean', acc.private_NxH.mean(0), acc.shared_NxH.mean(0))]:
    rows.append(f'{name:>6} ' + ' '.join(f'{100 * p[k]:6.1f} {100 * s[k]:8.1f}'
                                         for k in range(h)))
  return '\n'.join(rows)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains the population described by `config`, writes logs and summary to `workdir`.

  Writes `workdir/metrics.jsonl` (one JSON record per log/eval step) and
  `workdir/summary.json` (DESIGN §5). Returns the summary.
  """
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  sharding.initialize_distributed(config)
  adjacency = topology.build(config)
  layout = sharding.Layout.create(pop.group_sizes(config), sharding.make_mesh(config.num_devices))
  data = input_pipeline.get_data(config, layout.local_client_ids())  # this process's clients
  specs = pop.make_specs(config, data.num_classes)
  strategy = pop.resolve_strategy(config.strategy)
  rng = jax.random.PRNGKey(config.seed)
  state = layout.init_state(specs, data.image_shape, jax.random.fold_in(rng, 0))
  train_step = layout.make_train_step(specs, adjacency, config, strategy)
  predict = layout.make_predict(specs, strategy)
  step_rng = jax.random.fold_in(rng, 1)
  primary = data.partition.primary_mask()
  sent, fedavg = communication_costs(specs, state, adjacency, data.image_shape, config)
  logging.info('%d clients, %d heads, topology %s, %d steps; bytes sent per step: %d in all, '
               '%.0f per client (FedAvg: %.0f per client per round).', config.num_clients,
               config.num_heads, config.topology, config.num_steps, sent.sum(), sent.mean(),
               fedavg.mean())
  logging.info('strategy %s on %d %s device(s), %d process(es); %d padded client(s).',
               strategy, layout.mesh.devices.size, jax.default_backend(), jax.process_count(),
               layout.num_padding)
  examples_per_step = config.num_clients * (config.data.batch_size
                                            + config.data.public_batch_size)

  log = open(os.path.join(workdir, 'metrics.jsonl'), 'w')
  batches = data.train_batches(0)
  acc = None
  t_last, step_last = time.time(), 0
  for step in range(1, config.num_steps + 1):
    state, metrics = train_step(state, layout.place_batch(next(batches)), step_rng)
    if step % config.log_every == 0 or step == config.num_steps:
      metrics = jax.device_get(metrics)
      now = time.time()
      rate = (step - step_last) / (now - t_last)
      t_last, step_last = now, step
      means = {k: float(np.mean(metrics[k])) for k in TERMS}
      if not all(np.isfinite(v) for v in means.values()):
        raise FloatingPointError(f'non-finite loss at step {step}: {means}')
      logging.info('step %d/%d | %.1f steps/s, %.0f client-steps/s, %.0f examples/s | ETA %.0fs'
                   ' | %s', step, config.num_steps, rate, rate * config.num_clients,
                   rate * examples_per_step, (config.num_steps - step) / rate,
                   ' '.join(f'{k} {v:.4f}' for k, v in means.items()))
      log.write(json.dumps({'step': step, 'steps_per_sec': rate,
                            'client_steps_per_sec': rate * config.num_clients,
                            'examples_per_sec': rate * examples_per_step, **means,
                            'clients': {k: np.asarray(metrics[k]).tolist() for k in TERMS}})
                + '\n')
    if step % config.eval_every == 0 or step == config.num_steps:
      acc = evaluate.accuracies(predict, state, data.eval_batches(), primary)
      rec = _eval_record(acc)
      logging.info('eval step %d | mean private acc %s | mean shared acc %s', step,
                   np.round(rec['mean_private_acc'], 4).tolist(),
                   np.round(rec['mean_shared_acc'], 4).tolist())
      log.write(json.dumps({'step': step, 'eval': rec}) + '\n')
    log.flush()
  log.close()

  logging.info('final accuracies (%%):\n%s', client_table(acc))
  summary = {
      'num_clients': config.num_clients, 'num_heads': config.num_heads,
      'steps': config.num_steps, 'wall_seconds': time.time() - start,
      'mean_private_acc': acc.private_NxH.mean(0).tolist(),
      'mean_shared_acc': acc.shared_NxH.mean(0).tolist(),
      'clients': [{'id': i, 'private_acc': acc.private_NxH[i].tolist(),
                   'shared_acc': acc.shared_NxH[i].tolist(),
                   'bytes_sent_per_step': int(sent[i])} for i in range(config.num_clients)],
      'bytes_sent_per_step': int(sent.sum()),
      'fedavg_bytes_per_round': int(fedavg.sum()),
  }
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  return summary
