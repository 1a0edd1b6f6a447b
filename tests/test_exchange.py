"""The sparse exchange (a neighbour table) against the dense one (every client a candidate).

The dense form is the reference: on every rule and feature both must give the
same loss terms, the same step, and the same graphs over time.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mhd_jax import models
from mhd_jax.algorithm import distill
from mhd_jax.algorithm import losses
from mhd_jax.algorithm import step as step_lib
from mhd_jax.network import graph_schedule as gs
from mhd_jax.network import neighbours
from mhd_jax.network import topology
from mhd_jax.placement import layout as layout_lib
from mhd_jax.population import state as state_lib

S, H, B, C = 6, 3, 5, 4
# Directed and uneven: 0 <- 1 (1), 2 (3); 1 <- 0; 2 <- 0, 1; 3 <- 4; 4 <- 3, 5 (2); 5 <- 0.
# Client 5 is read by 4 but reads only 0; 1 reads 0 but is read by 0 and 2.
A = np.zeros((S, S), np.float32)
for i, j, w in [(0, 1, 1), (0, 2, 3), (1, 0, 1), (2, 0, 2), (2, 1, 1), (3, 4, 1), (4, 3, 1),
                (4, 5, 2), (5, 0, 1)]:
  A[i, j] = w


def _sparse(net: distill.Network) -> distill.Network:
  table, weights = neighbours.build([np.asarray(net.weights_SxK)])
  return net.replace(weights_SxK=jnp.asarray(weights[0]),
                     senders_SxK=jnp.asarray(table.senders_NxK))


def test_the_table_holds_the_graph_and_each_links_other_end():
  for a in [A] + [g.toarray() for g in (topology.ring(7), topology.random_regular(10, 3, 0),
                                        topology.star(5), topology.complete(4), topology.empty(3))]:
    table, w = neighbours.build([a])
    np.testing.assert_array_equal(neighbours.dense(table, w[0]), a)
    senders, rev = np.asarray(table.senders_NxK), np.asarray(table.reverse_NxK)
    n, k = senders.shape
    links = (a > 0) | (a.T > 0)
    assert k == 1 + links.sum(1).max()  # itself and its links, no more
    for i in range(n):
      row = senders[i][senders[i] < n]
      np.testing.assert_array_equal(row, np.sort(np.r_[i, np.flatnonzero(links[i])]))
      for c, j in enumerate(row):  # the entry (j, i) is at column reverse[i, c] of row j
        assert senders[j, rev[i, c]] == i


def test_a_cycle_shares_one_table_with_a_weight_array_per_graph():
  graphs = [topology.ring(6).toarray(), 2 * topology.chain(6).toarray(),
            topology.star(6).toarray()]
  table, w = neighbours.build(graphs)
  assert w.shape[0] == 3
  for a, wg in zip(graphs, w):
    np.testing.assert_array_equal(neighbours.dense(table, wg), a)


def _logits(seed):
  return jax.random.normal(jax.random.PRNGKey(seed), (S, H, B, C)) * 2


def _config(rule, include_self, nu_emb=0.5, **wire):
  c = ml_collections.ConfigDict(dict(nu_main=1.0, nu_aux=0.7, nu_emb=nu_emb, temperature=2.0,
                                     target=rule, include_self=include_self))
  if wire:
    c.wire = ml_collections.ConfigDict(dict(topk=0, bits=32, heads_sent=0, every=1) | wire)
  return c


def _terms(net, config, teachers=None, step=1):
  logits = _logits(0)
  embs = [jax.random.normal(jax.random.PRNGKey(1), (4, B, 3)),  # two groups, two sizes
          jax.random.normal(jax.random.PRNGKey(2), (2, B, 5))]
  labels = jnp.zeros((S, B), jnp.int32)
  return distill.terms(logits + 0.5, labels, logits, embs, [4, 2], net, config,
                       jax.random.PRNGKey(7), step, teachers)


def _assert_same(a, b, rtol=1e-5):
  for k, v in a.as_dict().items():
    np.testing.assert_allclose(v, getattr(b, k), rtol=rtol, atol=1e-6, err_msg=k)


@pytest.mark.parametrize('include_self', [False, True], ids=['neighbours', 'include_self'])
@pytest.mark.parametrize('rule', losses.TARGET_RULES)
def test_every_rule_gives_the_dense_terms(rule, include_self):
  dense = distill.Network.static(A).replace(active_S=jnp.array([1, 1, 1, 0, 1, 1], bool))
  config = _config(rule, include_self)
  _assert_same(_terms(dense, config), _terms(_sparse(dense), config))


@pytest.mark.parametrize('wire', [dict(topk=2, bits=8), dict(heads_sent=1), dict(every=2)],
                         ids=['topk_bits', 'heads_sent', 'every'])
def test_the_wire_gives_the_dense_terms(wire):
  config = _config('confidence_weighted', True, **wire)
  dense = distill.Network.static(A)
  for step in (1, 2):
    _assert_same(_terms(dense, config, step=step), _terms(_sparse(dense), config, step=step))


def test_lagged_teachers_give_the_dense_terms():
  teachers = distill.Teachers(logits_SxHxBxC=_logits(3),
                              embs=[jax.random.normal(jax.random.PRNGKey(4), (4, B, 3)),
                                    jax.random.normal(jax.random.PRNGKey(5), (2, B, 5))],
                              sent_S=jnp.array([1, 0, 1, 1, 1, 1], bool))
  config = _config('most_confident', True)
  dense = distill.Network.static(A)
  _assert_same(_terms(dense, config, teachers), _terms(_sparse(dense), config, teachers))


def test_the_sparse_terms_are_not_vacuous():
  """A dropped link changes the terms, so the comparisons above can fail."""
  config = _config('confidence_weighted', False)
  cut = A.copy()
  cut[0, 2] = 0
  a, b = _terms(distill.Network.static(A), config), _terms(_sparse(distill.Network.static(cut)),
                                                            config)
  assert not np.allclose(a.kd_main[0], b.kd_main[0])
  np.testing.assert_allclose(a.kd_main[1:], b.kd_main[1:], rtol=1e-5)


def _specs():
  model = models.make_model(ml_collections.ConfigDict(dict(
      name='mlp', width=8, depth=1, dtype='float32', aux_backbone_grad=True)), H, C)
  return (state_lib.GroupSpec(model, optax.adam(1e-2), 4),
          state_lib.GroupSpec(models.make_model(ml_collections.ConfigDict(dict(
              name='mlp', width=6, depth=2, dtype='float32', aux_backbone_grad=True)), H, C),
              optax.sgd(0.1), 2))


@pytest.mark.parametrize('rule', ['random', 'confidence_weighted'])
def test_a_step_of_two_groups_gives_the_dense_state(rule):
  specs = _specs()
  state = state_lib.init_state(specs, (4, 4, 1), jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  batch = {'private': {'image': rng.normal(size=(S, 3, 4, 4, 1)).astype(np.float32),
                       'label': rng.integers(C, size=(S, 3)).astype(np.int32)},
           'public': {'image': rng.normal(size=(B, 4, 4, 1)).astype(np.float32)}}
  for_each = lambda fn, in_axes: jax.vmap(fn, in_axes=in_axes)
  run = jax.jit(functools.partial(step_lib.train_step, specs=specs, config=_config(rule, True),
                                  for_each=for_each))
  dense = distill.Network.static(A)
  out = [run(state, batch, jax.random.PRNGKey(3), net) for net in (dense, _sparse(dense))]
  for a, b in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('kind', ['static', 'edge_failure', 'matching', 'cycle'])
def test_the_schedules_draw_the_same_graphs_on_a_table(kind):
  base = topology.random_regular(12, 3, 0).toarray()
  graphs = np.stack([base, topology.ring(12).toarray()]) if kind == 'cycle' else base[None]
  table, weights = neighbours.build(list(graphs))
  common = dict(kind=kind, key=gs.stream_key(3, 2), failure_p=jnp.float32(0.4),
                every=jnp.int32(2))
  dense = gs.Schedule(graphs_GxNxK=jnp.asarray(graphs), **common)
  sparse = gs.Schedule(graphs_GxNxK=jnp.asarray(weights), table=table, **common)
  seen = set()
  for step in range(1, 9):
    a = np.asarray(jax.jit(gs.weights_at)(dense, step))
    np.testing.assert_array_equal(neighbours.dense(table, jax.jit(gs.weights_at)(sparse, step)),
                                  a)
    seen.add(a.tobytes())
  assert len(seen) == (1 if kind == 'static' else 2 if kind == 'cycle' else 8)


def test_padding_moves_a_tables_rows_and_senders_to_the_stacked_positions():
  layout = layout_lib.Layout(layout_lib.make_mesh(1), sizes=(4, 2), padded=(5, 4))
  dense = distill.Network.static(A)
  got, want = layout.network(_sparse(dense)), layout.network(dense)
  np.testing.assert_array_equal(neighbours.dense(
      neighbours.Table(got.senders_SxK, got.senders_SxK), got.weights_SxK), want.weights_SxK)
  np.testing.assert_array_equal(got.active_S, want.active_S)
  np.testing.assert_array_equal(got.ids_S, want.ids_S)
  assert (np.asarray(neighbours.is_self(got.senders_SxK, 9)).sum(1) == 1).all()


def test_averaging_on_a_table_gives_the_dense_average():
  from mhd_jax.algorithm import baselines  # pylint: disable=g-import-not-at-top
  specs = _specs()
  state = state_lib.init_state(specs, (4, 4, 1), jax.random.PRNGKey(0))
  average = baselines.make_average(specs, A)
  active = jnp.array([1, 1, 0, 1, 1, 1], bool)
  sparse = _sparse(distill.Network.static(A))
  want = average(state, jnp.asarray(A), active)
  got = average(state, sparse.weights_SxK, active, sparse.senders_SxK)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(want.groups[0].params),
                                                   jax.tree.leaves(state.groups[0].params)))


def test_a_table_that_does_not_match_its_graph_is_refused_in_one_line():
  table, w = neighbours.build([A])
  neighbours.validate(table, w)
  senders = np.asarray(table.senders_NxK).copy()
  senders[0, [1, 2]] = senders[0, [2, 1]]  # a row out of order
  bad = [(table.replace(senders_NxK=senders), w, 'rows not increasing'),
         (table.replace(reverse_NxK=np.zeros_like(table.reverse_NxK)), w, 'other end'),
         (table, w[:, :, :-1], 'weights of shape'),
         (table, w + (np.asarray(table.senders_NxK) == np.arange(S)[:, None]), 'itself')]
  for t, weights, what in bad:
    with pytest.raises(ValueError, match=f'does not match the graph: .*{what}') as e:
      neighbours.validate(t, weights)
    assert '\n' not in str(e.value)


def test_auto_takes_the_table_for_sparse_graphs_and_dense_for_dense_ones():
  assert neighbours.choose('auto', 1000, 5) and not neighbours.choose('auto', 8, 8)
  assert neighbours.choose('sparse', 8, 8) and not neighbours.choose('dense', 1000, 5)
  with pytest.raises(ValueError, match="unknown exchange 'fast'"):
    neighbours.choose('fast', 8, 3)


def test_a_forced_exchange_that_cannot_hold_the_population_is_refused():
  assert neighbours.fits(True, 10_000, 5, 3, 64, 10, 2**33) is None
  problem = neighbours.fits(False, 10_000, 5, 3, 64, 10, 2**33)
  assert problem.startswith('exchange=dense needs at least 143.1 GiB for 10000 clients')
  assert 'exchange=sparse needs 0.43 GiB' in problem and '\n' not in problem


def test_a_run_forced_onto_dense_is_told_what_the_graphs_own_table_needs():
  """The refusal's sparse estimate is on the ring's table (3 columns), not on N columns."""
  from configs import default  # pylint: disable=g-import-not-at-top
  from mhd_jax.run import config_check  # pylint: disable=g-import-not-at-top
  from mhd_jax.run import startup  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.unlock()
  config.update(num_clients=3000, topology='ring', exchange='dense')
  config.data.public_batch_size = 2048  # dense: 412 GiB, more than a host holds
  layout = layout_lib.Layout.create([3000], layout_lib.make_mesh(1))
  exchange = startup._exchange  # pylint: disable=protected-access
  with pytest.raises(config_check.ConfigError, match=r'exchange=sparse needs 2\.47 GiB'):
    exchange(config, gs.build(config), layout, 10)
  config.exchange = 'sparse'
  assert exchange(config, gs.build(config), layout, 10) == 'sparse (a neighbour table of 3 columns)'
