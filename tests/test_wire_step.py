"""Compression inside the step: peers mix what they decode, a client its own outputs as they are."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mhd_jax.algorithm import distill
from mhd_jax.algorithm import losses
from mhd_jax.wire import compression
from tests.test_step import ADJ, IMAGE, distill_config, make_batch, make_specs, run_steps


def _wire(config, **kw):
  config = config.copy_and_resolve_references()
  config.wire = dict(dict(topk=0, bits=32, heads_sent=0, every=1), **kw)
  return config


@pytest.mark.parametrize('target', ['confidence_weighted', 'random'])
def test_full_precision_wire_is_bit_identical_to_no_wire(target):
  """All classes, 32 bits, all heads, every step: the same bits as a step that encodes nothing."""
  config = distill_config(target, include_self=True)
  specs, batches = make_specs(), [make_batch(s) for s in range(2)]
  plain, m0 = run_steps(specs, ADJ, config, batches)
  wired, m1 = run_steps(specs, ADJ, _wire(config), batches)
  assert compression.config_spec(config) is None
  assert compression.config_spec(_wire(config)) is not None
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               (plain, m0), (wired, m1))


def _reference(logits_SxHxBxC, net, config, rng, step):
  """Per receiver i: the candidates' decoded outputs with row i replaced by i's own."""
  spec, t = compression.WireSpec.from_config(config), config.temperature
  s, h = logits_SxHxBxC.shape[:2]
  own = losses.source_probs(logits_SxHxBxC, t)
  src = np.maximum(np.arange(h) - 1, 0)
  got = compression.transmit(jax.nn.softmax(logits_SxHxBxC / t, -1), spec, step)[:, src]
  w = compression.neighbour_weights(
      losses.candidate_weights(net.adjacency_SxS, h, config.include_self),
      jnp.eye(s, dtype=bool), spec, step)
  ms, ts = [], []
  for i in range(s):
    probs = got.at[i].set(own[i])
    m = losses.mixing_weights(probs, w, config.target, rng, net.ids_S)
    ms.append(m[i])
    ts.append(losses.mix_targets(m, probs)[i])
  return jnp.stack(ms), jnp.stack(ts)


@pytest.mark.parametrize('target', ['confidence_weighted', 'most_confident', 'neighbour_and_self'])
@pytest.mark.parametrize('wire,step', [(dict(topk=1, bits=4), 1), (dict(topk=2, bits=8), 3),
                                       (dict(heads_sent=1, every=2), 2),
                                       (dict(heads_sent=1, every=2), 3)])
def test_neighbours_are_mixed_as_decoded_and_the_own_head_as_is(target, wire, step):
  config = _wire(distill_config(target, include_self=True), **wire)
  logits = jax.random.normal(jax.random.PRNGKey(0), (3, 3, 6, 5)) * 3
  net = distill.Network.static(ADJ)
  rng = jax.random.PRNGKey(1)
  m, received, own = distill.mixing(logits, net, config, rng, step)
  got = distill.targets(m, received, own)
  m_ref, t_ref = _reference(logits, net, config, rng, step)
  np.testing.assert_allclose(m, m_ref, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(got, t_ref, rtol=1e-6, atol=1e-7)
  # Compression changed what the neighbours send: the test is not vacuous.
  assert not np.allclose(received, own, atol=1e-4)
