"""Communication graphs as sparse adjacency matrices.

`A[i, j] > 0` means client i receives from (distils from) client j; the value
is the edge weight used by the `mean` and `random` target rules. Every builder
returns a float32 [N, N] `scipy.sparse.csr_array` with no diagonal entry
(self-distillation between a client's own heads is `include_self`, not a
diagonal entry), built from its links in O(N + E): a graph of 10,000 clients
costs milliseconds and kilobytes where a dense matrix holds 400 MB. Code that
reads a small graph as an array takes `.toarray()`; `validate` and the readers
of a graph (`neighbours.build`, `communication`, `report`) take either form.
"""

import functools
from typing import Sequence

import networkx as nx
import numpy as np
from scipy import sparse


def _from_links(n: int, rows, cols) -> sparse.csr_array:
  """The 0/1 float32 [n, n] matrix with A[rows, cols] = 1 (a link given twice counts once)."""
  a = sparse.csr_array((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n))
  a.sum_duplicates()
  a.data[:] = 1.0
  return a


def empty(n: int) -> sparse.csr_array:
  """No edges: every client trains in isolation."""
  return sparse.csr_array((n, n), dtype=np.float32)


def complete(n: int) -> sparse.csr_array:
  """Everyone receives from everyone else."""
  i, j = np.nonzero(~np.eye(n, dtype=bool))
  return _from_links(n, i, j)


def _both_ways(n: int, i, j) -> sparse.csr_array:
  """Links i - j in both directions."""
  return _from_links(n, np.concatenate([i, j]), np.concatenate([j, i]))


def chain(n: int) -> sparse.csr_array:
  """A path 0 - 1 - ... - (n-1), edges both ways."""
  i = np.arange(n - 1)
  return _both_ways(n, i, i + 1)


def ring(n: int) -> sparse.csr_array:
  """A chain closed into a cycle."""
  i = np.arange(n if n > 2 else n - 1)  # two clients: one link, not two
  return _both_ways(n, i, (i + 1) % n)


def star(n: int, center: int = 0) -> sparse.csr_array:
  """A hub `center` linked both ways to every other client."""
  others = np.delete(np.arange(n), center)
  return _both_ways(n, np.full(len(others), center), others)


def islands(n: int, num_islands: int) -> sparse.csr_array:
  """`num_islands` disconnected cliques of (nearly) equal size, in client order."""
  if not 1 <= num_islands <= n:
    raise ValueError(f'islands: num_islands must be in [1, {n}], got {num_islands}.')
  pairs = [np.meshgrid(block, block, indexing='ij')
           for block in np.array_split(np.arange(n), num_islands)]
  i = np.concatenate([p[0].ravel() for p in pairs])
  j = np.concatenate([p[1].ravel() for p in pairs])
  return _from_links(n, i[i != j], j[i != j])


def random_regular(n: int, degree: int, seed: int) -> sparse.csr_array:
  """A seeded random simple undirected graph where every client has `degree` neighbours.

  Starts from a circulant graph (i ~ i +- 1..degree//2, plus i + n/2 when
  degree is odd), relabels the nodes at random, then mixes it with 10 |E|
  degree-preserving edge swaps (u-v, x-y -> u-x, v-y). Always succeeds; the
  draw is close to, not exactly, uniform. Needs degree < n and n * degree even.
  """
  if not 0 <= degree < n or (n * degree) % 2:
    raise ValueError(f'random_regular: need 0 <= degree < num_clients and num_clients * degree '
                     f'even, got num_clients={n}, degree={degree}.')
  rng = np.random.default_rng(seed)
  shifts = np.array(list(range(1, degree // 2 + 1)) + ([n // 2] if degree % 2 else []), int)
  i, j = np.tile(np.arange(n), len(shifts)), (np.arange(n)[None] + shifts[:, None]).ravel() % n
  where = np.argsort(rng.permutation(n))  # client c of the circulant is client where[c]
  upper = sparse.triu(_both_ways(n, where[i], where[j]), format='csr')
  upper.sort_indices()
  rows = np.repeat(np.arange(n), np.diff(upper.indptr))
  edges = np.stack([rows, upper.indices], 1).tolist()  # (u, v), u < v, in row-major order
  linked = {(u, v) for u, v in edges} | {(v, u) for u, v in edges}
  # The same draws, in the same order, as on a dense matrix: one edge pair and one coin per
  # swap, taken or not (set lookups, not a dense [n, n] array).
  for _ in range(10 * len(edges) if len(edges) > 1 else 0):
    e, f = rng.choice(len(edges), 2, replace=False)
    (u, v), (x, y) = edges[e], edges[f]
    if rng.random() < 0.5:
      x, y = y, x
    if len({u, v, x, y}) < 4 or (u, x) in linked or (v, y) in linked:
      continue
    linked -= {(u, v), (v, u), (x, y), (y, x)}
    linked |= {(u, x), (x, u), (v, y), (y, v)}
    edges[e], edges[f] = [u, x], [v, y]
  pairs = np.array(sorted(linked), np.int64).reshape(-1, 2)
  return _from_links(n, pairs[:, 0], pairs[:, 1])


def _from_networkx(g: nx.Graph, n: int) -> sparse.csr_array:
  """An undirected networkx graph on nodes 0..n-1 as a 0/1 float32 adjacency."""
  return nx.to_scipy_sparse_array(g, nodelist=range(n), dtype=np.float32, weight=None,
                                 format='csr')


def erdos_renyi(n: int, edge_prob: float, seed: int) -> sparse.csr_array:
  """Each of the n (n - 1) / 2 links present independently with probability `edge_prob`."""
  if not 0 <= edge_prob <= 1:
    raise ValueError(f'erdos_renyi: edge_prob must be in [0, 1], got {edge_prob}.')
  return _from_networkx(nx.gnp_random_graph(n, edge_prob, seed=seed), n)


def small_world(n: int, degree: int, rewire_prob: float, seed: int) -> sparse.csr_array:
  """Watts-Strogatz: a ring lattice of `degree` nearest neighbours (degree / 2 on each
  side), each link rewired to a random client with probability `rewire_prob`.

  Needs an even degree in [2, n - 1], so that the lattice is what `degree` says
  (networkx silently uses degree - 1 for an odd one).
  """
  if degree % 2 or not 2 <= degree < n:
    raise ValueError(f'small_world: degree must be even and in [2, num_clients - 1], got '
                     f'degree={degree} for num_clients={n}.')
  if not 0 <= rewire_prob <= 1:
    raise ValueError(f'small_world: rewire_prob must be in [0, 1], got {rewire_prob}.')
  return _from_networkx(nx.watts_strogatz_graph(n, degree, rewire_prob, seed=seed), n)


def torus_shape(n: int, rows: int = 0) -> tuple[int, int]:
  """(rows, cols) of a torus of n clients; rows = 0 picks the squarest grid."""
  if rows == 0:
    rows = max(r for r in range(1, int(np.sqrt(n)) + 1) if n % r == 0)
  if not 1 <= rows <= n or n % rows:
    raise ValueError(f'torus: grid_rows={rows} must divide num_clients={n} (0 = the squarest '
                     'grid).')
  return rows, n // rows


def torus(n: int, rows: int = 0) -> sparse.csr_array:
  """A rows x cols grid with wraparound, client r * cols + c at (r, c); links both ways.

  Each client has 4 neighbours when rows, cols >= 3; a side of 2 gives one link
  that way (its two wraparound neighbours are the same client), a side of 1 none.
  """
  rows, cols = torus_shape(n, rows)
  g = nx.grid_2d_graph(rows, cols, periodic=True)
  return _from_networkx(nx.relabel_nodes(g, {(r, c): r * cols + c for r, c in g.nodes}), n)


def random_geometric(n: int, radius: float, seed: int) -> sparse.csr_array:
  """Clients at uniform random points of the unit square, linked when closer than `radius`."""
  if not radius >= 0:
    raise ValueError(f'random_geometric: radius must be >= 0, got {radius}.')
  return _from_networkx(nx.random_geometric_graph(n, radius, seed=seed), n)


def parse_matrix(spec: str | Sequence[Sequence[float]]) -> np.ndarray:
  """A matrix from nested sequences or a string like '0 1 0; 1 0 1; 0 1 0'."""
  if isinstance(spec, str):
    rows = [r.replace(',', ' ').split() for r in spec.strip().split(';') if r.strip()]
    try:
      spec = [[float(v) for v in r] for r in rows]
    except ValueError as e:
      raise ValueError(f'adjacency: cannot read {spec!r} as a matrix ({e}).') from None
  rows = [list(r) for r in spec]
  if not rows or any(len(r) != len(rows[0]) for r in rows):
    raise ValueError('adjacency: rows must be non-empty and of equal length.')
  return np.asarray(rows, np.float32)


def validate(a, num_clients: int, distilling: bool) -> sparse.csr_array:
  """Checks an adjacency matrix (dense or scipy.sparse) and returns it as a float32 csr_array;
  every error names the problem.

  Args:
    a: the matrix.
    num_clients: N.
    distilling: whether any distillation weight is non-zero. Then every client
      needs an in-neighbour, or its distillation terms would silently vanish
      (use topology 'none' for isolated training).
  """
  a = sparse.csr_array(a if sparse.issparse(a) else np.asarray(a, np.float32), dtype=np.float32,
                       copy=True)  # canonicalised below: never the caller's matrix
  if a.shape != (num_clients, num_clients):
    raise ValueError(f'adjacency has shape {a.shape}, expected ({num_clients}, {num_clients}) '
                     f'for num_clients={num_clients}.')
  a.sum_duplicates()
  rows = np.repeat(np.arange(num_clients), np.diff(a.indptr))
  if not np.all(np.isfinite(a.data)):
    raise ValueError('adjacency has non-finite entries.')
  if np.any(a.data < 0):
    k = np.flatnonzero(a.data < 0)[0]
    raise ValueError(f'adjacency has negative weights (e.g. A[{rows[k]}, {a.indices[k]}] = '
                     f'{a.data[k]}); weights must be >= 0.')
  diagonal = a.diagonal()
  if np.any(diagonal != 0):
    i = int(np.flatnonzero(diagonal)[0])
    raise ValueError(f'adjacency has a non-zero diagonal (A[{i}, {i}] = {diagonal[i]}); '
                     'use include_self for distillation between a client\'s own heads.')
  isolated = np.flatnonzero(a.sum(axis=1) == 0)
  if distilling and len(isolated):
    raise ValueError(f'clients {isolated.tolist()} have no in-neighbours but distillation is on; '
                     "connect them, or use topology='none' (or nu_main = nu_aux = nu_emb = 0) "
                     'for isolated training.')
  a.eliminate_zeros()
  return a


BUILDERS = ('none', 'complete', 'ring', 'chain', 'star', 'islands', 'random_regular', 'explicit',
            'erdos_renyi', 'small_world', 'torus', 'random_geometric')


# Random families that can leave a client isolated, and what to change when a draw does
# (small_world cannot: each client keeps the degree / 2 links it rewires).
RANDOM_FAMILIES = {'erdos_renyi': 'raise edge_prob or change seed',
                   'random_geometric': 'raise radius or change seed'}


# What `build` reads of a config besides num_clients and topology.
FIELDS = ('num_islands', 'degree', 'adjacency', 'edge_prob', 'rewire_prob', 'grid_rows', 'radius',
          'seed')


def build(config) -> sparse.csr_array:
  """The validated adjacency matrix a config asks for (`config.topology`), sparse.

  A run asks for its graph several times (the config check, the run, the schedule); the
  last few graphs are kept, so a random family's draw (random_regular swaps 10 |E| links
  in Python: seconds at 10,000 clients) is paid once. Each call returns its own copy.
  """
  distilling = any(v != 0 for v in (config.nu_main, config.nu_aux, config.nu_emb))
  return _build(config.num_clients, config.topology, distilling,
                tuple(config.get(k) for k in FIELDS)).copy()


@functools.lru_cache(maxsize=4)
def _build(n: int, name: str, distilling: bool, fields: tuple) -> sparse.csr_array:
  f = dict(zip(FIELDS, fields))
  if name == 'none':
    return empty(n)
  if name == 'complete':
    a = complete(n)
  elif name == 'ring':
    a = ring(n)
  elif name == 'chain':
    a = chain(n)
  elif name == 'star':
    a = star(n)
  elif name == 'islands':
    a = islands(n, f['num_islands'])
  elif name == 'random_regular':
    a = random_regular(n, f['degree'], f['seed'])
  elif name == 'explicit':
    if not f['adjacency']:
      raise ValueError("topology='explicit' needs config.adjacency, e.g. '0 1; 1 0'.")
    a = parse_matrix(f['adjacency'])
  elif name == 'erdos_renyi':
    a = erdos_renyi(n, f['edge_prob'], f['seed'])
  elif name == 'small_world':
    a = small_world(n, f['degree'], f['rewire_prob'], f['seed'])
  elif name == 'torus':
    a = torus(n, f['grid_rows'])
  elif name == 'random_geometric':
    a = random_geometric(n, f['radius'], f['seed'])
  else:
    raise ValueError(f'unknown topology {name!r}; choose one of {", ".join(BUILDERS)}.')
  try:
    return validate(a, n, distilling)
  except ValueError as e:
    if name not in RANDOM_FAMILIES:
      raise
    raise ValueError(f'{e} ({name} draws its graph from seed: {RANDOM_FAMILIES[name]})') from None
