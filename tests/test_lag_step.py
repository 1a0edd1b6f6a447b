"""Teachers that lag tau steps, in the step: targets from the neighbours' old outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mhd_jax import data as data_lib
from mhd_jax.algorithm import distill
from mhd_jax.algorithm import losses
from mhd_jax.outputs import checkpoint
from mhd_jax.placement import layout as layout_lib
from mhd_jax.population import state as state_lib
from mhd_jax.run import programs
from tests import test_dynamics_step as tds
from tests import test_step as ts
from tests.conftest import short_config

TAU, STEPS = 2, 5
# Client 1 sits out step 2, so what it sent for step 2 + TAU does not count.
ACTIVE_NxT = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)


def _batches(num_steps, tau=TAU):
  """Batches of steps 1..num_steps (index s - 1), each with the public batch of step s + tau."""
  raw = [ts.make_batch(s) for s in range(num_steps + tau)]
  return [dict(raw[s], public_ahead=raw[s + tau]['public']) for s in range(num_steps)], raw


def _config(tau=TAU):
  config = ts.distill_config('mean', include_self=True, nu_emb=0.5)
  config.dynamics = {'staleness': tau}
  config.data = {'public_batch_size': ts.B_PUB}
  return config


def _program(specs, config):
  """(layout, jitted step, the initial state with its lag buffers filled)."""
  layout = layout_lib.Layout.create([s.num_clients for s in specs], layout_lib.make_mesh(1))
  state = layout.pad_state(state_lib.init_state(specs, ts.IMAGE, jax.random.PRNGKey(0)))
  _, raw = _batches(0, config.dynamics.staleness)
  publics = np.stack([b['public']['image'] for b in raw])
  state = programs.initial_lag(layout, specs, config, 'vmap')(state, layout.replicate(publics))
  return layout, programs.train_step(layout, specs, config, 'vmap'), state


def _run(specs, config, batches, dynamics, state=None, first=1):
  """States before each step (host copies) and each step's metrics."""
  layout, step, init = _program(specs, config)
  state = init if state is None else layout.pad_state(state)
  states, metrics = [], []
  for batch in batches:
    states.append(jax.device_get(state))
    state, m, _ = step(state, layout.place_batch(batch), jax.random.PRNGKey(7),
                       np.zeros(ts.N, np.int32), dynamics)
    metrics.append(jax.device_get(m))
  return states + [jax.device_get(state)], metrics


def _outputs(model, group, i, u):
  """Client i's (logits [H, B, C], embedding [B, D]) on u in training mode, by plain apply."""
  variables = {'params': jax.tree.map(lambda x: x[i], group.params),
               'batch_stats': jax.tree.map(lambda x: x[i], group.batch_stats)}
  (logits, inter), _ = model.apply(variables, u, train=True, mutable=['batch_stats'])
  return np.asarray(logits, np.float64), np.asarray(inter['embedding'], np.float64)


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _kd(target, logits, t):
  log_s = np.log(_softmax(logits / t))
  return t * t * np.mean(np.sum(np.where(target > 0, target * np.log(target), 0) - target * log_s,
                                -1))


def _reference(model, states, raw, t, i, config, tau=TAU):
  """(kd_main, kd_aux, emb) of client i at step t, by hand: the neighbours j with a link and
  that were active at step t - tau (everyone before step 1) speak with their parameters of
  step max(t - tau - 1, 0) on the public batch of step t; i's own heads are live."""
  temp, u = config.temperature, raw[t - 1]['public']['image']
  old, live = states[max(t - tau - 1, 0)].groups[0], states[t - 1].groups[0]
  sent = ACTIVE_NxT[:, t - tau - 1] if t > tau else np.ones(ts.N, bool)
  w = ts.ADJ[i] * sent
  teach = {j: _outputs(model, old, j, u) for j in range(ts.N) if w[j] > 0}
  z, e = _outputs(model, live, i, u)
  probs = {j: _softmax(logits / temp) for j, (logits, _) in teach.items()}
  target0 = sum(w[j] * probs[j][0] for j in teach) / w.sum()
  kd_aux = 0.0
  for k in range(1, ts.H):  # include_self: the own head k - 1, live, with weight 1
    target = (sum(w[j] * probs[j][k - 1] for j in teach) + _softmax(z[k - 1] / temp)) / (
        w.sum() + 1)
    kd_aux += _kd(target, z[k], temp)
  emb_target = sum(w[j] * teach[j][1] for j in teach) / w.sum()
  return _kd(target0, z[0], temp), kd_aux, np.mean(np.sum((e - emb_target) ** 2, -1))


def test_lagged_targets_equal_the_old_parameters_outputs():
  """Every active client's kd_main, kd_aux and embedding term at every step equal those
  computed by hand from the parameters of tau steps before, on that step's public batch."""
  specs, config = ts.make_specs('convbn'), _config()
  batches, raw = _batches(STEPS)
  dynamics = (programs.static_dynamics(ts.ADJ)[0], tds._trace(ACTIVE_NxT))
  states, metrics = _run(specs, config, batches, dynamics)
  for t in range(1, STEPS + 1):
    for i in np.flatnonzero(ACTIVE_NxT[:, t - 1]):
      want = _reference(specs[0].model, states, raw, t, i, config)
      got = (metrics[t - 1].kd_main[i], metrics[t - 1].kd_aux[i], metrics[t - 1].emb[i])
      np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6, err_msg=f'step {t} client {i}')


def test_live_targets_differ_from_lagged_ones():
  """The reference above is not vacuous: with tau = 0 the step's kd_main at step 4 differs."""
  specs, config = ts.make_specs('convbn'), ts.distill_config('mean', include_self=True)
  dynamics = (programs.static_dynamics(ts.ADJ)[0], tds._trace(ACTIVE_NxT))
  batches, raw = _batches(4)
  _, lagged = _run(specs, _config(), batches, dynamics)
  _, live = tds._program_steps(specs, config, dynamics, [ts.make_batch(s) for s in range(4)])
  assert np.abs(np.asarray(lagged[-1].kd_main) - np.asarray(live.kd_main)).max() > 1e-3


def test_extra_forward_leaves_batch_statistics_and_inactive_clients_alone():
  """The batch statistics after a step are those of tau = 0 (the pass ahead updates none), and
  an inactive client's parameters, optimizer and statistics are kept bit for bit."""
  specs = ts.make_specs('convbn')
  dynamics = (programs.static_dynamics(ts.ADJ)[0], tds._trace(ACTIVE_NxT))
  batches, _ = _batches(2)
  states, _ = _run(specs, _config(), batches, dynamics)
  live, _ = tds._program_steps(specs, ts.distill_config('mean', include_self=True), dynamics,
                               [ts.make_batch(0)])
  jax.tree.map(np.testing.assert_array_equal, states[1].groups[0].batch_stats,
               live.groups[0].batch_stats)
  client1 = lambda s: jax.tree.map(lambda x: x[1], s.groups[0])
  jax.tree.map(np.testing.assert_array_equal, client1(states[2]), client1(states[1]))


def test_resumed_from_a_checkpoint_continues_exactly(tmp_path):
  """Save the state (lag buffers included) after 2 steps, restore it into
  `checkpoint.abstract_state`, run 3 more: bit-identical to 5 steps in one go."""
  specs, config = ts.make_specs('convbn'), _config()
  config.data = {'public_batch_size': ts.B_PUB}
  batches, _ = _batches(STEPS)
  dynamics = (programs.static_dynamics(ts.ADJ)[0], tds._trace(ACTIVE_NxT))
  full, full_metrics = _run(specs, config, batches, dynamics)
  mngr = checkpoint.manager(str(tmp_path), short_config(**{'checkpoint.every': 1}))
  layout = layout_lib.Layout.create([ts.N], layout_lib.make_mesh(1))
  checkpoint.save(mngr, 2, layout.unpad_state(jax.device_put(full[2])), 0.0, force=True)
  mngr.wait_until_finished()
  restored, _ = checkpoint.restore(mngr, checkpoint.abstract_state(specs, ts.IMAGE, config))
  mngr.close()
  assert restored.lag is not None
  resumed, metrics = _run(specs, config, batches[2:], dynamics, state=restored)
  jax.tree.map(np.testing.assert_array_equal, resumed[-1], full[-1])
  jax.tree.map(np.testing.assert_array_equal, metrics[-1], full_metrics[-1])


@pytest.mark.parametrize('tau', [0, 2])
def test_data_serves_the_public_batch_tau_steps_ahead(tau):
  """`public_ahead` of step s is the public batch of step s + tau (digits), absent at tau = 0."""
  data = data_lib.get_data(short_config(**{'dynamics.staleness': tau}))
  it = data.train_batches(3)
  batches = [next(it) for _ in range(tau + 1)]
  assert ('public_ahead' in batches[0]) == bool(tau)
  if tau:
    np.testing.assert_array_equal(batches[0]['public_ahead']['image'],
                                  batches[tau]['public']['image'])


def test_tfds_serves_the_public_batch_tau_steps_ahead():
  """TFDS (mock data): `public_ahead` of step s is step s + tau's public batch, augmentation
  included; the private and public batches are those of tau = 0."""
  tfds = pytest.importorskip('tensorflow_datasets')
  from mhd_jax.data import tfds_data  # pylint: disable=g-import-not-at-top  # loads TensorFlow
  from tests import test_tfds_data  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=60):
    lagged = test_tfds_data.take(tfds_data.get_data(test_tfds_data.make_config(
        dynamics={'staleness': 2})), 3, 3)
    live = test_tfds_data.take(tfds_data.get_data(test_tfds_data.make_config()), 3, 1)[0]
  np.testing.assert_array_equal(lagged[0]['public_ahead']['image'], lagged[2]['public']['image'])
  assert 'public_ahead' not in live
  for stream in ('private', 'public'):
    jax.tree.map(np.testing.assert_array_equal, lagged[0][stream], live[stream])


@pytest.mark.slow  # a benchmark script in its own process
def test_dynamics_overhead_benchmark_quick():
  """`benchmarks/dynamics_overhead.py --quick` runs all three steps and its ratios are the
  quotients of the times it prints."""
  from tests import test_benchmarks  # pylint: disable=g-import-not-at-top
  (row,) = test_benchmarks.run_benchmark('dynamics_overhead.py')
  assert row['n_clients'] == 2
  for k in ('gossip', 'lag'):
    assert row[f'ratio_{k}_vs_static'] == pytest.approx(
        row[f'{k}_step_ms'] / row['static_step_ms'], rel=2e-3, abs=1e-3)
    assert row[f'{k}_step_ms'] > 0


@pytest.mark.parametrize('rule', losses.TARGET_RULES)
def test_own_head_candidate_is_live_under_every_rule(rule):
  """With `own` probabilities, receiver i's mixing and targets are those of the plain rule on
  the candidates' probabilities with row i replaced by its own (live) ones."""
  rng = np.random.default_rng(0)
  n, h, b, c = 4, 3, 5, 6
  probs, own = (jax.nn.softmax(jnp.asarray(rng.normal(size=(n, h, b, c)), jnp.float32) * 3)
                for _ in range(2))
  adjacency = jnp.asarray(rng.random((n, n)) * (1 - np.eye(n)) * (rng.random((n, n)) < 0.7),
                          jnp.float32)
  weights = losses.candidate_weights(adjacency, h, include_self=True)
  key = jax.random.PRNGKey(3)
  m = losses.mixing_weights(probs, weights, rule, key, own_NxHxBxC=own)
  targets = distill.targets(m, probs, own)
  for i in range(n):
    mine = probs.at[i].set(own[i])
    m_i = losses.mixing_weights(mine, weights, rule, key)
    np.testing.assert_allclose(m[i], m_i[i], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(targets[i], losses.mix_targets(m_i, mine)[i], rtol=1e-5, atol=1e-7)
