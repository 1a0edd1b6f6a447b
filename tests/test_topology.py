"""Tests for mhd_jax/network/topology.py: every builder, parsing, validation, build(config)."""

import ml_collections
import networkx as nx
import numpy as np
import pytest
from scipy import sparse

from mhd_jax.network import topology


def _assert_adjacency(a, n):
  """float32 [n, n], zero diagonal, 0/1 entries."""
  assert a.shape == (n, n) and a.dtype == np.float32
  np.testing.assert_array_equal(np.diag(a), np.zeros(n))
  assert set(np.unique(a)) <= {0.0, 1.0}


# ------------------------------------------------------------------ builders


def test_empty():
  a = topology.empty(3).toarray()
  _assert_adjacency(a, 3)
  assert not a.any()


def test_complete():
  a = topology.complete(3).toarray()
  _assert_adjacency(a, 3)
  np.testing.assert_array_equal(a, [[0, 1, 1], [1, 0, 1], [1, 1, 0]])


def test_chain():
  a = topology.chain(4).toarray()
  _assert_adjacency(a, 4)
  np.testing.assert_array_equal(a, [[0, 1, 0, 0],
                                    [1, 0, 1, 0],
                                    [0, 1, 0, 1],
                                    [0, 0, 1, 0]])
  assert not topology.chain(1).toarray().any()


def test_ring():
  a = topology.ring(4).toarray()
  _assert_adjacency(a, 4)
  np.testing.assert_array_equal(a, [[0, 1, 0, 1],
                                    [1, 0, 1, 0],
                                    [0, 1, 0, 1],
                                    [1, 0, 1, 0]])
  np.testing.assert_array_equal(topology.ring(3).toarray(), topology.complete(3).toarray())
  # Two clients: one edge each way, weight 1 (not 2).
  np.testing.assert_array_equal(topology.ring(2).toarray(), [[0, 1], [1, 0]])


def test_star():
  a = topology.star(4).toarray()
  _assert_adjacency(a, 4)
  np.testing.assert_array_equal(a, [[0, 1, 1, 1],
                                    [1, 0, 0, 0],
                                    [1, 0, 0, 0],
                                    [1, 0, 0, 0]])
  np.testing.assert_array_equal(topology.star(3, center=2).toarray(),
                                [[0, 0, 1], [0, 0, 1], [1, 1, 0]])


def test_islands():
  a = topology.islands(5, 2).toarray()
  _assert_adjacency(a, 5)
  np.testing.assert_array_equal(a, [[0, 1, 1, 0, 0],
                                    [1, 0, 1, 0, 0],
                                    [1, 1, 0, 0, 0],
                                    [0, 0, 0, 0, 1],
                                    [0, 0, 0, 1, 0]])
  np.testing.assert_array_equal(topology.islands(4, 1).toarray(), topology.complete(4).toarray())
  assert not topology.islands(3, 3).toarray().any()  # singletons: no edges


@pytest.mark.parametrize('k', [0, 6])
def test_islands_bad_count_raises(k):
  with pytest.raises(ValueError, match=r'num_islands must be in \[1, 5\]'):
    topology.islands(5, k)


def _assert_regular(a, n, degree):
  _assert_adjacency(a, n)
  np.testing.assert_array_equal(a, a.T)
  np.testing.assert_array_equal(a.sum(0), np.full(n, degree))
  np.testing.assert_array_equal(a.sum(1), np.full(n, degree))


@pytest.mark.parametrize('n, degree', [(10, 3), (8, 2), (7, 4), (32, 4), (2, 1)])
def test_random_regular_is_simple_symmetric_and_regular(n, degree):
  for seed in range(3):
    _assert_regular(topology.random_regular(n, degree, seed).toarray(), n, degree)


@pytest.mark.parametrize('n, degree', [(6, 5), (8, 7), (10, 6), (20, 6)])
def test_random_regular_works_for_dense_degrees(n, degree):
  # Valid inputs (degree < n, n * degree even) for which a simple regular
  # graph exists (e.g. (6, 5) is K6) must not be refused.
  for seed in range(3):
    _assert_regular(topology.random_regular(n, degree, seed).toarray(), n, degree)


def test_random_regular_seed_determinism():
  a = topology.random_regular(10, 3, seed=1).toarray()
  np.testing.assert_array_equal(a, topology.random_regular(10, 3, seed=1).toarray())
  others = [topology.random_regular(10, 3, seed=s).toarray() for s in range(2, 6)]
  assert any(not np.array_equal(a, b) for b in others)


def test_random_regular_degree_zero_is_empty():
  assert not topology.random_regular(4, 0, seed=0).toarray().any()


@pytest.mark.parametrize('n, degree', [(4, 4), (4, 5), (5, 3), (4, -1)])
def test_random_regular_bad_degree_raises(n, degree):
  with pytest.raises(ValueError, match='random_regular: need 0 <= degree < num_clients'):
    topology.random_regular(n, degree, seed=0)


# ------------------------------------------------- sparse builders, dense references


def _dense_random_regular(n, degree, seed):
  """random_regular as it was written on a dense [n, n] array (before the sparse builders):
  the same draws must give the same graph."""
  rng = np.random.default_rng(seed)
  a, i = np.zeros((n, n), np.float32), np.arange(n)
  for s in range(1, degree // 2 + 1):
    a[i, (i + s) % n] = a[(i + s) % n, i] = 1.0
  if degree % 2:
    a[i, (i + n // 2) % n] = 1.0
  perm = rng.permutation(n)
  a = a[np.ix_(perm, perm)]
  edges = np.argwhere(np.triu(a))
  for _ in range(10 * len(edges) if len(edges) > 1 else 0):
    e, f = rng.choice(len(edges), 2, replace=False)
    (u, v), (x, y) = edges[e], edges[f]
    if rng.random() < 0.5:
      x, y = y, x
    if len({u, v, x, y}) < 4 or a[u, x] or a[v, y]:
      continue
    a[u, v] = a[v, u] = a[x, y] = a[y, x] = 0.0
    a[u, x] = a[x, u] = a[v, y] = a[y, v] = 1.0
    edges[e], edges[f] = (u, x), (v, y)
  return a


def _networkx(g, n):
  return nx.to_numpy_array(g, nodelist=range(n), dtype=np.float32, weight=None)


def _dense_references(n):
  """(builder, args, the dense matrix) for every builder and its parameters on n clients."""
  eye, i = np.eye(n, dtype=np.float32), np.arange(n)
  chain = np.eye(n, k=1, dtype=np.float32) + np.eye(n, k=-1, dtype=np.float32)
  ring = np.maximum(chain, (np.abs(i[:, None] - i[None]) == n - 1) & (n > 2))
  star = np.zeros((n, n), np.float32)
  star[-1], star[:, -1], star[-1, -1] = 1, 1, 0
  out = [('empty', (n,), np.zeros((n, n))), ('complete', (n,), 1 - eye), ('chain', (n,), chain),
         ('ring', (n,), ring), ('star', (n, n - 1), star)]
  for k in range(1, n + 1):
    island = np.repeat(np.arange(k), [len(b) for b in np.array_split(i, k)])
    out.append(('islands', (n, k), (island[:, None] == island[None]) - eye))
  out += [('random_regular', (n, d, s), _dense_random_regular(n, d, s))
          for d in range(n) if n * d % 2 == 0 for s in range(2)]
  out += [('erdos_renyi', (n, p, 1), _networkx(nx.gnp_random_graph(n, p, seed=1), n))
          for p in (0.0, 0.4, 1.0)]
  out += [('small_world', (n, d, 0.3, 2),
           _networkx(nx.watts_strogatz_graph(n, d, 0.3, seed=2), n)) for d in range(2, n, 2)]
  for rows in [r for r in range(1, n + 1) if n % r == 0]:
    g = nx.grid_2d_graph(rows, n // rows, periodic=True)
    g = nx.relabel_nodes(g, {(r, c): r * (n // rows) + c for r, c in g.nodes})
    out.append(('torus', (n, rows), _networkx(g, n)))
  out += [('random_geometric', (n, r, 3), _networkx(nx.random_geometric_graph(n, r, seed=3), n))
          for r in (0.0, 0.5, 1.5)]
  return out


@pytest.mark.parametrize('n', [1, 2, 3, 4, 7, 12])
def test_every_builder_is_a_sparse_form_of_its_dense_reference(n):
  """Every builder returns a float32 csr_array with no diagonal entry that equals the dense
  matrix (random_regular: the dense code it replaced, draw for draw; networkx families:
  networkx's own dense matrix)."""
  cases = _dense_references(n)
  if n >= 3:  # every builder (small_world needs an even degree below n)
    assert {name for name, _, _ in cases} == set(topology.BUILDERS) - {'none', 'explicit'} | {
        'empty'}
  for name, args, want in cases:
    a = getattr(topology, name)(*args)
    assert isinstance(a, sparse.csr_array) and a.dtype == np.float32, (name, args)
    assert not a.diagonal().any() and (a.data == 1).all(), (name, args)
    np.testing.assert_array_equal(a.toarray(), want, err_msg=f'{name}{args}')


def test_a_large_sparse_graph_costs_its_links_not_n_squared():
  """10,000 clients on a ring or a torus: 2 and 4 links per client, built in well under a
  second (a dense matrix would be 400 MB)."""
  for builder, degree in [(topology.ring, 2), (topology.torus, 4)]:
    a = builder(10_000)
    assert a.nnz == 10_000 * degree and (a.sum(axis=1) == degree).all()


# ------------------------------------------------------- random families (networkx)


def _assert_undirected(a, n):
  _assert_adjacency(a, n)
  np.testing.assert_array_equal(a, a.T)


def _differs_by_seed(make):
  """Each seed gives one graph, and other seeds give other graphs."""
  np.testing.assert_array_equal(make(1), make(1))
  assert any(not np.array_equal(make(1), make(s)) for s in range(2, 6))


def test_erdos_renyi_density_and_extremes():
  # 60 clients: 1770 pairs, each a link with probability 0.3; the observed density has standard
  # deviation sqrt(0.3 * 0.7 / 1770) = 0.011, and we allow 5 of them.
  a = topology.erdos_renyi(60, 0.3, seed=0).toarray()
  _assert_undirected(a, 60)
  assert abs(a[np.triu_indices(60, 1)].mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / 1770)
  assert not topology.erdos_renyi(6, 0.0, seed=0).toarray().any()
  np.testing.assert_array_equal(topology.erdos_renyi(6, 1.0, seed=0).toarray(),
                                topology.complete(6).toarray())
  _differs_by_seed(lambda s: topology.erdos_renyi(12, 0.5, s).toarray())
  with pytest.raises(ValueError, match=r'erdos_renyi: edge_prob must be in \[0, 1\]'):
    topology.erdos_renyi(6, 1.5, seed=0)


def _ring_lattice(n, k):
  """Each client linked to the k / 2 nearest on each side."""
  a = topology.empty(n).toarray()
  for s in range(1, k // 2 + 1):
    for i in range(n):
      a[i, (i + s) % n] = a[(i + s) % n, i] = 1
  return a


def test_small_world_is_a_rewired_ring_lattice():
  np.testing.assert_array_equal(topology.small_world(10, 4, 0.0, seed=0).toarray(),
                                _ring_lattice(10, 4))
  for seed in range(5):
    a = topology.small_world(20, 4, 0.3, seed).toarray()
    _assert_undirected(a, 20)
    assert a.sum() == 20 * 4  # rewiring moves links, it does not add or drop them
    assert (a.sum(1) >= 2).all()  # each client keeps the degree / 2 links it rewires
    assert not np.array_equal(a, _ring_lattice(20, 4))
  _differs_by_seed(lambda s: topology.small_world(20, 4, 0.3, s).toarray())


@pytest.mark.parametrize('n, degree, p', [(10, 3, 0.1), (10, 0, 0.1), (4, 4, 0.1), (6, 2, -0.1)])
def test_small_world_bad_parameters_raise(n, degree, p):
  with pytest.raises(ValueError, match='small_world: '):
    topology.small_world(n, degree, p, seed=0)


def test_torus_links_grid_neighbours_with_wraparound():
  a = topology.torus(12, 3).toarray()  # 3 rows x 4 columns, client r * 4 + c
  _assert_undirected(a, 12)
  np.testing.assert_array_equal(a.sum(1), np.full(12, 4))
  assert np.flatnonzero(a[0]).tolist() == [1, 3, 4, 8]     # right, left (wrap), down, up (wrap)
  assert np.flatnonzero(a[6]).tolist() == [2, 5, 7, 10]
  np.testing.assert_array_equal(topology.torus(5, 1).toarray(),  # one row: a ring
                                topology.ring(5).toarray())
  assert topology.torus_shape(12) == (3, 4) and topology.torus_shape(7) == (1, 7)
  np.testing.assert_array_equal(topology.torus(6, 2).sum(1), np.full(6, 3))  # 2 rows: one up/down
  with pytest.raises(ValueError, match='torus: grid_rows=5 must divide num_clients=12'):
    topology.torus(12, 5)


def test_random_geometric_links_close_clients():
  for seed in range(3):
    a = topology.random_geometric(30, 0.3, seed).toarray()
    _assert_undirected(a, 30)
    assert 0 < a.sum() < 30 * 29  # neither empty nor complete at this radius
  assert not topology.random_geometric(8, 0.0, seed=0).toarray().any()
  np.testing.assert_array_equal(topology.random_geometric(8, 1.5, seed=0).toarray(),
                                topology.complete(8).toarray())
  _differs_by_seed(lambda s: topology.random_geometric(12, 0.4, s).toarray())


# ------------------------------------------------------------------- parsing


@pytest.mark.parametrize('spec', ['0 1; 1 0', ' 0,1 ; 1,0 ; ', [[0, 1], [1, 0]], ((0.0, 1.0), (1.0, 0.0))])
def test_parse_matrix(spec):
  a = topology.parse_matrix(spec)
  assert a.dtype == np.float32
  np.testing.assert_array_equal(a, [[0, 1], [1, 0]])


def test_parse_matrix_keeps_weights():
  np.testing.assert_array_equal(topology.parse_matrix('0 1 3; 2 0 0.5; 1 1 0'),
                                [[0, 1, 3], [2, 0, 0.5], [1, 1, 0]])


def test_parse_matrix_errors():
  with pytest.raises(ValueError, match="cannot read '0 x; 1 0' as a matrix"):
    topology.parse_matrix('0 x; 1 0')
  with pytest.raises(ValueError, match='rows must be non-empty and of equal length'):
    topology.parse_matrix('0 1; 1')
  with pytest.raises(ValueError, match='rows must be non-empty'):
    topology.parse_matrix('')
  with pytest.raises(ValueError, match='equal length'):
    topology.parse_matrix([[0, 1], [1, 0, 0]])


# ---------------------------------------------------------------- validation


def test_validate_returns_float32_matrix_unchanged():
  a = [[0, 2], [0.5, 0]]
  out = topology.validate(a, 2, distilling=True).toarray()
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize('a', [np.zeros((3, 3)), np.zeros((2, 3)), np.zeros(2)])
def test_validate_wrong_shape(a):
  with pytest.raises(ValueError, match=r'adjacency has shape .*expected \(2, 2\).*num_clients=2'):
    topology.validate(a, 2, distilling=False)


def test_validate_negative_weight():
  with pytest.raises(ValueError, match=r'negative weights \(e\.g\. A\[1, 0\] = -1\.0\)'):
    topology.validate([[0, 1], [-1, 0]], 2, distilling=False)


def test_validate_non_zero_diagonal():
  with pytest.raises(ValueError, match=r'non-zero diagonal \(A\[1, 1\] = 1\.0\).*include_self'):
    topology.validate([[0, 1], [1, 1]], 2, distilling=False)


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_validate_non_finite(bad):
  with pytest.raises(ValueError, match='non-finite'):
    topology.validate([[0, bad], [1, 0]], 2, distilling=False)


def test_validate_isolated_nodes_when_distilling():
  # Client 2 receives from 0 but sends to nobody: fine, everyone has an in-neighbour.
  topology.validate([[0, 1, 0], [1, 0, 0], [1, 0, 0]], 3, distilling=True)
  a_isolated = [[0, 1, 1], [1, 0, 1], [0, 0, 0]]  # client 2 sends but receives nothing
  with pytest.raises(ValueError, match=r"clients \[2\] have no in-neighbours.*topology='none'"):
    topology.validate(a_isolated, 3, distilling=True)
  with pytest.raises(ValueError, match=r'clients \[0, 1, 2\] have no in-neighbours'):
    topology.validate(np.zeros((3, 3)), 3, distilling=True)


def test_validate_isolated_nodes_allowed_when_not_distilling():
  a = [[0, 1, 1], [1, 0, 1], [0, 0, 0]]
  np.testing.assert_array_equal(topology.validate(a, 3, distilling=False).toarray(), a)
  np.testing.assert_array_equal(topology.validate(np.zeros((3, 3)), 3, distilling=False).toarray(),
                                np.zeros((3, 3)))


# --------------------------------------------------------------------- build


def _config(**overrides):
  c = ml_collections.ConfigDict(dict(num_clients=6, topology='complete', num_islands=2,
                                     degree=3, seed=0, adjacency='', edge_prob=0.5,
                                     rewire_prob=0.1, grid_rows=0, radius=0.5,
                                     nu_main=1.0, nu_aux=1.0, nu_emb=0.0))
  c.update(overrides)
  return c


@pytest.mark.parametrize('name, expected', [
    ('none', topology.empty(6).toarray()),
    ('complete', topology.complete(6).toarray()),
    ('ring', topology.ring(6).toarray()),
    ('chain', topology.chain(6).toarray()),
    ('star', topology.star(6).toarray()),
    ('islands', topology.islands(6, 2).toarray()),
    ('random_regular', topology.random_regular(6, 3, seed=0).toarray()),
    ('erdos_renyi', topology.erdos_renyi(6, 0.5, seed=0).toarray()),
    ('torus', topology.torus(6, 0).toarray()),
    ('random_geometric', topology.random_geometric(6, 0.5, seed=0).toarray()),
])
def test_build_each_name(name, expected):
  a = topology.build(_config(topology=name)).toarray()
  assert a.dtype == np.float32
  np.testing.assert_array_equal(a, expected)


def test_build_reads_its_fields():
  np.testing.assert_array_equal(
      topology.build(_config(topology='islands', num_islands=3)).toarray(),
      topology.islands(6, 3).toarray())
  a = topology.build(_config(topology='random_regular', degree=2, seed=4)).toarray()
  np.testing.assert_array_equal(a, topology.random_regular(6, 2, seed=4).toarray())
  np.testing.assert_array_equal(a.sum(1), np.full(6, 2))


def test_build_explicit():
  a = topology.build(_config(num_clients=3, topology='explicit',
                            adjacency='0 1 0; 0 0 2; 1 0 0')).toarray()
  np.testing.assert_array_equal(a, [[0, 1, 0], [0, 0, 2], [1, 0, 0]])


def test_build_explicit_without_adjacency_raises():
  with pytest.raises(ValueError, match=r"topology='explicit' needs config\.adjacency"):
    topology.build(_config(topology='explicit'))


def test_build_unknown_name_raises():
  with pytest.raises(ValueError, match="unknown topology 'hypercube'; choose one of none, complete"):
    topology.build(_config(topology='hypercube'))


def test_build_reads_the_family_fields():
  np.testing.assert_array_equal(topology.build(_config(topology='small_world', degree=2)).toarray(),
                                topology.small_world(6, 2, 0.1, seed=0).toarray())
  np.testing.assert_array_equal(topology.build(_config(topology='torus', grid_rows=1)).toarray(),
                                topology.ring(6).toarray())
  np.testing.assert_array_equal(
      topology.build(_config(topology='erdos_renyi', edge_prob=1.0)).toarray(),
      topology.complete(6).toarray())
  assert topology.build(_config(topology='random_geometric', radius=2.0, seed=5)).sum() == 30


def test_a_random_draw_that_isolates_a_client_says_what_to_change():
  with pytest.raises(ValueError, match=r'no in-neighbours.*erdos_renyi draws its graph from seed: '
                                       'raise edge_prob or change seed'):
    topology.build(_config(topology='erdos_renyi', edge_prob=0.0))


def test_build_validates():
  with pytest.raises(ValueError, match='expected \\(3, 3\\)'):
    topology.build(_config(num_clients=3, topology='explicit', adjacency='0 1; 1 0'))
  # A 1-client chain has no edges: an error when distilling ...
  with pytest.raises(ValueError, match=r'clients \[0\] have no in-neighbours'):
    topology.build(_config(num_clients=1, topology='chain'))
  with pytest.raises(ValueError, match=r'clients \[0, 1\] have no in-neighbours'):
    topology.build(_config(num_clients=4, topology='explicit',
                           adjacency='0 0 0 0; 0 0 0 0; 1 0 0 0; 1 0 0 0')).toarray()
  # ... and fine when every distillation weight is zero.
  a = topology.build(_config(num_clients=4, topology='explicit', nu_main=0.0, nu_aux=0.0,
                             adjacency='0 0 0 0; 0 0 0 0; 1 0 0 0; 1 0 0 0')).toarray()
  assert a.sum() == 2
  # Embedding distillation alone counts as distilling.
  with pytest.raises(ValueError, match='no in-neighbours'):
    topology.build(_config(num_clients=1, topology='chain', nu_main=0.0, nu_aux=0.0, nu_emb=1.0))


def test_build_none_is_allowed_while_distilling():
  # 'none' is the documented way to train in isolation: no validation error.
  assert not topology.build(_config(topology='none')).toarray().any()
