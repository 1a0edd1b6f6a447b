"""Weight-averaging baselines: FedAvg and gossip averaging along the graph (docs/algorithm.md).

Every `config.average_every` steps, each client replaces its parameters and
batch statistics by a weighted average of its own and its in-neighbours':
`W = D^-1 (A + I)` restricted to its group (averaging needs one architecture).
On a complete graph with equal weights this is FedAvg with equal client
weights; on other graphs it is gossip averaging. Optimizer states stay local.
The supervised upper bound needs no code: one client holding all private data
(`num_clients=1, topology='none'`, see `studies.SUPERVISED`).
"""

import jax
import jax.numpy as jnp
import numpy as np

from mhd_jax import state as state_lib


def averaging_matrix(adjacency_nxn) -> np.ndarray:
  """Row-stochastic W = D^-1 (A + I): client i averages itself and its in-neighbours."""
  a = np.asarray(adjacency_nxn, np.float64) + np.eye(len(adjacency_nxn))
  return (a / a.sum(axis=1, keepdims=True)).astype(np.float32)


def make_average(specs, adjacency):
  """`average(state) -> state` applying gossip averaging within each group."""
  firsts = state_lib.offsets(specs)
  mats = [jnp.asarray(averaging_matrix(np.asarray(adjacency)[f:f + s.num_clients,
                                                             f:f + s.num_clients]))
          for f, s in zip(firsts, specs)]

  def average(state: state_lib.TrainState) -> state_lib.TrainState:
    mix = lambda w, tree: jax.tree.map(
        lambda x: jnp.einsum('ij,j...->i...', w, x, precision=jax.lax.Precision.HIGHEST
                             ).astype(x.dtype), tree)
    groups = tuple(g.replace(params=mix(w, g.params), batch_stats=mix(w, g.batch_stats))
                   for w, g in zip(mats, state.groups))
    return state.replace(groups=groups)

  return average
