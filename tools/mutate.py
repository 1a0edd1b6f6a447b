"""Mutation check: plants one-line bugs, one at a time, and runs the tests meant to catch them.

    python tools/mutate.py                 # every bug in BUGS
    python tools/mutate.py eval_mask kd_t2 # some of them
    python tools/mutate.py --list          # names, files and test selections

Each bug is a textual replacement in one product file (the text must occur
exactly once, so a refactor that moves it makes the script say so instead of
testing nothing). The working tree (tracked and untracked, not ignored files)
is copied once into a temporary directory; each bug is applied there, the
bug's test selection runs (`python -m pytest -q -x -n 0 SELECTION`),
and the file is restored. The script prints a table: bug | caught? | by which
test, and exits 1 if any bug survived (or 2 if a bug no longer applies).

It is not part of the test suite (it runs the suite's tests many times, for
minutes); run it after changing tests or the code they guard. Selections are
the fast tests that should catch each bug; a bug that survives its selection
is a gap in the safety net.
"""

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Bug:
  name: str
  path: str        # product file, relative to the repository root
  old: str         # text that occurs exactly once in `path`
  new: str         # what the bug puts there
  tests: tuple     # pytest selection (files or node ids, with -k if needed)
  what: str        # one line: the mistake it stands for


BUGS = (
    # The bugs issue 11 found unguarded.
    Bug('bn_reinit_on_restore', 'mhd_jax/run/startup.py',
        "  return layout.pad_state(state), step, float(meta['wall_seconds']), "
        "meta.get('log_window')",
        "  return layout.pad_state(state.replace(groups=tuple(g.replace(batch_stats=jax.tree.map("
        "jnp.zeros_like, g.batch_stats)) for g in state.groups))), step, "
        "float(meta['wall_seconds']), meta.get('log_window')",
        ('tests/test_train_loop.py',), 'batch statistics re-initialised on restore'),
    Bug('eval_ignores_mask', 'mhd_jax/algorithm/evaluate.py',
        "label, mask = np.asarray(batch['label']), np.asarray(batch['mask'], bool)",
        "label, mask = np.asarray(batch['label']), np.ones(len(batch['label']), bool)",
        ('tests/test_evaluate.py',),
        'evaluation counts the padded rows'),
    Bug('aux_backbone_grad_ignored', 'mhd_jax/models/multihead.py',
        'aux_in = emb_BxD if self.aux_backbone_grad else jax.lax.stop_gradient(emb_BxD)',
        'aux_in = emb_BxD',
        ('tests/test_step.py::test_aux_backbone_grad_false_keeps_aux_losses_off_the_backbone',),
        'model.aux_backbone_grad ignored'),
    Bug('averaging_raises', 'mhd_jax/run/train.py',
        'state = run.average(state, run.dynamics, step)  # FedAvg / gossip baseline',
        "raise NotImplementedError('averaging')",
        ('tests/test_train_loop.py',), 'FedAvg/gossip in the loop replaced by an exception'),
    Bug('private_acc_whole_test_set', 'mhd_jax/algorithm/evaluate.py',
        '  n, c = primary_NxC.shape',
        '  n, c = primary_NxC.shape; primary_NxC = np.ones_like(primary_NxC)',
        ('tests/test_evaluate.py',), 'private accuracy over the whole test set'),
    Bug('digits_other_pool', 'mhd_jax/data/contract.py',
        'idx = pools[starts + streams.positions(step)]',
        'idx = pools[np.roll(starts, 1, axis=0) + streams.positions(step)]',
        ('tests/test_data.py',), "a digits client draws from another client's pool"),
    # Averaging details.
    Bug('averaging_skips_batch_stats', 'mhd_jax/algorithm/baselines.py',
        'batch_stats=mix(w, g.batch_stats))', 'batch_stats=g.batch_stats)',
        ('tests/test_train_loop.py',), 'averaging leaves the batch statistics out'),
    Bug('averaging_mixes_optimizer_state', 'mhd_jax/algorithm/baselines.py',
        'batch_stats=mix(w, g.batch_stats))',
        'batch_stats=mix(w, g.batch_stats), opt_state=mix(w, g.opt_state))',
        ('tests/test_train_loop.py',), 'optimizer states averaged too'),
    Bug('averaging_transposed', 'mhd_jax/algorithm/baselines.py',
        '  a = jnp.asarray(adjacency_nxn, jnp.float32)\n',
        '  a = jnp.asarray(adjacency_nxn, jnp.float32).T\n',
        ('tests/test_train_loop.py',), 'averaging over out-neighbours instead of in-neighbours'),
    # Data.
    Bug('resume_restarts_stream', 'mhd_jax/data/contract.py',
        '    step = start_step\n', '    step = 0\n',
        ('tests/test_data.py',), 'a resumed stream starts from batch 0'),
    Bug('eval_drops_last_batch', 'mhd_jax/data/contract.py',
        'for start in range(0, len(labels), batch_size):',
        'for start in range(0, len(labels) - batch_size + 1, batch_size):',
        ('tests/test_data.py',), 'evaluation drops the partial last batch'),
    Bug('public_from_all_train', 'mhd_jax/data/contract.py',
        "    return {'image': train_x[pool[epoch_indices(",
        "    return {'image': train_x[np.arange(len(train_x))[epoch_indices(",
        ('tests/test_data.py',), 'the public batch drawn outside the public pool'),
    # Communication.
    Bug('bytes_in_degree', 'mhd_jax/wire/communication.py',
        'np.stack([np.bincount(j, weights=1.0 - r, minlength=n) for r in not_read])',
        'np.stack([np.bincount(i, weights=1.0 - r, minlength=n) for r in not_read])',
        ('tests/test_communication.py', 'tests/test_bytes.py', 'tests/test_train_loop.py'),
        'bytes counted by in-degree'),
    Bug('bytes_without_embeddings', 'mhd_jax/wire/communication.py',
        '  return heads + np.asarray(emb_readers_N) * np.asarray(emb_bytes_N, np.float64)',
        '  return heads',
        ('tests/test_communication.py', 'tests/test_bytes.py', 'tests/test_train_loop.py'),
        'embeddings not counted'),
    # The loss and the step (issue 11 found these guarded; kept to show they stay so).
    Bug('kd_no_t2', 'mhd_jax/algorithm/losses.py',
        'return temperature**2 * jnp.mean(kl_B)', 'return jnp.mean(kl_B)',
        ('tests/test_losses.py', 'tests/test_step.py'), 'KD without the T^2 factor'),
    Bug('kd_direction', 'mhd_jax/algorithm/losses.py',
        'kl_B = jnp.sum(jax.scipy.special.xlogy(t, t) - t * log_s, axis=-1)',
        'kl_B = jnp.sum(jnp.exp(log_s) * (log_s - jnp.log(jnp.maximum(t, 1e-30))), axis=-1)',
        ('tests/test_losses.py', 'tests/test_step.py'), 'KL(s || t) instead of KL(t || s)'),
    Bug('head_wiring', 'mhd_jax/algorithm/losses.py',
        'src = jnp.maximum(jnp.arange(h) - 1, 0)', 'src = jnp.arange(h)',
        ('tests/test_losses.py', 'tests/test_step.py'), 'aux head k distils from head k'),
    Bug('adjacency_transposed', 'mhd_jax/algorithm/distill.py',
        '  w_SxK = net.weights_SxK * live[:, None] * neighbours.gather(sent, senders, s)',
        '  w_SxK = net.weights_SxK.T * live[:, None] * neighbours.gather(sent, senders, s)',
        ('tests/test_step.py',), 'learning from out-neighbours'),
    Bug('include_self_ignored', 'mhd_jax/algorithm/distill.py',
        '  weights_SxHxK = losses.candidate_weights(w_SxK, h, config.include_self, self_SxK)',
        '  weights_SxHxK = losses.candidate_weights(w_SxK, h, False, self_SxK)',
        ('tests/test_step.py',), 'include_self ignored'),
    # (Removing one `stop_gradient` of the targets is an equivalent mutant: distill.py stops
    # the teachers' outputs and losses.kd / losses.embedding_mse stop the targets again.)
    Bug('embedding_target_halved', 'mhd_jax/algorithm/distill.py',
        'm_nxBxK = m_nxBxK / jnp.maximum(total_nxB, 1e-30)[..., None]',
        'm_nxBxK = 0.5 * m_nxBxK / jnp.maximum(total_nxB, 1e-30)[..., None]',
        ('tests/test_step.py',), 'embedding targets mixed with weights that do not sum to 1'),
    Bug('no_distillation_signal', 'mhd_jax/algorithm/distill.py',
        '  loss = (ce + config.nu_main * kd_H[0]',
        '  loss = (ce + 0 * config.nu_main * kd_H[0]',
        ('tests/test_distillation.py',), 'the main-head distillation term dropped'),
    # The network as an input of the step (issues 13 and 15).
    Bug('inactive_client_updated', 'mhd_jax/algorithm/step.py',
        '  return _keep_inactive(new, group, active_n)',
        '  return new',
        ('tests/test_dynamics_step.py', 'tests/test_sharding.py'),
        'a client that sits out a step (or padding) still updates'),
    Bug('inactive_client_teaches', 'mhd_jax/algorithm/distill.py',
        '  sent = live if teachers is None else teachers.sent_S.astype(jnp.float32)',
        '  sent = jnp.ones_like(live) if teachers is None else teachers.sent_S.astype(jnp.float32)',
        ('tests/test_dynamics_step.py',), 'a client that sits out a step still teaches'),
    Bug('random_draw_by_position', 'mhd_jax/algorithm/losses.py',
        '    key = jax.random.fold_in(rng, id_i)',
        '    key = rng',
        ('tests/test_step.py', '-k', 'random'), 'the random rule draws the same for every client'),
    # Later features: the default target rule, checkpoint checksums, the state check.
    Bug('confidence_weights_ignore_edges', 'mhd_jax/algorithm/losses.py',
        'w = jnp.where(cand_SxHxBxK, weights_SxHxK[:, :, None, :] * score_SxHxBxK, 0.0)',
        'w = jnp.where(cand_SxHxBxK, score_SxHxBxK, 0.0)',
        ('tests/test_losses.py',), 'confidence_weighted ignores the edge weights'),
    # The score rules (issue 20).
    Bug('score_own_head_as_received', 'mhd_jax/algorithm/losses.py',
        '  own = conf_NxHxB if own_NxHxBxC is None else scores(own_NxHxBxC, rule, power)',
        '  own = conf_NxHxB',
        ('tests/test_losses.py', '-k', 'score_rules'),
        "the own head scored on what peers receive, not on the client's own outputs"),
    Bug('relative_confidence_over_senders', 'mhd_jax/algorithm/losses.py',
        'conf_SxHxB / jnp.maximum(conf_SxHxB.mean(-1, keepdims=True), 1e-30)',
        'conf_SxHxB / jnp.maximum(conf_SxHxB.mean(0, keepdims=True), 1e-30)',
        ('tests/test_losses.py', '-k', 'score_rules'),
        "relative_confidence against the senders' mean, not the sender's own"),
    Bug('class_relative_prior_of_example', 'mhd_jax/algorithm/losses.py',
        'prior_SxHxB = jnp.take_along_axis(probs_SxHxBxC.mean(-2), c_SxHxB, -1)',
        'prior_SxHxB = probs_SxHxBxC.mean(-1)',
        ('tests/test_losses.py', '-k', 'score_rules or class_relative'),
        "class_relative divides by the example's mean probability, not the class's batch mean"),
    Bug('certainty_log_b', 'mhd_jax/algorithm/losses.py',
        'log_c = jnp.log(probs_SxHxBxC.shape[-1])', 'log_c = jnp.log(probs_SxHxBxC.shape[-2])',
        ('tests/test_losses.py', '-k', 'score_rules or certainty'),
        'certainty normalised by log B instead of log C'),
    Bug('power_ignored', 'mhd_jax/algorithm/losses.py',
        'return score_SxHxB if power == 1 else score_SxHxB ** power',
        'return score_SxHxB',
        ('tests/test_losses.py', '-k', 'score_rules or class_relative'),
        'target_power ignored'),
    Bug('power_not_passed', 'mhd_jax/algorithm/distill.py',
        "power = config.get('target_power', 1.0)", 'power = 1.0',
        ('tests/test_step.py', '-k', 'class_relative'),
        'config.target_power never reaches the rule'),
    Bug('checksums_not_checked', 'mhd_jax/outputs/checkpoint.py',
        '  """Why the checkpoint in `step_dir` cannot be trusted, or None when every file checks out."""',
        '  """Why the checkpoint in `step_dir` cannot be trusted, or None when every file checks out."""\n'
        '  return None',
        ('tests/test_verify.py',), 'a corrupt checkpoint restored as good'),
    Bug('state_check_skipped', 'mhd_jax/run/safety.py',
        '  bad = np.where((bad == 0) & ~np.asarray(jax.device_get(state_finite_N)), step, bad)',
        '  bad = bad',
        ('tests/test_nonfinite.py',), 'a NaN update saved as the last good checkpoint'),
    # The network over time (issue 15).
    Bug('matching_not_a_matching', 'mhd_jax/network/graph_schedule.py',
        '    take = first & neighbours.reverse(first, table)        # ... and at the other end',
        '    take = first', ('tests/test_schedules.py', '-k', 'matching'),
        'a client matched to two partners in one gossip step'),
    Bug('matching_one_round', 'mhd_jax/network/graph_schedule.py',
        '  matched, _ = jax.lax.while_loop(lambda c: c[1].any(), round_,\n'
        '                                  (jnp.zeros_like(link_NxK), link_NxK))',
        '  matched, _ = round_((jnp.zeros_like(link_NxK), link_NxK))',
        ('tests/test_schedules.py', '-k', 'matching'), 'a matching that is not maximal'),
    Bug('edge_failure_one_way', 'mhd_jax/network/graph_schedule.py',
        '  return jax.vmap(jax.vmap(fold))(jnp.broadcast_to(jnp.minimum(i, j), j.shape),\n'
        '                                  jnp.maximum(i, j))',
        '  return jax.vmap(jax.vmap(fold))(jnp.broadcast_to(i, j.shape), j)',
        ('tests/test_schedules.py', '-k', 'edge_failure'), 'a failed link still carries one way'),
    # The sparse exchange (a neighbour table) against the dense reference.
    Bug('table_reverse_wrong', 'mhd_jax/network/neighbours.py',
        '  reverse[rows, within] = back - links.indptr[cols]',
        '  reverse[rows, within] = back - links.indptr[rows]',
        ('tests/test_exchange.py',), "a link's other end looked up in the wrong row"),
    Bug('table_targets_misgathered', 'mhd_jax/algorithm/losses.py',
        "  return jnp.einsum('ikbd,idkbc->ikbc', mixing_SxHxBxK, _candidates(probs_SxHxBxC, senders_SxK),",
        "  return jnp.einsum('ikbd,idkbc->ikbc', mixing_SxHxBxK, _candidates(probs_SxHxBxC, senders_SxK[::-1]),",
        ('tests/test_exchange.py',), "targets mixed from another row's candidates"),
    Bug('padded_table_unmapped', 'mhd_jax/placement/layout.py',
        '                           active, ids, senders.at[real].set(position[net.senders_SxK]))',
        '                           active, ids, senders.at[real].set(net.senders_SxK))',
        ('tests/test_exchange.py',), 'a padded table keeps real ids where stacked positions belong'),
    Bug('draws_ignore_step', 'mhd_jax/network/graph_schedule.py',
        '  key = jax.random.fold_in(schedule.key, step)\n', '  key = schedule.key\n',
        ('tests/test_schedules.py', '-k', 'seed_and_step'), 'the same graph at every step'),
    Bug('cycle_off_by_one', 'mhd_jax/network/graph_schedule.py',
        '    return graphs[((step - 1) // schedule.every)',
        '    return graphs[(step // schedule.every)',
        ('tests/test_schedules.py', '-k', 'cycle'), 'a cycle that switches one step early'),
    Bug('trace_column_off_by_one', 'mhd_jax/network/participation.py',
        'p.trace_NxT, step - 1, axis=1', 'p.trace_NxT, step, axis=1',
        ('tests/test_participation.py', '-k', 'trace'), 'step s reads the trace of step s + 1'),
    Bug('stragglers_in_phase', 'mhd_jax/network/participation.py',
        '    phase[ids] = np.arange(len(ids)) % d.straggler_every', '    phase[ids] = 0',
        ('tests/test_participation.py', '-k', 'stragglers'), 'every straggler arrives at once'),
    Bug('lag_push_before_read', 'mhd_jax/network/lag.py',
        '  sent_N, outputs = read(buffer, step)\n'
        '  return sent_N, outputs, push(buffer, step + staleness(buffer), ahead, active_N)',
        '  buffer = push(buffer, step + staleness(buffer), ahead, active_N)\n'
        '  sent_N, outputs = read(buffer, step)\n  return sent_N, outputs, buffer',
        ('tests/test_lag.py',), 'the lagged slot overwritten before it is read'),
    # The optimizer factory and the wire's embedding bytes (issue 23 found these unguarded).
    Bug('warmup_skipped', 'mhd_jax/population/optim.py',
        'optax.linear_schedule(0.0, lr, opt_config.warmup_steps)',
        'optax.linear_schedule(lr, lr, opt_config.warmup_steps)',
        ('tests/test_optim.py',), 'the constant schedule starts at the full rate: no warm-up'),
    Bug('cosine_span_off', 'mhd_jax/population/optim.py',
        'max(num_steps, opt_config.warmup_steps + 1))',
        'max(num_steps + opt_config.warmup_steps, opt_config.warmup_steps + 1))',
        ('tests/test_optim.py',), 'the cosine decay ends warmup_steps after num_steps'),
    Bug('clip_after_optimizer', 'mhd_jax/population/optim.py',
        'tx = optax.chain(optax.clip_by_global_norm(opt_config.grad_clip), tx)',
        'tx = optax.chain(tx, optax.clip_by_global_norm(opt_config.grad_clip))',
        ('tests/test_optim.py',), 'the updates clipped instead of the gradients'),
    Bug('grad_clip_ignored', 'mhd_jax/population/optim.py',
        '  if opt_config.grad_clip:\n', '  if opt_config.grad_clip < 0:\n',
        ('tests/test_optim.py',), 'optimizer.grad_clip ignored'),
    Bug('wire_every_skips_embedding', 'mhd_jax/wire/compression.py',
        'np.asarray(emb_readers_N) * frac_H[0]', 'np.asarray(emb_readers_N)',
        ('tests/test_wire_bytes.py',), 'embedding bytes counted on every step under wire.every'),
    # The checks that need the data, and a failed save (issue 23).
    Bug('batch_checked_against_all_clients', 'mhd_jax/run/data_check.py',
        '  if config.data.batch_size > sizes[smallest]:',
        '  if config.data.batch_size > sizes.sum():', ('tests/test_bad_inputs.py',),
        'a batch checked against all private examples, not the smallest set'),
    Bug('zero_size_parameters_missed', 'mhd_jax/population/groups.py',
        '             if leaf.size == 0]', '             if leaf.size < 0]',
        ('tests/test_bad_inputs.py',), 'a model that pools its images away is let through'),
    Bug('save_error_unwrapped', 'mhd_jax/outputs/checkpoint.py',
        "    raise _failed(f'saving the checkpoint of step {step} in {mngr.directory}', e, "
        'started) from e', '    raise',
        ('tests/test_bad_inputs.py',), "orbax's exception of a failed save escapes as it is"),
    # Start-up at thousands of clients (issue 21): same results, costs that grow as N.
    Bug('init_keys_written_out', 'mhd_jax/population/state.py',
        '  keys = client_keys(rng, first_client, spec.num_clients)',
        '  keys = jnp.stack([jax.random.fold_in(rng, first_client + i) '
        'for i in range(spec.num_clients)])',
        ('tests/test_scale.py',), 'a fold_in per client written into the init program'),
    Bug('streams_one_epoch_kept', 'mhd_jax/data/contract.py',
        '    self._slots = -(-(batch_size - 1) // self._sizes) + 1  # epochs one batch can span',
        '    self._slots = np.ones_like(self._sizes)', ('tests/test_data.py',),
        'a batch that spans two epochs reads one permutation for both'),
    Bug('regular_swap_unchecked', 'mhd_jax/network/topology.py',
        '    if len({u, v, x, y}) < 4 or (u, x) in linked or (v, y) in linked:',
        '    if len({u, v, x, y}) < 4 or (u, x) in linked:', ('tests/test_topology.py',),
        'a sparse random_regular swap that the dense one refused'),
    Bug('clients_unsorted', 'mhd_jax/data/partition.py',
        '  order = np.lexsort((values, dest))', "  order = np.argsort(dest, kind='stable')",
        ('tests/test_partition.py',), "a client's indices in draw order, not sorted"),
    Bug('random_readers_without_self', 'mhd_jax/wire/communication.py',
        'np.maximum(total + (config.include_self and k > 0), 1e-300)',
        'np.maximum(total, 1e-300)', ('tests/test_communication.py',),
        "the random rule's draw misses the client itself under include_self"),
    Bug('hops_transposed', 'mhd_jax/studies/metrics.py',
        '  return np.where(np.isinf(dist), -1, dist).astype(np.int64)',
        '  return np.where(np.isinf(dist), -1, dist).astype(np.int64).T', ('tests/test_hops.py',),
        'hop distances along the links the wrong way'),
    Bug('resident_bytes_times_n', 'mhd_jax/run/residency.py',
        '  return max(b1 - w1 * per_client, 0), per_client', '  return 0, b1',
        ('tests/test_cohorts.py', '-k', 'auto'),
        "auto counts one cohort's buffers over every client's outputs once per client"),
)


def _copy_tree(dst: str) -> None:
  """Copies the working tree's tracked and untracked, not ignored, files."""
  files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout.split('\0')
  for rel in filter(None, files):
    src = os.path.join(ROOT, rel)
    if os.path.isfile(src):
      os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
      shutil.copy2(src, os.path.join(dst, rel))


def _first_failure(output: str) -> str:
  m = re.search(r'^(?:FAILED|ERROR) (\S+)', output, re.M)
  return m.group(1) if m else '(pytest failed: ' + output.strip().splitlines()[-1][:80] + ')'


def run_bug(bug: Bug, tree: str, timeout: int) -> tuple[str, str, float]:
  """(caught: 'yes' | 'NO' | 'n/a', by which test or why, seconds)."""
  path = os.path.join(tree, bug.path)
  with open(path) as f:
    original = f.read()
  if original.count(bug.old) != 1:
    return 'n/a', f'text found {original.count(bug.old)} times in {bug.path}', 0.0
  with open(path, 'w') as f:
    f.write(original.replace(bug.old, bug.new))
  start = time.time()
  try:
    command = [sys.executable, '-m', 'pytest', '-q', '-x', '-n', '0', *bug.tests]
    out = subprocess.run(command, cwd=tree, capture_output=True, text=True, timeout=timeout)
    if out.returncode == 0:
      return 'NO', 'survived: ' + ' '.join(bug.tests), time.time() - start
    return 'yes', _first_failure(out.stdout + out.stderr), time.time() - start
  except subprocess.TimeoutExpired:
    return 'NO', f'timed out after {timeout} s', time.time() - start
  finally:
    with open(path, 'w') as f:
      f.write(original)


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('bugs', nargs='*', help='names from BUGS (default: all)')
  p.add_argument('--list', action='store_true', help='list the bugs and exit')
  p.add_argument('--timeout', type=int, default=900, help='seconds per bug')
  args = p.parse_args()
  by_name = {b.name: b for b in BUGS}
  unknown = [n for n in args.bugs if n not in by_name]
  if unknown:
    p.error(f'unknown bugs {unknown}; --list shows them.')
  bugs = [by_name[n] for n in args.bugs] or list(BUGS)
  if args.list:
    for b in bugs:
      print(f'{b.name:32} {b.path:28} {" ".join(b.tests)}\n{"":32} {b.what}')
    return 0
  rows, status = [], 0
  with tempfile.TemporaryDirectory(prefix='mutate_') as tree:
    _copy_tree(tree)
    for b in bugs:
      caught, by, seconds = run_bug(b, tree, args.timeout)
      rows.append((b.name, caught, by, seconds))
      print(f'{b.name}: {caught} ({by}, {seconds:.0f} s)', file=sys.stderr, flush=True)
      status = max(status, {'yes': 0, 'NO': 1, 'n/a': 2}[caught])
  print('| bug | caught? | by which test | s |\n|---|---|---|---|')
  for name, caught, by, seconds in rows:
    print(f'| {name} | {caught} | {by} | {seconds:.0f} |')
  return status


if __name__ == '__main__':
  sys.exit(main())
