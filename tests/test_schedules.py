"""Tests for mhd_jax/network/graph_schedule.py: each schedule's graphs, their draws from (seed, step),
and one compile for every step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from mhd_jax.network import graph_schedule as gs
from mhd_jax.network import topology
from mhd_jax.run import config_check


def _config(num_clients=6, topology_name='complete', **dynamics):
  c = default.get_config()
  c.num_clients, c.topology = num_clients, topology_name
  c.dynamics.update(dynamics)
  return c


_jitted = jax.jit(gs.weights_at)  # one compile per schedule kind and size, not per step


def _graphs(schedule, steps):
  return np.stack([np.asarray(_jitted(schedule, t)) for t in steps])


def _weighted_directed(n=7, seed=0):
  """A base graph with weights and one-way links, to see that pairs keep their own values."""
  rng = np.random.default_rng(seed)
  a = (rng.random((n, n)) < 0.5) * rng.integers(1, 5, (n, n)).astype(np.float32)
  np.fill_diagonal(a, 0)
  return a


def _schedule(kind, base, **kw):
  return gs.Schedule(kind=kind, graphs_GxNxK=jnp.asarray(base)[None], key=gs.stream_key(3, 2),
                     failure_p=jnp.float32(kw.get('failure_p', 0.0)), every=jnp.int32(1))


# --------------------------------------------------------------------------- static


def test_static_is_the_base_graph_bit_for_bit():
  c = _config(topology_name='ring')
  schedule = gs.build(c)
  for t in (1, 2, 1000):
    a = gs.weights_at(schedule, t)
    assert a.dtype == jnp.float32
    np.testing.assert_array_equal(a, topology.build(c).toarray())


# ------------------------------------------------------------------------- matching


@pytest.mark.parametrize('base', [topology.complete(8).toarray(), topology.ring(7).toarray(),
                                  topology.random_regular(10, 3, 1).toarray(),
                                  _weighted_directed()],
                         ids=['complete8', 'ring7', 'regular10', 'weighted_directed'])
def test_matching_is_a_maximal_matching_on_base_links(base):
  schedule = _schedule('matching', base)
  linked = (base > 0) | (base.T > 0)
  for a in _graphs(schedule, range(1, 41)):
    pair = (a > 0) | (a.T > 0)
    assert (pair.sum(1) <= 1).all()                 # one partner at most
    assert not (pair & ~linked).any()               # only links of the base graph
    np.testing.assert_array_equal(a, np.where(pair, base, 0))  # both ways, as the base has them
    free = ~pair.any(1)
    assert not (linked & free[:, None] & free[None, :]).any()  # maximal: no free link left


def _greedy(base, bits):
  """Sequential greedy matching over the links in increasing (bits, pair index) order."""
  n = len(base)
  want, busy = np.zeros((n, n), bool), np.zeros(n, bool)
  for i, j in sorted(zip(*np.nonzero(np.triu(base, 1))), key=lambda e: (bits[e], e[0] * n + e[1])):
    if not busy[i] and not busy[j]:
      want[i, j] = want[j, i] = busy[i] = busy[j] = True
  return want


@pytest.mark.parametrize('tied', [False, True], ids=['random_bits', 'many_ties'])
def test_matching_is_greedy_over_the_random_link_order(tied):
  # The parallel rounds pick exactly what sequential greedy picks, ties broken by pair index.
  base = topology.random_regular(12, 5, 0).toarray()
  matching = jax.jit(gs.greedy_matching)
  for seed in range(20):
    bits = gs.pair_bits(jax.random.PRNGKey(seed), 12)
    if tied:
      bits = bits % 3
    got = matching(jnp.asarray(base > 0), bits)
    np.testing.assert_array_equal(got, _greedy(base, np.asarray(bits)))


def test_matching_changes_with_the_step_and_uses_every_link():
  schedule = _schedule('matching', topology.complete(6).toarray())
  graphs = _graphs(schedule, range(1, 201))
  assert len({g.tobytes() for g in graphs}) == 15  # the 15 perfect matchings of K6, all seen
  np.testing.assert_array_equal(graphs.max(0), topology.complete(6).toarray())


# --------------------------------------------------------------------- edge failure


def test_edge_failure_rate_is_p():
  # 45 links x 400 steps = 18000 independent draws: the observed failure rate has standard
  # deviation sqrt(p (1 - p) / 18000) = 0.0034 at p = 0.3; we allow 5 of them (0.017).
  p, n, steps = 0.3, 10, 400
  schedule = gs.build(_config(n, schedule='edge_failure', failure_p=p))
  graphs = _graphs(schedule, range(1, steps + 1))
  link = np.triu(topology.complete(n).toarray(), 1) > 0
  failed = (graphs[:, link] == 0).mean()
  assert abs(failed - p) < 5 * np.sqrt(p * (1 - p) / (link.sum() * steps)), failed
  # Each link fails as a whole (both ways) and carries nothing; surviving ones are untouched.
  np.testing.assert_array_equal(graphs, np.swapaxes(graphs, 1, 2))
  assert set(np.unique(graphs)) == {0.0, 1.0}
  # Draws are independent across steps: the same link fails at about p^2 of consecutive pairs.
  both = ((graphs[1:, link] == 0) & (graphs[:-1, link] == 0)).mean()
  assert abs(both - p * p) < 0.03, both


def test_edge_failure_keeps_weights_and_extremes():
  base = _weighted_directed()
  for a in _graphs(_schedule('edge_failure', base, failure_p=0.5), range(1, 20)):
    np.testing.assert_array_equal(a, np.where((a > 0) | (a.T > 0), base, 0))
  np.testing.assert_array_equal(_graphs(_schedule('edge_failure', base, failure_p=0.0), [1, 2]),
                                np.stack([base, base]))
  assert not _graphs(_schedule('edge_failure', base, failure_p=1.0), [1, 2]).any()


@pytest.mark.parametrize('kind', ['matching', 'edge_failure'])
def test_draws_depend_only_on_seed_and_step(kind):
  c = _config(8, schedule=kind, failure_p=0.5)
  first = _graphs(gs.build(c), range(1, 11))
  np.testing.assert_array_equal(first, _graphs(gs.build(c), range(1, 11)))  # a fresh build
  np.testing.assert_array_equal(first[::-1], _graphs(gs.build(c), range(10, 0, -1)))  # any order
  assert len({g.tobytes() for g in first}) > 5  # the step matters
  c.seed = 1
  assert not np.array_equal(first, _graphs(gs.build(c), range(1, 11)))  # the seed matters


# ---------------------------------------------------------------------------- cycle


def test_cycle_switches_every_k_steps():
  c = _config(6, schedule='cycle', cycle_graphs='ring | chain | islands:num_islands=3',
              cycle_every=3)
  graphs = _graphs(gs.build(c), range(1, 14))
  ring, chain, islands = [g.toarray() for g in (topology.ring(6), topology.chain(6),
                                                 topology.islands(6, 3))]
  want = [ring] * 3 + [chain] * 3 + [islands] * 3 + [ring] * 3 + [chain]
  np.testing.assert_array_equal(graphs, np.stack(want))


def test_cycle_entries_get_their_own_seed_and_typed_overrides():
  c = _config(10, schedule='cycle',
              cycle_graphs='erdos_renyi:edge_prob=0.6 | erdos_renyi:edge_prob=0.6 | '
                           'erdos_renyi:edge_prob=0.6:seed=0 | random_regular:degree=3')
  graphs = [g.toarray() for g in gs.base_graphs(c)]
  assert not np.array_equal(graphs[0], graphs[1])        # seeds 0 and 1
  np.testing.assert_array_equal(graphs[0], graphs[2])    # seed=0 given
  np.testing.assert_array_equal(graphs[0], topology.erdos_renyi(10, 0.6, 0).toarray())
  np.testing.assert_array_equal(graphs[3], topology.random_regular(10, 3, 3).toarray())


@pytest.mark.parametrize('spec, message', [
    ('', "dynamics.schedule='cycle' needs dynamics.cycle_graphs"),
    ('ring | ', 'has an empty graph'),
    ('ring | islands:islands=3', "cannot read 'islands=3'"),
    ('ring | islands:num_islands', "cannot read 'num_islands'"),
    ('ring | islands:num_islands=x', "num_islands='x' in graph 1 (islands) is not an integer"),
    ('ring | islands:num_islands=9', 'graph 1 (islands): islands: num_islands must be in'),
    ('ring | hypercube', "graph 1 (hypercube): unknown topology 'hypercube'"),
])
def test_bad_cycle_is_one_line(spec, message):
  c = _config(6, schedule='cycle', cycle_graphs=spec)
  found = config_check.problems(c, num_devices=1)
  assert len(found) == 1 and message in found[0], found


def test_unknown_schedule_is_one_line_listing_the_choices():
  found = config_check.problems(_config(schedule='gossip'), num_devices=1)
  assert found == ["unknown schedule 'gossip': config.dynamics.schedule must be one of "
                   f"{', '.join(gs.SCHEDULES)}."]
  with pytest.raises(ValueError, match="unknown schedule 'gossip'"):
    gs.build(_config(schedule='gossip'))


# -------------------------------------------------------------------- jit, compiles


def assert_traced_step_matches_eager_and_compiles_once(fn, tree, steps=range(1, 9)):
  """`jit(fn)(tree, step)` with step a traced int32 equals `fn(tree, step)`, traced once."""
  traces = []

  def counted(tree, step):
    traces.append(step)
    return fn(tree, step)

  jitted = jax.jit(counted)
  for t in steps:
    np.testing.assert_array_equal(jitted(tree, jnp.int32(t)), fn(tree, t))
  assert len(traces) == 1


@pytest.mark.parametrize('kind', gs.SCHEDULES)
def test_traced_step_matches_eager_and_compiles_once(kind):
  c = _config(8, schedule=kind, failure_p=0.4, cycle_graphs='ring | chain', cycle_every=2)
  assert_traced_step_matches_eager_and_compiles_once(gs.weights_at, gs.build(c))
