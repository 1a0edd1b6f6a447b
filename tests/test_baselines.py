"""FedAvg / gossip averaging against hand-computed averages."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mhd_jax.algorithm import baselines
from mhd_jax.network import topology
from mhd_jax.population import state as state_lib


def test_averaging_matrix_is_row_stochastic_over_self_and_neighbours():
  w = baselines.averaging_matrix(topology.chain(3).toarray())
  np.testing.assert_allclose(w, [[1 / 2, 1 / 2, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1 / 2, 1 / 2]],
                             rtol=1e-6)
  np.testing.assert_allclose(baselines.averaging_matrix(topology.empty(2).toarray()), np.eye(2))


def _state(values_per_group):
  groups = tuple(state_lib.Group(params={'w': jnp.asarray(v, jnp.float32)},
                           batch_stats={'m': 10 * jnp.asarray(v, jnp.float32)},
                           opt_state={'count': jnp.arange(len(v))})
                 for v in values_per_group)
  return state_lib.TrainState(step=jnp.zeros((), jnp.int32), groups=groups)


class _Spec:
  def __init__(self, n):
    self.num_clients, self.model, self.tx = n, None, optax.identity()


def test_complete_graph_is_fedavg_and_groups_do_not_mix():
  state = _state([[[1.0], [2.0], [6.0]], [[100.0], [200.0]]])
  average = jax.jit(baselines.make_average([_Spec(3), _Spec(2)], topology.complete(5)))
  out = average(state)
  np.testing.assert_allclose(out.groups[0].params['w'], [[3.0]] * 3, rtol=1e-6)
  np.testing.assert_allclose(out.groups[0].batch_stats['m'], [[30.0]] * 3, rtol=1e-6)
  # The second group (another architecture) averages only within itself.
  np.testing.assert_allclose(out.groups[1].params['w'], [[150.0]] * 2, rtol=1e-6)
  # Optimizer states stay local.
  np.testing.assert_array_equal(out.groups[0].opt_state['count'], [0, 1, 2])


def test_gossip_on_a_chain_moves_one_hop_per_round():
  state = _state([[[0.0], [0.0], [6.0]]])
  out = baselines.make_average([_Spec(3)], topology.chain(3))(state)
  np.testing.assert_allclose(out.groups[0].params['w'], [[0.0], [2.0], [3.0]], rtol=1e-6)


def test_averaging_follows_the_steps_participants_and_links():
  state = _state([[[1.0], [2.0], [9.0], [6.0]]])
  average = jax.jit(baselines.make_average([_Spec(4)], topology.complete(4)))
  # Client 2 sits the step out: it keeps its weights and nobody averages with it.
  out = average(state, jnp.asarray(topology.complete(4).toarray(), jnp.float32),
                jnp.array([True, True, False, True]))
  np.testing.assert_allclose(out.groups[0].params['w'], [[3.0], [3.0], [9.0], [3.0]], rtol=1e-6)
  np.testing.assert_allclose(out.groups[0].batch_stats['m'][2], [90.0], rtol=1e-6)
  # Only the link 0 - 3 is up (a matching): 0 and 3 average, 1 and 2 keep theirs.
  a = np.zeros((4, 4), np.float32)
  a[0, 3] = a[3, 0] = 1
  out = average(state, jnp.asarray(a), jnp.ones(4, bool))
  np.testing.assert_allclose(out.groups[0].params['w'], [[3.5], [2.0], [9.0], [3.5]], rtol=1e-6)
