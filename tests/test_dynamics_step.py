"""The step under a changing network: schedules and participation drawn inside the program."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import default
import mhd_jax
from mhd_jax.algorithm import evaluate
from mhd_jax.algorithm import step as step_lib
from mhd_jax.network import graph_schedule
from mhd_jax.network import participation
from mhd_jax.placement import layout as layout_lib
from mhd_jax.population import state as state_lib
from mhd_jax.run import programs
from mhd_jax.run import progress
from mhd_jax.run import train
from tests import test_step as ts
from tests.conftest import read_records, short_config


def _program_steps(specs, config, dynamics, batches, strategy='vmap'):
  """(state, metrics) after `batches` through the run's program (`programs.train_step`)."""
  n = sum(s.num_clients for s in specs)
  layout = layout_lib.Layout.create([s.num_clients for s in specs], layout_lib.make_mesh(1))
  step = programs.train_step(layout, specs, config, strategy)
  state = layout.pad_state(state_lib.init_state(specs, ts.IMAGE, jax.random.PRNGKey(0)))
  first_bad = np.zeros(n, np.int32)
  for batch in batches:
    state, metrics, first_bad = step(state, layout.place_batch(batch), jax.random.PRNGKey(7),
                                     first_bad, dynamics)
  return state, metrics


def _trace(active_NxT):
  """A participation that follows `active_NxT` (column s-1 = step s)."""
  a = np.asarray(active_NxT, bool)
  n = a.shape[0]
  return participation.Participation(
      mode='trace', key=jax.random.PRNGKey(0), availability=jnp.ones((), jnp.float32),
      trace_NxT=jnp.asarray(a), every_N=jnp.ones(n, jnp.int32), phase_N=jnp.zeros(n, jnp.int32))


def _config(**dynamics):
  config = default.get_config()
  config.num_clients = ts.N
  config.dynamics.update(dynamics)
  return config


def test_default_dynamics_are_bit_identical_to_the_fixed_graph_step():
  """Static schedule, everyone every step, no lag: the program computes what the plain step does."""
  config, specs = ts.distill_config('random'), ts.make_specs('convbn')
  batches = [ts.make_batch(s) for s in range(3)]
  adjacency = np.asarray(ts.ADJ, np.float32)
  run = _config()
  run.topology, run.adjacency = 'explicit', '; '.join(' '.join(map(str, r)) for r in ts.ADJ)
  dynamics = (graph_schedule.build(run), participation.build(run))
  state, metrics = _program_steps(specs, config, dynamics, batches)
  ref, ref_metrics = ts.run_steps(specs, adjacency, config, batches)
  jax.tree.map(np.testing.assert_array_equal, state, ref)
  jax.tree.map(np.testing.assert_array_equal, metrics, ref_metrics)


def test_unavailable_client_keeps_its_state_and_teaches_nobody():
  """Client 1 sits out step 2: its state is bit-identical across that step, and the others
  learn as in a per-client reference over the graph without client 1."""
  config, specs = ts.distill_config('mean', include_self=True), ts.make_specs('convbn')
  batches = [ts.make_batch(s) for s in range(2)]
  adjacency = np.asarray(ts.ADJ, np.float32)
  dynamics = (programs.static_dynamics(adjacency)[0], _trace([[1, 1], [1, 0], [1, 1]]))
  after_one, _ = _program_steps(specs, config, dynamics, batches[:1])
  after_two, metrics = _program_steps(specs, config, dynamics, batches)
  client = lambda s, i: jax.tree.map(lambda x: x[i], s.groups[0])
  jax.tree.map(np.testing.assert_array_equal, client(after_two, 1), client(after_one, 1))
  without = adjacency.copy()
  without[:, 1] = without[1, :] = 0
  ref, ref_metrics = ts.reference_step(specs[0], after_one.groups[0], batches[1], without, config,
                                       jax.random.PRNGKey(7), 1)
  for i in (0, 2):
    ts.assert_trees_close(client(after_two, i), jax.tree.map(lambda x, i=i: x[i], ref),
                          rtol=2e-5, atol=2e-6)
    ts.assert_trees_close(metrics.kd_main[i], ref_metrics.kd_main[i], rtol=2e-5, atol=2e-6)


def test_failed_links_carry_nothing():
  """Under edge failure the step is the fixed-graph step on that step's surviving links."""
  config, specs = ts.distill_config('most_confident'), ts.make_specs('mlp')
  run = _config(schedule='edge_failure', failure_p=0.5)
  run.topology = 'complete'
  full = np.ones((ts.N, ts.N), np.float32) - np.eye(ts.N, dtype=np.float32)
  for run.seed in range(20):  # the first seed whose step-1 draw fails some links, keeps some
    schedule = graph_schedule.build(run)
    a_1 = np.asarray(graph_schedule.weights_at(schedule, 1))
    if 0 < a_1.sum() < full.sum():
      break
  assert 0 < a_1.sum() < full.sum()
  dynamics = (schedule, participation.build(run))
  batch = ts.make_batch(0)
  state, metrics = _program_steps(specs, config, dynamics, [batch])
  ref, ref_metrics = ts.run_steps(specs, a_1, config, [batch])
  jax.tree.map(np.testing.assert_array_equal, state, ref)
  jax.tree.map(np.testing.assert_array_equal, metrics, ref_metrics)


def test_final_table_reports_the_steps_each_client_took_part_in():
  acc = evaluate.Accuracies(private_NxH=np.zeros((3, 1)), shared_NxH=np.ones((3, 1)),
                                  correct_NxHxC=None, count_C=None)
  rows = progress.client_table(acc, np.array([4, 2, 1])).splitlines()
  assert rows[0].endswith('steps') and [r.split()[-1] for r in rows[1:]] == ['4', '2', '1', '2.3']


def test_logged_metrics_and_summary_count_the_steps_each_client_took_part_in(tmp_path):
  trace = np.array([[1, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0]])  # client 2 sits out all 4 steps
  np.savetxt(tmp_path / 'trace.csv', trace, fmt='%d', delimiter=',')
  records = {}
  for every in (1, 4):  # the same run, logged every step and once over the 4 steps
    config = short_config(**{'num_clients': 3, 'num_steps': 4, 'log_every': every,
                             'eval_every': 4, 'checkpoint.every': 0, 'model.width': 16,
                             'strategy': 'vmap', 'dynamics.participation': 'trace',
                             'dynamics.trace_file': str(tmp_path / 'trace.csv')})
    summary = train.train_and_evaluate(config, str(tmp_path / f'every{every}'))
    assert [c['steps_taken'] for c in summary['clients']] == [4, 1, 0]
    records[every] = [r for r in read_records(str(tmp_path / f'every{every}')) if 'clients' in r]
  per_step = np.array([r['clients']['ce'] for r in records[1]])  # [4 steps, 3 clients]
  window = np.array(records[4][0]['clients']['ce'])
  np.testing.assert_allclose(window[0], per_step[:, 0].mean(), rtol=1e-6)
  np.testing.assert_allclose(window[1], per_step[2, 1], rtol=1e-6)  # its one step, not / 4
  assert np.isnan(window[2]) and np.isnan(per_step[:, 2]).all()
  assert np.isnan(per_step[[0, 1, 3], 1]).all() and np.isfinite(per_step[:, 0]).all()
  np.testing.assert_allclose(records[4][0]['ce'], window[:2].mean(), rtol=1e-6)  # client 2 out


def test_weight_averaging_in_the_loop_leaves_out_a_client_that_sits_the_step_out(tmp_path):
  trace = np.array([[1, 1], [1, 0], [1, 1]])  # client 1 sits out step 2, the averaging step
  np.savetxt(tmp_path / 'trace.csv', trace, fmt='%d', delimiter=',')
  params = {}
  for steps in (1, 2):
    config = short_config(**{'num_clients': 3, 'num_steps': steps, 'log_every': 1,
                             'eval_every': 2, 'checkpoint.every': 0, 'model.width': 16,
                             'strategy': 'vmap', 'average_every': 2, 'num_heads': 1,
                             'nu_main': 0.0, 'nu_aux': 0.0, 'dynamics.participation': 'trace',
                             'dynamics.trace_file': str(tmp_path / 'trace.csv')})
    train.train_and_evaluate(config, str(tmp_path / f'steps{steps}'))
    params[steps] = mhd_jax.load(str(tmp_path / f'steps{steps}')).state.groups[0].params
  one = lambda tree, i: jax.tree.map(lambda x: x[i], tree)
  jax.tree.map(np.testing.assert_array_equal, one(params[2], 1), one(params[1], 1))
  # Clients 0 and 2 averaged with each other only: their weights are now equal.
  jax.tree.map(np.testing.assert_array_equal, one(params[2], 0), one(params[2], 2))
