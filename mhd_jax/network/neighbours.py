"""Who may teach whom as a padded neighbour table: the graph in O(N K) instead of O(N^2).

Row i of a `Table` lists client i itself and every client linked to it (one it learns
from, or one that learns from it: a link carries a matching both ways), in increasing
order, padded to K columns with the out-of-range id N. A graph on the table is a
weight array [N, K]: `W[i, k] = A[i, senders[i, k]]`, 0 for i itself, for a link that
only goes the other way and for padding. The exchange gathers each client's K
candidates through it (`algorithm.distill`), and the schedules draw failures and
matchings per link (`graph_schedule`).

The dense form is the same table with K = N and column k = client k; it has no arrays
(`senders` None), and the code that reads a table spells its gathers for both
(`gather`, `reverse`).
"""

from typing import Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from scipy import sparse


EXCHANGES = ('auto', 'dense', 'sparse')  # config.exchange
# 'auto' takes the table where a row holds at most this share of the population: below it
# the gathers cost less than the dense contraction over every client. Measured on 2 busy
# CPU cores (benchmarks/exchange_crossover.py, default MLP, random regular graphs; rows in
# benchmarks/results/exchange_crossover.jsonl), sparse / dense CPU time per step: N = 64:
# 0.89 at share 0.14, 1.40 at 0.27, 1.07 at 0.52, 1.04 complete; N = 256: 0.74 at 0.07,
# 0.88 at 0.25, 1.01 at 0.50. Above a quarter the table also needs more step memory than
# the dense step (N = 256: 310 against 266 MB at 0.25, 458 at 0.50) for a gain of at most 12%.
AUTO_SHARE = 0.25


@flax.struct.dataclass
class Table:
  """The sparse form: K columns per client (host arrays until a program takes them)."""
  senders_NxK: jax.Array  # int32 client ids, increasing per row, i itself included; padding N
  reverse_NxK: jax.Array  # int32: the column of i in row senders[i, k] (padding: 0)

  @property
  def width(self) -> int:
    return self.senders_NxK.shape[1]


def _links(graphs: Sequence) -> sparse.csr_matrix:
  """[N, N] bool, symmetric, with the diagonal: the union of the graphs' links both ways."""
  n = graphs[0].shape[0]
  links = sparse.identity(n, dtype=bool, format='csr')
  for a in graphs:
    a = sparse.csr_matrix(a)
    links = links + (a != 0) + (a != 0).T
  links = sparse.csr_matrix(links, dtype=bool)
  links.sort_indices()
  return links


def build(graphs: Sequence) -> tuple[Table, np.ndarray]:
  """(the table of the graphs' links, their weights [G, N, K] on it), from dense or
  scipy.sparse [N, N] matrices (host only)."""
  links = _links(graphs)
  n = links.shape[0]
  counts = np.diff(links.indptr)
  k = int(counts.max())
  rows = np.repeat(np.arange(n), counts)
  cols = links.indices.astype(np.int64)
  within = np.arange(len(cols)) - links.indptr[rows]
  senders = np.full((n, k), n, np.int32)
  senders[rows, within] = cols
  # Entries are sorted by (row, col): the entry (j, i) is found by binary search.
  codes = rows.astype(np.int64) * n + cols
  back = np.searchsorted(codes, cols * n + rows)
  reverse = np.zeros((n, k), np.int32)
  reverse[rows, within] = back - links.indptr[cols]
  weights = np.zeros((len(graphs), n, k), np.float32)
  for g, a in enumerate(graphs):
    weights[g, rows, within] = np.asarray(sparse.csr_matrix(a, dtype=np.float32)[rows, cols]
                                          ).ravel()
  return Table(senders, reverse), weights


def validate(table: Table, weights_GxNxK) -> None:
  """Raises ValueError (one line) unless the table is one `build` could make and the weights
  sit on it: ids in range and increasing per row, each client once in its own row, every
  link's other end where `reverse` says, no weight on padding or on a client itself."""
  senders, reverse = np.asarray(table.senders_NxK), np.asarray(table.reverse_NxK)
  weights = np.asarray(weights_GxNxK)
  n, k = senders.shape
  real = senders < n
  problem = None
  if weights.shape[1:] != (n, k):
    problem = f'weights of shape {weights.shape[1:]} on a table of shape {(n, k)}'
  elif (senders < 0).any() or (senders > n).any():
    problem = f'sender ids outside [0, {n}]'
  elif (np.diff(np.where(real, senders, n + 1 + np.arange(k)), axis=1) <= 0).any() or (
      np.diff(real.astype(int), axis=1) > 0).any():
    problem = 'rows not increasing, or padding before a sender'
  elif ((senders == np.arange(n)[:, None]).sum(1) != 1).any():
    problem = 'a client missing from its own row'
  else:
    rows, cols = np.nonzero(real)
    other = senders[rows, cols]
    if (reverse[rows, cols] >= k).any() or (
        senders[other, np.minimum(reverse[rows, cols], k - 1)] != rows).any():
      problem = 'a link whose other end is not where reverse says'
    elif (weights[:, ~real] != 0).any() or (weights[:, senders == np.arange(n)[:, None]] != 0
                                            ).any():
      problem = 'weight on padding or on a client itself'
  if problem:
    raise ValueError(f'the neighbour table does not match the graph: {problem}.')


def choose(exchange: str, n: int, width: int) -> bool:
  """Whether the exchange runs on the table (sparse) for `config.exchange` and a table of
  `width` columns over `n` clients."""
  if exchange not in EXCHANGES:
    raise ValueError(f'unknown exchange {exchange!r}: config.exchange must be one of '
                     f'{", ".join(EXCHANGES)}.')
  return exchange == 'sparse' or (exchange == 'auto' and width <= AUTO_SHARE * n)


def exchange_bytes(sparse: bool, s: int, width: int, heads: int, batch: int,
                   classes: int) -> int:
  """What one step's exchange holds at once, in bytes (float32): the mixing weights and the
  candidates' confidences [S, H, B, K] and, on a table, the gathered outputs [S, K, H, B, C];
  dense, K = S. A lower bound: XLA may keep a few such buffers alive together."""
  k = width if sparse else s
  return 4 * s * k * heads * batch * (2 + (classes if sparse else 0))


def fits(sparse: bool, s: int, width: int, heads: int, batch: int, classes: int,
         available: int) -> str | None:
  """None, or a one-line problem: the exchange a run was forced onto cannot hold the
  population in `available` bytes."""
  need = exchange_bytes(sparse, s, width, heads, batch, classes)
  if need <= available:
    return None
  other = exchange_bytes(not sparse, s, width, heads, batch, classes)
  return (f'exchange={"sparse" if sparse else "dense"} needs at least {need / 2**30:.1f} GiB '
          f'for {s} clients (table width {width}, {heads} heads, public batch {batch}, '
          f'{classes} classes) but {available / 2**30:.1f} GiB are available; '
          f'exchange={"dense" if sparse else "sparse"} needs {other / 2**30:.2f} GiB'
          + ('' if other <= available else ': fewer clients or a smaller public batch') + '.')


def dense(table: Table, weights_NxK) -> np.ndarray:
  """The [N, N] matrix of weights on a table (host; the tests' reference)."""
  senders, weights_NxK = np.asarray(table.senders_NxK), np.asarray(weights_NxK)
  n = senders.shape[0]
  a = np.zeros((n, n + 1), np.float32)  # column N collects the padding
  np.add.at(a, (np.arange(n)[:, None], senders), weights_NxK)
  return a[:, :n]


def gather(x_N, senders_SxK, rows: int | None = None):
  """x[senders]: [S, K, ...] (padding reads 0); dense (senders None): x broadcast to
  [S, N, ...], row i holding every client (S = `rows`, by default N: the rows are the
  senders)."""
  if senders_SxK is None:
    return jnp.broadcast_to(x_N[None], (x_N.shape[0] if rows is None else rows,) + x_N.shape)
  return x_N.at[senders_SxK].get(mode='fill', fill_value=0)


def reverse(x_NxK, table: Table | None):
  """y[i, k] = x[senders[i, k], reverse[i, k]]: the entry of the same link seen from the other
  end (dense: the transpose); padding reads 0."""
  if table is None:
    return x_NxK.T
  return x_NxK.at[table.senders_NxK, table.reverse_NxK].get(mode='fill', fill_value=0)


def is_self(senders_SxK, n: int, rows_S=None):
  """[S, K] bool: the column of row i's own client among the n senders (dense: the diagonal).

  `rows_S`: each row's client when the rows are not the senders themselves (a cohort of
  students against every client: `distill.Network.cohort`); a row whose client is not
  among the senders (padding, ids >= n) has no own column.
  """
  if rows_S is None:
    if senders_SxK is None:
      return jnp.eye(n, dtype=bool)
    return senders_SxK == jnp.arange(senders_SxK.shape[0])[:, None]
  cols_SxK = jnp.arange(n)[None] if senders_SxK is None else senders_SxK
  return (cols_SxK == rows_S[:, None]) & (rows_S[:, None] < n)


def ids(senders_SxK, n: int, rows: int | None = None):
  """[S, K] int32: the client id of each column (padding: N); dense: S = `rows` (default n)."""
  if senders_SxK is None:
    return jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[None], (n if rows is None else rows, n))
  return senders_SxK
