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


def make_average(specs, adjacency):
  """`average(state, adjacency_NxN=None, active_N=None) -> state`: gossip averaging within
  each group over a step's graph and participants (default: `adjacency`, every client).

  The training loop passes the network of the step the averaging follows
  (`programs.network_at`), so averaging respects `config.dynamics` like the
  step does: a failed link or an unmatched pair carries no weights either.
  """
  firsts = state_lib.offsets(specs)
  base_NxN = jnp.asarray(adjacency, jnp.float32)

  def average(state: state_lib.TrainState, adjacency_NxN=None,
              active_N=None) -> state_lib.TrainState:
    a = base_NxN if adjacency_NxN is None else adjacency_NxN
    mats = [averaging_matrix(a[f:f + s.num_clients, f:f + s.num_clients],
                             None if active_N is None else active_N[f:f + s.num_clients])
            for f, s in zip(firsts, specs)]
    mix = lambda w, tree: jax.tree.map(
        lambda x: jnp.einsum('ij,j...->i...', w, x, precision=jax.lax.Precision.HIGHEST
                             ).astype(x.dtype), tree)
    groups = tuple(g.replace(params=mix(w, g.params), batch_stats=mix(w, g.batch_stats))
                   for w, g in zip(mats, state.groups))
    return state.replace(groups=groups)

  return average
