"""A population streamed through the devices in cohorts: the streamed step is the resident one.

The resident step is the reference: the streamed step (pass 1, every client's
sent outputs; pass 2, each cohort's update against them) must give the same
state and metrics for every rule and feature. The 8-device checks are in
`sharded_checks.py`.
"""

import json
import os
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import launch
import mhd_jax
from mhd_jax import config_base
from mhd_jax import data as data_lib
from mhd_jax.algorithm import distill
from mhd_jax.algorithm import losses
from mhd_jax.placement import cohorts as cohorts_lib
from mhd_jax.placement import layout as layout_lib
from mhd_jax.population import groups as groups_lib
from mhd_jax.population import state as state_lib
from mhd_jax.run import config_check
from mhd_jax.run import programs
from mhd_jax.run import residency
from mhd_jax.run import streamed_step
from mhd_jax.run import streaming
from mhd_jax.run import train
from tests import test_dynamics_step as tds
from tests import test_exchange as te
from tests import test_step as ts
from tests.conftest import read_records, short_config

# Client 3 sits the step out: it teaches nobody and learns nothing.
ACTIVE_S = jnp.array([1, 1, 1, 0, 1, 1], bool)
# test_exchange's helpers: two groups of 4 and 2 clients, their terms, a table of a network.
_logits, _config, _terms, _sparse, _assert_same, _specs = (
    te._logits, te._config, te._terms, te._sparse, te._assert_same, te._specs)


def _streamed_terms(net, config, teachers=None, step=1, k=3):
  """`test_exchange._terms` computed cohort by cohort (of up to k clients of one group, padded
  with ids >= S), against every client's outputs as `distill.Teachers`, joined in id order."""
  logits = _logits(0)
  embs = [jax.random.normal(jax.random.PRNGKey(1), (4, te.B, 3)),
          jax.random.normal(jax.random.PRNGKey(2), (2, te.B, 5))]
  every = teachers or distill.Teachers(logits, embs, net.active_S)
  out = []
  for g, (first, n) in enumerate([(0, 4), (4, 2)]):
    for a in range(0, n, k):
      count = min(k, n - a)
      ids = jnp.asarray(np.r_[first + a + np.arange(count), te.S + np.arange(k - count)],
                        jnp.int32)
      rows = np.minimum(np.asarray(ids), first + n - 1)  # padding: any row of the group
      students = [embs[h][rows - first] if h == g else embs[h][:0] for h in range(2)]
      m = distill.terms(logits[rows] + 0.5, jnp.zeros((k, te.B), jnp.int32), logits[rows],
                        students, [k if h == g else 0 for h in range(2)], net.cohort(ids),
                        config, jax.random.PRNGKey(7), step, every)
      out.append(jax.tree.map(lambda x, c=count: x[:c], m))
  return jax.tree.map(lambda *x: jnp.concatenate(x), *out)


@pytest.mark.parametrize('include_self', [False, True], ids=['neighbours', 'include_self'])
@pytest.mark.parametrize('rule', losses.TARGET_RULES)
def test_every_rule_gives_the_resident_terms_cohort_by_cohort(rule, include_self):
  """Two groups of different embedding sizes, a client out, dense and on a table."""
  config = _config(rule, include_self)
  dense = distill.Network.static(te.A).replace(active_S=ACTIVE_S)
  for net in (dense, _sparse(dense)):
    _assert_same(_terms(net, config), _streamed_terms(net, config))


@pytest.mark.parametrize('wire', [{}, dict(topk=2, bits=8), dict(heads_sent=1, every=2)],
                         ids=['lag', 'lag_topk_bits', 'lag_heads_every'])
def test_lagged_teachers_and_the_wire_give_the_resident_terms(wire):
  teachers = distill.Teachers(logits_SxHxBxC=_logits(3),
                              embs=[jax.random.normal(jax.random.PRNGKey(4), (4, te.B, 3)),
                                    jax.random.normal(jax.random.PRNGKey(5), (2, te.B, 5))],
                              sent_S=jnp.array([1, 0, 1, 1, 1, 1], bool))
  config = _config('confidence_weighted', True, **wire)
  dense = distill.Network.static(te.A).replace(active_S=ACTIVE_S)
  for step in (1, 2):
    for net in (dense, _sparse(dense)):
      _assert_same(_terms(net, config, teachers, step),
                      _streamed_terms(net, config, teachers, step, k=2))


def test_the_cohort_terms_are_not_vacuous():
  """A cohort whose rows are read as the senders' own would change its terms."""
  config = _config('confidence_weighted', True)
  net = distill.Network.static(te.A)
  want = _terms(net, config)
  got = _streamed_terms(net.replace(weights_SxK=net.weights_SxK.T), config)
  assert not np.allclose(want.kd_main, got.kd_main, rtol=1e-3)


def _run(specs, config, dynamics, batches, image, k, num_devices=1, strategy='vmap'):
  """(state of the real clients, per-step metrics, first_bad) after `batches`: resident (k = 0,
  `programs`) or streamed in cohorts of k (`streaming`), on `num_devices` devices."""
  sizes, rng = [s.num_clients for s in specs], jax.random.PRNGKey(7)
  mesh = layout_lib.make_mesh(num_devices)
  place = (layout_lib.Layout.create(sizes, mesh) if not k
           else cohorts_lib.Cohorts.create(sizes, k, mesh))
  progs = streaming if k else programs
  state = place.init_state(specs, image, jax.random.PRNGKey(0))
  if k:  # made cohort by cohort: the resident init, bit for bit
    ts.assert_trees_close(state, state_lib.init_state(specs, image, jax.random.PRNGKey(0)),
                          rtol=0, atol=0)
  tau = config.get('dynamics', {}).get('staleness', 0)
  if tau:
    publics = np.stack([b['public']['image'] for b in batches[:tau]])
    state = progs.initial_lag(place, specs, config, strategy)(state, place.replicate(publics))
    batches = [dict(b, public_ahead=a['public']) for b, a in zip(batches, batches[tau:])]
  first_bad, metrics = np.zeros(sum(sizes), np.int32), []
  step = progs.train_step(place, specs, config, strategy)
  if k:
    step = step.lower(state, place.place_batch(batches[0]), rng, first_bad, dynamics).compile()
  for batch in batches:
    state, m, first_bad = step(state, place.place_batch(batch), rng, first_bad, dynamics)
    metrics.append(jax.device_get(m))
  return jax.device_get(place.unpad_state(state)), metrics, np.asarray(first_bad)


def _trace_dynamics(adjacency, active_NxT, sparse=False):
  return programs.static_dynamics(adjacency, sparse)[0], tds._trace(active_NxT)


def _two_group_batches(steps):
  rng = np.random.default_rng(0)
  return [{'private': {'image': rng.normal(size=(te.S, 3, 4, 4, 1)).astype(np.float32),
                       'label': rng.integers(te.C, size=(te.S, 3)).astype(np.int32)},
           'public': {'image': rng.normal(size=(te.B, 4, 4, 1)).astype(np.float32)}}
          for _ in range(steps)]


def _lag_wire_config():
  config = ts.distill_config('confidence_weighted', include_self=True)
  config.dynamics = {'staleness': 2}
  config.data = {'public_batch_size': ts.B_PUB}
  config.wire = dict(topk=2, bits=8, heads_sent=0, every=1)
  return config


def _dp_config():
  config = ts.distill_config('most_confident')
  config.dp = ml_collections.ConfigDict(dict(enabled=True, noise_multiplier=1.0, clip_norm=0.5,
                                             delta=1e-5))
  return config


CASES = {
    # two groups (Adam and SGD, embeddings of 8 and 6 units), the random rule, include_self,
    # nu_emb, a neighbour table, client 3 out at step 2; cohorts [0 1 2] [3 . .] [4 5 .]
    'two_groups_random_table': lambda: (
        _specs(), _config('random', True), _two_group_batches(2), (4, 4, 1), 3,
        _trace_dynamics(te.A, np.array([[1, 1]] * 3 + [[1, 0]] + [[1, 1]] * 2), sparse=True)),
    # batch statistics, teachers that lag 2 steps, top-2 at 8 bits, client 1 out at step 2
    'batchnorm_lag_wire': lambda: (
        ts.make_specs('convbn'), _lag_wire_config(), [ts.make_batch(s) for s in range(5)],
        ts.IMAGE, 2, _trace_dynamics(ts.ADJ, np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]]))),
    # DP-SGD (noise keyed by client id), most_confident, every client every step
    'dp': lambda: (ts.make_specs(), _dp_config(), [ts.make_batch(s) for s in range(2)],
                   ts.IMAGE, 2, programs.static_dynamics(ts.ADJ)),
}


@pytest.mark.parametrize('case', [
    'two_groups_random_table', pytest.param('batchnorm_lag_wire', marks=pytest.mark.slow),
    pytest.param('dp', marks=pytest.mark.slow)])  # slow: one more compile each (in .ci/run)
def test_the_streamed_step_is_the_resident_step(case):
  """State (lag buffers included) and every step's metrics; the first cohort's init is the
  resident init bit for bit."""
  specs, config, batches, image, k, dynamics = CASES[case]()
  want = _run(specs, config, dynamics, batches, image, 0)
  got = _run(specs, config, dynamics, batches, image, k)
  ts.assert_trees_close(got, want, rtol=1e-5, atol=1e-6)
  assert all(np.asarray(m.loss).any() for m in got[1])


def test_a_cohort_is_padded_with_inactive_copies_and_the_rest_stays_on_the_host():
  cohorts = cohorts_lib.Cohorts.create([4, 2], 3, layout_lib.make_mesh(1))
  assert [(c.group, c.start, c.count, c.ids_K.tolist()) for c in cohorts.cohorts] == [
      (0, 0, 3, [0, 1, 2]), (0, 3, 1, [3, 6, 7]), (1, 0, 2, [4, 5, 6])]
  assert cohorts.num_padding == 3
  x = np.arange(4 * 2).reshape(4, 2)
  np.testing.assert_array_equal(cohorts.take(x, cohorts.cohorts[1]), [[6, 7]] * 3)
  batch = cohorts.place_batch(_two_group_batches(1)[0])
  assert isinstance(batch['private'][1]['image'], np.ndarray)
  assert batch['private'][1]['image'].shape == (2, 3, 4, 4, 1)
  assert batch['public']['image'].sharding.is_fully_replicated
  net = distill.Network.static(te.A).cohort(jnp.asarray(cohorts.cohorts[1].ids_K))
  np.testing.assert_array_equal(net.active_S, [True, False, False])
  assert not np.asarray(net.weights_SxK)[1:].any()


def test_bad_resident_values_are_refused_in_one_line():
  for value, what in [(-1, 'must be >= 0'), (1.5, 'must be an integer')]:
    config = short_config()
    config.population = ml_collections.ConfigDict({'resident': value})
    found = config_check.problems(config, 1)
    assert any(p.startswith('config.population.resident') and what in p for p in found), found
  found = config_check.problems(short_config(**{'population.resident': 2,
                                                'distributed.initialize': True}), 1)
  assert any(p.startswith('population.resident=2 streams') for p in found), found


def test_auto_streams_what_does_not_fit_and_a_forced_cohort_too_large_is_refused(monkeypatch):
  """With the devices' memory set between one cohort of 2 and the resident step (from XLA's
  analysis of cohorts of 1 and 5), auto picks cohorts of 2; a forced 4 is refused in one
  line."""
  config = short_config()
  layout = layout_lib.Layout.create([config.num_clients], layout_lib.make_mesh(1))
  data = data_lib.get_data(config)
  monkeypatch.setattr(layout_lib, 'memory_bytes', lambda mesh: 2**40)
  assert residency.place(config, layout, data) is layout  # within the bound: nothing compiled
  probes = [residency._probe(config, layout, data, w).compile(check=False)
            for w in residency.WIDTHS]
  fixed, per_client = residency._line(probes, [p.memory_bytes() for p in probes])
  memory = (fixed + 2.5 * per_client) / streamed_step.FRACTION
  monkeypatch.setattr(layout_lib, 'memory_bytes', lambda mesh: memory)
  cohorts = residency.place(config, layout, data)
  assert isinstance(cohorts, cohorts_lib.Cohorts) and cohorts.width == 2
  specs = groups_lib.make_specs(config, data.num_classes)
  forced = cohorts_lib.Cohorts.create(layout.sizes, 4, layout.mesh)
  batch = forced.place_batch(next(data.train_batches(0)))
  dynamics = programs.static_dynamics(np.ones((5, 5), np.float32))
  with pytest.raises(config_base.ConfigError) as e:
    streaming.train_step(forced, specs, config, 'vmap').lower(
        None, batch, jax.random.PRNGKey(0), None, dynamics).compile()
  (line,) = e.value.problems
  assert line.startswith('population.resident: a cohort of 4 clients (4 per device) needs')
  assert line.endswith(('use population.resident=2 or less.', 'use population.resident=3 or less.'))


@pytest.mark.slow  # four short runs of the default config (about 1 min on 2 cores)
def test_a_streamed_run_is_the_resident_run_and_resumes_exactly(tmp_path, capsys):
  """FedAvg every 3 steps too: a run streamed in cohorts of 2, stopped after 3 steps and
  resumed in cohorts of 3, ends as the resident run (checkpoint, metrics.jsonl, accuracies),
  its checkpoints in the resident format; a forced cohort too large stops launch.py (exit 2)."""
  base = dict(log_every=3, eval_every=3, average_every=3, **{'checkpoint.every': 3})
  run = lambda d, **kw: train.train_and_evaluate(short_config(**base, **kw), str(tmp_path / d))
  want = run('resident', num_steps=6)
  run('streamed', num_steps=3, **{'population.resident': 2})
  got = run('streamed', num_steps=6, **{'population.resident': 3})
  a, b = (mhd_jax.load(str(tmp_path / d)) for d in ('resident', 'streamed'))
  ts.assert_trees_close(b.state, a.state, rtol=1e-5, atol=1e-6)
  for x, y in zip(read_records(str(tmp_path / 'streamed')), read_records(str(tmp_path /
                                                                           'resident'))):
    assert x.keys() == y.keys()
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), x, y)
  np.testing.assert_allclose(got['mean_private_acc'], want['mean_private_acc'])
  types = lambda d: {k: v['value_metadata']['value_type'] for k, v in json.load(open(
      os.path.join(tmp_path, d, 'checkpoints', '6', 'state', '_METADATA')))['tree_metadata']
                     .items()}
  assert types('streamed') == types('resident')
  monkeypatch_memory = ['--config.population.resident=4', '--config.num_steps=2',
                        f'--workdir={tmp_path / "refused"}']
  with pytest.MonkeyPatch.context() as m:
    m.setattr(layout_lib, 'memory_bytes', lambda mesh: 2**20)
    assert launch.main(['launch.py', *monkeypatch_memory]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('config error: population.resident: a cohort of 4')


def test_auto_keeps_many_small_clients_resident(monkeypatch):
  """2,048 MLP clients on a ring fit 5 GiB resident (about 2 GiB by XLA's analysis; the
  traced bound says no, so the probes compile): what does not grow with the clients
  (buffers over every client's outputs) is counted once, not once per client."""
  config = short_config(num_clients=2048, topology='ring')
  layout = layout_lib.Layout.create([2048], layout_lib.make_mesh(1))
  data = types.SimpleNamespace(num_classes=10, image_shape=(8, 8, 1))
  monkeypatch.setattr(layout_lib, 'memory_bytes', lambda mesh: 5 * 2**30)
  compiled = []
  compile_ = streamed_step.Streamed.compile
  monkeypatch.setattr(streamed_step.Streamed, 'compile',
                      lambda self, **kw: compiled.append(1) or compile_(self, **kw))
  assert residency.place(config, layout, data) is layout
  assert len(compiled) == 2  # the bound did not decide
