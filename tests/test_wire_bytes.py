"""Bytes on the wire with embeddings: they go with head 0, on the steps it is sent, uncompressed."""

import jax
import numpy as np
import pytest

from configs import default
from mhd_jax.network import topology
from mhd_jax.population import groups
from mhd_jax.population import state as state_lib
from mhd_jax.wire import communication

# 3 clients on the complete graph, 3 heads: each client's heads 0 and 1 (read by the receivers'
# heads 1 and 2) and its embedding go to 2 peers. Public batch B = 7, C = 10, D = 5:
HEAD = 7 * 10 * 4       # a head's float32 block
HEAD_8BIT = 7 * (10 + 2)  # 8-bit codes and a float16 scale per row
EMB = 7 * 5 * 4         # the float32 embedding, never encoded


@pytest.mark.parametrize('wire, per_client', [
    ({}, 2 * (2 * HEAD + EMB)),                                # every step: 1400
    ({'every': 4}, 2 * (2 * HEAD + EMB) / 4),                  # one step in 4: 350
    ({'bits': 8, 'every': 4}, 2 * (2 * HEAD_8BIT + EMB) / 4),  # heads encoded, embedding not
    ({'heads_sent': 1, 'every': 2}, 2 * (HEAD + EMB) / 2),     # head 0 (and the embedding) only
])
def test_embedding_bytes_follow_head_0_on_the_steps_it_is_sent(wire, per_client):
  config = default.get_config()
  config.num_clients, config.data.public_batch_size, config.nu_emb = 3, 7, 1.0
  config.model.width, config.model.depth = 5, 1
  config.wire.update(wire)
  specs = groups.make_specs(config, 10)
  state = state_lib.init_state(specs, (8, 8, 1), jax.random.PRNGKey(0))
  sent, _ = communication.costs(specs, state, topology.complete(3), (8, 8, 1), config)
  np.testing.assert_allclose(sent, [per_client] * 3)
