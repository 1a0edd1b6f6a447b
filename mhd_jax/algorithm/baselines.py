"""Weight-averaging baselines: FedAvg and gossip averaging along the graph (docs/algorithm.md).

Every `config.average_every` steps, each client replaces its parameters and
batch statistics by a weighted average of its own and its in-neighbours':
`W = D^-1 (A + I)` restricted to its group (averaging needs one architecture).
On a complete graph with equal weights this is FedAvg with equal client
weights; on other graphs it is gossip averaging. Optimizer states stay local.
Under `config.dynamics` the averaging after step s uses step s's graph and
participants (docs/dynamics.md).
The supervised upper bound needs no code: one client holding all private data
(`num_clients=1, topology='none'`, see `studies.methods.SUPERVISED`).
"""

import jax
import jax.numpy as jnp
from scipy import sparse

from mhd_jax.population import state as state_lib


def averaging_matrix(adjacency_nxn, active_n=None) -> jax.Array:
  """Row-stochastic W = D^-1 (A' + I): client i averages itself and its in-neighbours.

  A' is A between the clients of `active_n` (default: all): an inactive client
  neither sends nor averages (its row is the identity), as it neither teaches
  nor learns in the step.
  """
  a = jnp.asarray(adjacency_nxn, jnp.float32)
  if active_n is not None:
    live = jnp.asarray(active_n, jnp.float32)
    a = a * live[:, None] * live[None, :]
  a = a + jnp.eye(a.shape[0], dtype=jnp.float32)
  return a / a.sum(axis=1, keepdims=True)


def _table_average(x_nx, w_nxK, local_nxK):
  """(x_i + sum_c w[i, c] x[local[i, c]]) / (1 + sum_c w[i, c]): `averaging_matrix`'s rows on
  a neighbour table, one column at a time (never a [n, K, ...] copy of the parameters)."""
  expand = lambda v: v.reshape(v.shape + (1,) * (x_nx.ndim - 1))
  total = x_nx.astype(jnp.float32)
  for c in range(w_nxK.shape[1]):
    total = total + expand(w_nxK[:, c]) * x_nx[local_nxK[:, c]]
  return (total / expand(1 + w_nxK.sum(1))).astype(x_nx.dtype)


def make_average(specs, adjacency):
  """`average(state, weights=None, active_N=None, senders_NxK=None) -> state`: gossip
  averaging within each group over a step's graph and participants (default: `adjacency`,
  every client).

  The graph is dense ([N, N]; `adjacency` may be scipy.sparse) or, with `senders_NxK`,
  weights [N, K] on a neighbour table (`network.neighbours`). The training loop passes
  the network of the step the averaging follows (`programs.network_at`), so averaging
  respects `config.dynamics` like the step does: a failed link or an unmatched pair
  carries no weights either.
  """
  firsts = state_lib.offsets(specs)
  mix = lambda w, tree: jax.tree.map(
      lambda x: jnp.einsum('ij,j...->i...', w, x, precision=jax.lax.Precision.HIGHEST
                           ).astype(x.dtype), tree)

  def average(state: state_lib.TrainState, weights=None, active_N=None,
              senders_NxK=None) -> state_lib.TrainState:
    if weights is None:  # densified only here: the training loop always passes its step's graph
      weights = adjacency.toarray() if sparse.issparse(adjacency) else adjacency
    a = jnp.asarray(weights, jnp.float32)
    live = jnp.ones(a.shape[0], jnp.float32) if active_N is None else active_N.astype(
        jnp.float32)
    groups = []
    for f, s, g in zip(firsts, specs, state.groups):
      n = s.num_clients
      if senders_NxK is None:
        w = averaging_matrix(a[f:f + n, f:f + n], None if active_N is None else active_N[f:f + n])
        groups.append(g.replace(params=mix(w, g.params), batch_stats=mix(w, g.batch_stats)))
        continue
      senders = senders_NxK[f:f + n]
      inside = (senders >= f) & (senders < f + n) & (senders != jnp.arange(f, f + n)[:, None])
      w = jnp.where(inside, a[f:f + n] * live[f:f + n, None]
                    * live.at[senders].get(mode='fill', fill_value=0), 0.0)
      local = jnp.clip(senders - f, 0, n - 1)
      each = lambda tree: jax.tree.map(lambda x: _table_average(x, w, local), tree)
      groups.append(g.replace(params=each(g.params), batch_stats=each(g.batch_stats)))
    return state.replace(groups=tuple(groups))

  return average
