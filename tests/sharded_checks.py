"""Sharding checks on 8 devices; `tests/test_sharding.py` runs this file under fake CPU devices.

Run alone with `python -m pytest -q tests/sharded_checks.py` (the flag below is
set when JAX is not yet imported). Not collected by the plain suite (its name
does not start with `test_`): it needs its own process.
"""

import os
import re
import sys

if 'jax' not in sys.modules:  # must precede `import jax`
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                             + ' --xla_force_host_platform_device_count=8')

import flax.linen as nn  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import mhd_jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import ml_collections  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position
from mhd_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from mhd_jax.algorithm import evaluate  # pylint: disable=g-import-not-at-top,wrong-import-position
from mhd_jax.algorithm import step as step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from mhd_jax.placement import layout as layout_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from mhd_jax.population import state as state_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from mhd_jax.run import programs  # pylint: disable=g-import-not-at-top,wrong-import-position
from mhd_jax.run import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests import test_step as ts  # pylint: disable=g-import-not-at-top,wrong-import-position

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason='needs 8 (fake) devices')


class ConvBN(nn.Module):
  """A conv and a batch norm: the smallest backbone with batch statistics."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.5)(x))
    return x.mean(axis=(1, 2))


def make_specs(model, n):
  if model != 'convbn':
    return ts.make_specs(model, n=n)
  spec = ts.make_specs('mlp', n=n)[0]
  return (state_lib.GroupSpec(models.MultiHeadClassifier(ConvBN(), ts.H, ts.C), spec.tx, n),)


def complete(n):
  return (np.ones((n, n)) - np.eye(n)).astype(np.float32)


def sharded_run(specs, adjacency, config, batches, strategy, num_devices=0, sparse=False):
  layout = layout_lib.Layout.create([s.num_clients for s in specs],
                                  layout_lib.make_mesh(num_devices))
  state = layout.pad_state(state_lib.init_state(specs, ts.IMAGE, jax.random.PRNGKey(0)))
  step = programs.train_step(layout, specs, config, strategy)
  net = programs.static_dynamics(adjacency, sparse)
  first_bad = np.zeros(len(adjacency), np.int32)
  for batch in batches:
    state, metrics, first_bad = step(state, layout.place_batch(batch), jax.random.PRNGKey(7),
                                     first_bad, net)
  return layout, state, metrics


@pytest.mark.parametrize('model,strategy,target,include_self', [
    ('mlp', 'vmap', 'random', False),
    ('convbn', 'hybrid', 'most_confident', True),
    ('mlp', 'loop', 'mean', False)])
def test_sharded_step_matches_single_device(model, strategy, target, include_self):
  n = 8
  config, specs = ts.distill_config(target, include_self), make_specs(model, n)
  batches = [ts.make_batch(s, n=n) for s in range(3)]
  ref, ref_metrics = ts.run_steps(specs, complete(n), config, batches, strategy)
  layout, state, metrics = sharded_run(specs, complete(n), config, batches, strategy)
  assert layout.num_padding == 0
  ts.assert_trees_close(layout.unpad_state(state).groups, ref.groups, rtol=1e-5, atol=1e-6)
  ts.assert_trees_close(metrics, ref_metrics, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('model,strategy,target,num_devices,n,padded', [
    ('cnn', 'hybrid', 'random', 8, 5, 8),
    ('convbn', 'hybrid', 'most_confident', 2, 3, 4)])  # batch statistics stay put too
def test_padded_population_matches_unpadded_and_masked_clients_stay_put(
    model, strategy, target, num_devices, n, padded):
  config, specs = ts.distill_config(target), make_specs(model, n)
  adjacency = ts.ADJ if n == 3 else complete(n)
  batches = [ts.make_batch(s, n=n) for s in range(2)]
  ref, ref_metrics = ts.run_steps(specs, adjacency, config, batches, strategy)
  layout, state, metrics = sharded_run(specs, adjacency, config, batches, strategy, num_devices)
  assert layout.padded == (padded,) and layout.num_padding == padded - n
  if model == 'convbn':
    assert jax.tree.leaves(state.groups[0].batch_stats)
  ts.assert_trees_close(layout.unpad_state(state).groups, ref.groups, rtol=1e-5, atol=1e-6)
  ts.assert_trees_close(metrics, ref_metrics, rtol=1e-5, atol=1e-6)
  init = state_lib.init_state(specs, ts.IMAGE, jax.random.PRNGKey(0)).groups[0]
  for i in range(n, padded):  # masked clients: still the copy of client 0 they started as
    ts.assert_trees_close(jax.tree.map(lambda x, i=i: x[i], state.groups[0]),
                          jax.tree.map(lambda x: x[0], init), rtol=0, atol=0)


@pytest.mark.parametrize('target', ['random', 'confidence_weighted'])
def test_the_sparse_exchange_sharded_and_padded_matches_the_dense_step_on_one_device(target):
  """5 clients on a ring over 8 devices: the table's rows and senders move to the stacked,
  sharded positions; the step is the single-device dense one."""
  n = 5
  config, specs = ts.distill_config(target, include_self=True), make_specs('mlp', n)
  ring = np.roll(np.eye(n, dtype=np.float32), 1, 1) + np.roll(np.eye(n, dtype=np.float32), -1, 1)
  batches = [ts.make_batch(s, n=n) for s in range(2)]
  ref, ref_metrics = ts.run_steps(specs, ring, config, batches, 'vmap')
  layout, state, metrics = sharded_run(specs, ring, config, batches, 'vmap', 8, sparse=True)
  assert layout.num_padding == 3
  ts.assert_trees_close(layout.unpad_state(state).groups, ref.groups, rtol=1e-5, atol=1e-6)
  ts.assert_trees_close(metrics, ref_metrics, rtol=1e-5, atol=1e-6)


def test_each_device_holds_and_runs_only_its_clients():
  """16 clients on 8 devices: 2 per device, and each device's program has 2 clients' convolutions.

  The public outputs cross devices through the all-gathers XLA emits; nothing
  as large as the parameters does.
  """
  n, config, strategy = 16, ts.distill_config(), 'hybrid'
  specs = ts.make_specs('cnn', n=n)
  layout = layout_lib.Layout.create([n], layout_lib.make_mesh())
  state = layout.pad_state(state_lib.init_state(specs, ts.IMAGE, jax.random.PRNGKey(0)))
  for leaf in jax.tree.leaves(state.groups):
    assert leaf.sharding.spec == ('clients',) or leaf.sharding.spec[0] == 'clients'
    assert {s.data.shape[0] for s in leaf.addressable_shards} == {2}
  step = programs.train_step(layout, specs, config, strategy)
  hlo = step.lower(state, layout.place_batch(ts.make_batch(0, n=n)), jax.random.PRNGKey(7),
                   np.zeros(n, np.int32), programs.static_dynamics(complete(n))).compile().as_text()
  specs2 = ts.make_specs('cnn', n=2)
  single = jax.jit(programs.make_train_step(specs2, complete(2), config, strategy)).lower(
      state_lib.init_state(specs2, ts.IMAGE, jax.random.PRNGKey(0)), ts.make_batch(0, n=2),
      jax.random.PRNGKey(7)).compile().as_text()
  assert hlo.count(' convolution(') == single.count(' convolution(') > 0
  gathered = [np.prod([int(d) for d in re.findall(r'\d+', shape)])
              for shape in re.findall(r'= f32\[([\d,]*)\][^ ]* all-gather\(', hlo)]
  assert gathered, 'no all-gather: the targets did not see the other devices\' clients'
  params = sum(x.size for x in jax.tree.leaves(state.groups[0].params))
  assert sum(gathered) < params / 4


def test_sharded_predict_matches_single_device():
  n = 5
  specs = ts.make_specs('cnn', n=n)
  state = state_lib.init_state(specs, ts.IMAGE, jax.random.PRNGKey(0))
  images = ts.make_batch(0, n=n)['public']['image']
  layout = layout_lib.Layout.create([n], layout_lib.make_mesh())
  preds = programs.predict(layout, specs, 'hybrid')(layout.pad_state(state), images)
  ref = jax.jit(evaluate.make_predict(specs))(state, images)  # vmap over the clients
  assert preds.shape == (n, ts.H, images.shape[0])
  np.testing.assert_array_equal(preds, ref)


def test_uneven_population_refused_when_padding_is_off_and_mesh_checks_devices():
  mesh = layout_lib.make_mesh()
  with pytest.raises(ValueError, match=r'group sizes \[5\] are not multiples of the 8 devices'):
    layout_lib.Layout.create([5], mesh, allow_padding=False)
  assert layout_lib.Layout.create([16], mesh, allow_padding=False).padded == (16,)
  with pytest.raises(ValueError, match='num_devices=9 but 8 device'):
    layout_lib.make_mesh(9)
  assert layout_lib.make_mesh(4).devices.size == 4


def test_place_batch_feeds_this_process_clients_and_pads():
  layout = layout_lib.Layout.create([5], layout_lib.make_mesh())
  assert layout.local_client_ids() == [0, 1, 2, 3, 4]  # one process holds every device
  batch = layout.place_batch(ts.make_batch(0, n=5))
  image = batch['private'][0]['image']
  assert image.shape == (8, ts.B, *ts.IMAGE) and image.sharding.spec[0] == 'clients'
  np.testing.assert_array_equal(image[:5], ts.make_batch(0, n=5)['private']['image'])
  assert not np.any(np.asarray(image[5:]))
  assert batch['public']['image'].sharding.is_fully_replicated


def test_train_and_evaluate_on_8_devices_with_masked_clients(tmp_path):
  """5 clients padded to 8: a run, and the same run with FedAvg at its last step, where each
  real client gets the mean of the five real ones (the padded clients take no part)."""
  config = default.get_config()
  config.num_clients, config.num_steps, config.log_every, config.eval_every = 5, 20, 10, 20
  summary = train.train_and_evaluate(config, str(tmp_path / 'plain'))
  assert summary['num_clients'] == 5 and len(summary['clients']) == 5
  assert summary['mean_private_acc'][0] > 0.2  # 20 steps already beat chance (10%)
  config.average_every = 20
  train.train_and_evaluate(config, str(tmp_path / 'averaged'))
  (plain,), (averaged,) = (mhd_jax.load(str(tmp_path / d)).state.groups
                           for d in ('plain', 'averaged'))
  mean = lambda x: np.broadcast_to(np.asarray(x).mean(0), x.shape)
  for part in ('params', 'batch_stats'):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, mean(b), rtol=1e-5, atol=1e-6),
                 getattr(averaged, part), getattr(plain, part))
  jax.tree.map(np.testing.assert_array_equal, averaged.opt_state, plain.opt_state)


def test_distributed_initialize_only_when_asked(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kw: calls.append(kw))
  config = ml_collections.ConfigDict(default.get_config().to_dict())
  assert not layout_lib.initialize_distributed(config) and not calls
  config.distributed.initialize = True
  assert layout_lib.initialize_distributed(config) and calls == [{}]
  config.distributed.update(coordinator_address='10.0.0.1:1234', num_processes=4, process_id=2)
  layout_lib.initialize_distributed(config)
  assert calls[-1] == {'coordinator_address': '10.0.0.1:1234', 'num_processes': 4,
                       'process_id': 2}


def lagged_run(specs, config, raw, tau, num_devices):
  """(layout, state, metrics) after len(raw) - tau steps with teachers that lag tau steps."""
  layout = layout_lib.Layout.create([s.num_clients for s in specs],
                                    layout_lib.make_mesh(num_devices))
  state = layout.pad_state(state_lib.init_state(specs, ts.IMAGE, jax.random.PRNGKey(0)))
  publics = np.stack([b['public']['image'] for b in raw[:tau]])
  state = programs.initial_lag(layout, specs, config, 'vmap')(state, layout.replicate(publics))
  step = programs.train_step(layout, specs, config, 'vmap')
  n = sum(layout.sizes)
  dynamics, first_bad = programs.static_dynamics(complete(n)), np.zeros(n, np.int32)
  for s in range(len(raw) - tau):
    batch = dict(raw[s], public_ahead=raw[s + tau]['public'])
    state, metrics, first_bad = step(state, layout.place_batch(batch), jax.random.PRNGKey(7),
                                     first_bad, dynamics)
  return layout, state, metrics


@pytest.mark.parametrize('num_devices', [2, 8])
def test_lag_buffers_are_sharded_and_padded_like_the_clients(num_devices):
  """5 clients with teachers that lag 2 steps, on 2 or 8 devices (padding): the step, the
  metrics and the lag buffers are those of one device; padding sends nothing."""
  n, tau = 5, 2
  config, specs = ts.distill_config('most_confident', include_self=True), make_specs('convbn', n)
  config.dynamics = {'staleness': tau}
  raw = [ts.make_batch(s, n=n) for s in range(3 + tau)]
  _, ref, ref_metrics = lagged_run(specs, config, raw, tau, 1)
  layout, state, metrics = lagged_run(specs, config, raw, tau, num_devices)
  assert layout.num_padding > 0
  assert state.lag[0].sent_NxT.sharding.spec == layout.clients.spec
  ts.assert_trees_close(layout.unpad_state(state), ref, rtol=1e-5, atol=1e-6)
  ts.assert_trees_close(metrics, ref_metrics, rtol=1e-5, atol=1e-6)
  assert not np.asarray(state.lag[0].sent_NxT)[n:].any()


@pytest.mark.parametrize('case,k,strategy', [('batchnorm_lag_wire', 8, 'hybrid'),
                                             ('two_groups_random_table', 3, 'vmap')])
def test_cohorts_sharded_over_8_devices_are_the_resident_step_on_one(case, k, strategy):
  """Cohorts sharded over the 8 devices: 12 BatchNorm clients with teachers that lag and the
  random rule in cohorts of 8 (one client per device, the last cohort padded); two groups
  on a table in cohorts of 3, rounded up to 8. The resident single-device step is the
  reference. (Without the wire's 8-bit codes here: a last-bit difference in a sender's
  output may round to the next code, 2.5e-5 apart after 4 steps, as much for the resident
  step sharded over 8 devices as for the cohorts; the wire is checked on one device.)"""
  from tests import test_cohorts as tc  # pylint: disable=g-import-not-at-top
  specs, config, batches, image, _, dynamics = tc.CASES[case]()
  if case == 'batchnorm_lag_wire':  # 12 clients: cohorts [0..7] [8..11 + 4 padding]
    n, config.target, config.wire = 12, 'random', None
    specs = make_specs('convbn', n)
    batches = [ts.make_batch(s, n=n) for s in range(4)]
    dynamics = programs.static_dynamics(complete(n))
  want = tc._run(specs, config, dynamics, batches, image, 0, 1, strategy)
  got = tc._run(specs, config, dynamics, batches, image, k, 8, strategy)
  ts.assert_trees_close(got, want, rtol=1e-5, atol=1e-6)
