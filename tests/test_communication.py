"""Communication accounting against hand-computed byte counts."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import sparse

from configs import default
from mhd_jax import models
from mhd_jax.network import topology
from mhd_jax.population import groups
from mhd_jax.population import state as state_lib
from mhd_jax.wire import communication
from mhd_jax.wire import compression


def _mlp(dtype='float32'):
  cfg = ml_collections.ConfigDict(dict(name='mlp', width=5, depth=1, dtype=dtype,
                                       aux_backbone_grad=True))
  model = models.make_model(cfg, num_heads=2, num_classes=3)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 1)), train=False)
  return model, variables['params']


def test_bytes_sent_follow_out_degree_and_output_size():
  model, params = _mlp()
  head, emb, dim = communication.public_output_sizes(model, params, {}, (4, 4, 1), 7)
  assert head == 7 * 3 * 4                     # B_pub * C float32 numbers per head
  assert (emb, dim) == (7 * 5 * 4, 5)          # the D = 5 embedding
  # Chain 0 - 1 - 2, both heads distilled (head 1 reads head 0): the middle client sends its
  # head 0 to two neighbours; the last head is read by nobody (tests/test_bytes.py).
  config = ml_collections.ConfigDict(dict(nu_main=1.0, nu_aux=1.0, nu_emb=0.0,
                                          target='mean', include_self=False))
  read, q = communication.readers(topology.chain(3), 2, config)
  sent = communication.bytes_sent_per_step(read, q, [7 * 3 * 4] * 3, [0] * 3)
  np.testing.assert_array_equal(sent, [84, 168, 84])
  # Directed: only client 0 receives (from 2), so only client 2 sends.
  a = np.zeros((3, 3), np.float32)
  a[0, 2] = 1.0
  read, q = communication.readers(a, 2, config)
  np.testing.assert_array_equal(communication.bytes_sent_per_step(read, q, [10] * 3, [0] * 3),
                                [0, 0, 10])


@pytest.mark.parametrize('include_self, want', [(False, [17 / 9, 143 / 144, 15 / 16]),
                                                (True, [11 / 6, 9 / 10, 9 / 10])])
def test_random_readers_by_hand_on_a_weighted_sparse_graph(include_self, want):
  """Client i's two heads each draw one source with probability A[i, j] / sum_j A[i, j]
  (head 1 also itself under include_self); j's head 0 is read unless both draws miss it:
  R[0, j] = sum_i 1 - (1 - d0[i, j]) (1 - d1[i, j]). E.g. j = 1, no self: 1 - (3/4)^2 from
  client 0 and 1 - (2/3)^2 from client 2."""
  a = np.array([[0, 1, 3], [1, 0, 0], [2, 1, 0]], np.float32)
  config = ml_collections.ConfigDict(dict(nu_main=1.0, nu_aux=1.0, nu_emb=0.0, target='random',
                                          include_self=include_self))
  for form in (a, sparse.csr_array(a)):
    read, q = communication.readers(form, 2, config)
    np.testing.assert_allclose(read, [want, [0, 0, 0]], rtol=1e-12)
    assert not q.any()


def test_fedavg_moves_two_copies_of_the_parameters():
  _, params = _mlp()
  num_params = 16 * 5 + 5 + 2 * (5 * 3 + 3)  # backbone Dense + two heads
  assert communication.param_bytes(params) == 4 * num_params
  assert communication.fedavg_bytes_per_round(params) == 8 * num_params


def _encoded_nbytes(spec, b, c):
  """Bytes of the arrays `compression.encode` makes for one head's [B, C] block."""
  probs = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(0), (1, b, c)))
  return sum(a.nbytes for a in compression.encode(probs, spec) if a is not None)


@pytest.mark.parametrize('wire', [dict(), dict(topk=3, bits=4), dict(topk=1, bits=8),
                                  dict(topk=3, bits=8, heads_sent=1, every=2)])
def test_costs_count_the_encoded_arrays(wire):
  """Complete graph of 3, 3 heads, default rule: each client's heads 0 and 1 go to 2 peers, on
  the steps they are sent; each block is exactly the encoded arrays' bytes."""
  config = default.get_config()
  config.num_clients, config.data.public_batch_size = 3, 7
  config.wire.update(wire)
  spec = compression.WireSpec.from_config(config)
  specs = groups.make_specs(config, 10)
  state = state_lib.init_state(specs, (8, 8, 1), jax.random.PRNGKey(0))
  sent, fedavg = communication.costs(specs, state, topology.complete(3), (8, 8, 1), config)
  block = _encoded_nbytes(spec, 7, 10)
  heads = min(spec.heads_sent or 2, 2)  # source heads 0..H-2 are read
  np.testing.assert_allclose(sent, [2 * heads * block / spec.every] * 3)
  if not wire:  # full precision: the float32 outputs, as before compression existed
    assert block == 7 * 10 * 4
  assert fedavg[0] == communication.fedavg_bytes_per_round(
      jax.tree.map(lambda x: x[0], state.groups[0].params))
