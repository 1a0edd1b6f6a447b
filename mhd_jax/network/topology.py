"""Communication graphs as adjacency matrices.

`A[i, j] > 0` means client i receives from (distils from) client j; the value
is the edge weight used by the `mean` and `random` target rules. Every builder
returns a float32 [N, N] matrix with a zero diagonal (self-distillation between
a client's own heads is `include_self`, not a diagonal entry).
"""

from typing import Sequence

import networkx as nx
import numpy as np


def empty(n: int) -> np.ndarray:
  """No edges: every client trains in isolation."""
  return np.zeros((n, n), np.float32)


def complete(n: int) -> np.ndarray:
  """Everyone receives from everyone else."""
  return (1.0 - np.eye(n)).astype(np.float32)


def chain(n: int) -> np.ndarray:
  """A path 0 - 1 - ... - (n-1), edges both ways."""
  a = empty(n)
  i = np.arange(n - 1)
  a[i, i + 1] = a[i + 1, i] = 1.0
  return a


def ring(n: int) -> np.ndarray:
  """A chain closed into a cycle."""
  a = chain(n)
  if n > 2:
    a[0, n - 1] = a[n - 1, 0] = 1.0
  return a


def star(n: int, center: int = 0) -> np.ndarray:
  """A hub `center` linked both ways to every other client."""
  a = empty(n)
  a[center, :] = a[:, center] = 1.0
  a[center, center] = 0.0
  return a


def islands(n: int, num_islands: int) -> np.ndarray:
  """`num_islands` disconnected cliques of (nearly) equal size, in client order."""
  if not 1 <= num_islands <= n:
    raise ValueError(f'islands: num_islands must be in [1, {n}], got {num_islands}.')
  a = empty(n)
  for block in np.array_split(np.arange(n), num_islands):
    a[np.ix_(block, block)] = 1.0
  np.fill_diagonal(a, 0.0)
  return a


def random_regular(n: int, degree: int, seed: int) -> np.ndarray:
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
  a, i = empty(n), np.arange(n)
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


def _from_networkx(g: nx.Graph, n: int) -> np.ndarray:
  """An undirected networkx graph on nodes 0..n-1 as a 0/1 float32 adjacency."""
  return nx.to_numpy_array(g, nodelist=range(n), dtype=np.float32, weight=None)


def erdos_renyi(n: int, edge_prob: float, seed: int) -> np.ndarray:
  """Each of the n (n - 1) / 2 links present independently with probability `edge_prob`."""
  if not 0 <= edge_prob <= 1:
    raise ValueError(f'erdos_renyi: edge_prob must be in [0, 1], got {edge_prob}.')
  return _from_networkx(nx.gnp_random_graph(n, edge_prob, seed=seed), n)


def small_world(n: int, degree: int, rewire_prob: float, seed: int) -> np.ndarray:
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


def torus(n: int, rows: int = 0) -> np.ndarray:
  """A rows x cols grid with wraparound, client r * cols + c at (r, c); links both ways.

  Each client has 4 neighbours when rows, cols >= 3; a side of 2 gives one link
  that way (its two wraparound neighbours are the same client), a side of 1 none.
  """
  rows, cols = torus_shape(n, rows)
  g = nx.grid_2d_graph(rows, cols, periodic=True)
  return _from_networkx(nx.relabel_nodes(g, {(r, c): r * cols + c for r, c in g.nodes}), n)


def random_geometric(n: int, radius: float, seed: int) -> np.ndarray:
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


def validate(a: np.ndarray, num_clients: int, distilling: bool) -> np.ndarray:
  """Checks an adjacency matrix and returns it; every error names the problem.

  Args:
    a: the matrix.
    num_clients: N.
    distilling: whether any distillation weight is non-zero. Then every client
      needs an in-neighbour, or its distillation terms would silently vanish
      (use topology 'none' for isolated training).
  """
  a = np.asarray(a, np.float32)
  if a.shape != (num_clients, num_clients):
    raise ValueError(f'adjacency has shape {a.shape}, expected ({num_clients}, {num_clients}) '
                     f'for num_clients={num_clients}.')
  if not np.all(np.isfinite(a)):
    raise ValueError('adjacency has non-finite entries.')
  if np.any(a < 0):
    i, j = np.argwhere(a < 0)[0]
    raise ValueError(f'adjacency has negative weights (e.g. A[{i}, {j}] = {a[i, j]}); '
                     'weights must be >= 0.')
  if np.any(np.diag(a) != 0):
    i = int(np.flatnonzero(np.diag(a))[0])
    raise ValueError(f'adjacency has a non-zero diagonal (A[{i}, {i}] = {a[i, i]}); '
                     'use include_self for distillation between a client\'s own heads.')
  isolated = np.flatnonzero(a.sum(axis=1) == 0)
  if distilling and len(isolated):
    raise ValueError(f'clients {isolated.tolist()} have no in-neighbours but distillation is on; '
                     "connect them, or use topology='none' (or nu_main = nu_aux = nu_emb = 0) "
                     'for isolated training.')
  return a


BUILDERS = ('none', 'complete', 'ring', 'chain', 'star', 'islands', 'random_regular', 'explicit',
            'erdos_renyi', 'small_world', 'torus', 'random_geometric')


# Random families that can leave a client isolated, and what to change when a draw does
# (small_world cannot: each client keeps the degree / 2 links it rewires).
RANDOM_FAMILIES = {'erdos_renyi': 'raise edge_prob or change seed',
                   'random_geometric': 'raise radius or change seed'}


def build(config) -> np.ndarray:
  """The validated adjacency matrix a config asks for (`config.topology`)."""
  n, name = config.num_clients, config.topology
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
    a = islands(n, config.num_islands)
  elif name == 'random_regular':
    a = random_regular(n, config.degree, config.seed)
  elif name == 'explicit':
    if not config.adjacency:
      raise ValueError("topology='explicit' needs config.adjacency, e.g. '0 1; 1 0'.")
    a = parse_matrix(config.adjacency)
  elif name == 'erdos_renyi':
    a = erdos_renyi(n, config.edge_prob, config.seed)
  elif name == 'small_world':
    a = small_world(n, config.degree, config.rewire_prob, config.seed)
  elif name == 'torus':
    a = torus(n, config.grid_rows)
  elif name == 'random_geometric':
    a = random_geometric(n, config.radius, config.seed)
  else:
    raise ValueError(f'unknown topology {name!r}; choose one of {", ".join(BUILDERS)}.')
  distilling = any(v != 0 for v in (config.nu_main, config.nu_aux, config.nu_emb))
  try:
    return validate(a, n, distilling)
  except ValueError as e:
    if name not in RANDOM_FAMILIES:
      raise
    raise ValueError(f'{e} ({name} draws its graph from seed: {RANDOM_FAMILIES[name]})') from None
