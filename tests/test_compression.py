"""Tests for mhd_jax/wire/compression.py: identity at full precision, a reference codec, byte counts."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mhd_jax.algorithm import losses
from mhd_jax.wire import communication
from mhd_jax.wire import compression as comp


def _probs(shape, seed=0, temperature=1.0):
  """Softmax rows with distinct values (no ties for top-k)."""
  z = np.random.default_rng(seed).normal(size=shape).astype(np.float32) * 3
  return np.asarray(jax.nn.softmax(jnp.asarray(z) / temperature, axis=-1))


# ------------------------------------------------ an independent codec, row by row in numpy


def _ref_encode_row(p_C, topk, bits):
  """(values as sent, class ids or None, scale or None) for one row, written out."""
  c = len(p_C)
  k = c if topk in (0, c) else topk
  if k < c:
    order = sorted(range(c), key=lambda j: -p_C[j])[:k]
    vals, ids = np.array([p_C[j] for j in order], np.float32), order
  else:
    vals, ids = np.asarray(p_C, np.float32), None
  if bits == 32:
    return vals, ids, None
  levels = 2**bits - 1
  scale = np.float16(vals.max())
  q = [min(max(int(np.round(np.float32(v) / np.float32(scale) * np.float32(levels))), 0), levels)
       for v in vals]
  return q, ids, scale


def _ref_decode_row(sent, c, bits):
  """The row a peer rebuilds from `_ref_encode_row`'s output."""
  vals, ids, scale = sent
  if bits < 32:
    vals = [qv * float(scale) / (2**bits - 1) for qv in vals]
  vals = [float(v) for v in vals]
  if ids is None:
    row = vals
  else:
    rest = max(1.0 - sum(vals), 0.0) / (c - len(ids))
    row = [rest] * c
    for j, v in zip(ids, vals):
      row[j] = v
  if bits < 32:
    total = sum(row)
    row = [v / total for v in row]
  return np.array(row)


@pytest.mark.parametrize('topk,bits', [(0, 32), (3, 32), (1, 8), (3, 8), (0, 8), (3, 4), (0, 4),
                                       (5, 4)])
def test_decode_matches_reference_codec(topk, bits):
  spec = comp.WireSpec(topk=topk, bits=bits)
  p = _probs((2, 3, 5, 10), seed=topk + bits, temperature=2.0)
  enc = comp.encode(jnp.asarray(p), spec)
  got = np.asarray(comp.decode(enc, spec, 10))
  for j in range(2):
    for h in range(3):
      for b in range(5):
        sent = _ref_encode_row(p[j, h, b], topk, bits)
        np.testing.assert_allclose(got[j, h, b], _ref_decode_row(sent, 10, bits), rtol=1e-5,
                                   atol=1e-7, err_msg=f'row {(j, h, b)}')
        # What is on the wire is what the reference would send, code for code.
        if sent[1] is not None:
          np.testing.assert_array_equal(np.asarray(enc.indices[j, h, b]), sent[1])
        if bits < 32:
          k = len(sent[0])
          codes = np.asarray(comp._unpack4(enc.values, k) if bits == 4 else enc.values)
          np.testing.assert_array_equal(codes[j, h, b], sent[0])
          assert np.asarray(enc.scales[j, h, b]) == sent[2]
  # Quantised rows are distributions; and the top-k survive as the largest classes.
  np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)


def test_full_precision_is_the_identity_bit_for_bit():
  p = _probs((4, 3, 8, 10))
  for step in (0, 1, 7):
    got = jax.jit(comp.transmit, static_argnums=1)(jnp.asarray(p), comp.WireSpec(topk=10), step)
    np.testing.assert_array_equal(np.asarray(got), p)
    got = comp.transmit(jnp.asarray(p), comp.WireSpec(), step)
    np.testing.assert_array_equal(np.asarray(got), p)


def test_quantisation_error_within_half_a_step():
  """8 bits on a per-row scale: before renormalising, every class is within s / 510."""
  p = _probs((3, 2, 16, 10))
  spec = comp.WireSpec(bits=8)
  enc = comp.encode(jnp.asarray(p), spec)
  raw = np.asarray(enc.values, np.float64) * np.asarray(enc.scales, np.float64)[..., None] / 255
  s = p.max(-1, keepdims=True)  # the row's scale, before float16 rounds it (relative 2^-11)
  assert (np.abs(raw - p) <= s / 510 * (1 + 2**-10) + s * 2**-11).all()
  assert np.abs(raw - p).max() > 0  # it does quantise


def test_topk_keeps_the_largest_and_spreads_the_rest():
  p = np.array([[[[0.5, 0.3, 0.1, 0.06, 0.04]]]], np.float32)
  got = np.asarray(comp.transmit(jnp.asarray(p), comp.WireSpec(topk=2), 0))[0, 0, 0]
  np.testing.assert_allclose(got, [0.5, 0.3, 0.2 / 3, 0.2 / 3, 0.2 / 3], rtol=1e-6)


@pytest.mark.parametrize('c,topk,bits,heads', [(10, 0, 32, 2), (10, 3, 32, 1), (10, 3, 8, 2),
                                               (10, 0, 8, 3), (10, 3, 4, 2), (10, 0, 4, 1),
                                               (300, 7, 8, 2), (300, 0, 4, 1), (300, 5, 32, 1)])
def test_encoded_bytes_match_the_arrays(c, topk, bits, heads):
  spec = comp.WireSpec(topk=topk, bits=bits)
  b = 6
  enc = comp.encode(jnp.asarray(_probs((1, heads, b, c))), spec)  # one client's message
  real = sum(np.asarray(a).nbytes for a in enc if a is not None)
  assert comp.encoded_bytes(spec, b, c, heads) == real
  if topk:
    assert enc.indices.dtype == (np.uint8 if c <= 256 else np.uint16)


def test_heads_sent_and_every():
  p = _probs((3, 4, 2, 10))
  spec = comp.WireSpec(heads_sent=2, every=3)
  np.testing.assert_array_equal(comp.heads_sent_mask(spec, 4), [True, True, False, False])
  got = np.asarray(jax.jit(comp.transmit, static_argnums=1)(jnp.asarray(p), spec, 3))
  np.testing.assert_array_equal(got[:, :2], p[:, :2])
  assert not got[:, 2:].any()
  assert not np.asarray(comp.transmit(jnp.asarray(p), spec, 4)).any()
  np.testing.assert_allclose(comp.sent_fraction(spec, 4), [1 / 3, 1 / 3, 0, 0])


def test_bytes_per_step_with_heads_and_every():
  """3 clients on a complete graph, 3 heads (sources 0 and 1 read), head 1 not sent, every 2nd
  step, top-3 at 8 bits of C = 10 on B = 4: each client sends head 0 to 2 peers half the time."""
  config = ml_collections.ConfigDict({'nu_main': 1.0, 'nu_aux': 1.0, 'nu_emb': 0.0,
                                      'target': 'most_confident', 'include_self': False})
  read, emb = communication.readers(np.ones((3, 3)) - np.eye(3), 3, config)
  spec = comp.WireSpec(topk=3, bits=8, heads_sent=1, every=2)
  head = comp.encoded_bytes(spec, 4, 10, 1)
  assert head == 4 * (3 + 3 + 2)  # codes, uint8 ids, float16 scale per row
  sent = communication.bytes_sent_per_step(*comp.wire_reads(read, emb, spec), [head] * 3,
                                           [0] * 3)
  np.testing.assert_allclose(sent, [2 * head / 2] * 3)


def test_neighbour_weights_drop_unreceived_sources_but_keep_the_own_head():
  a = np.ones((3, 3)) - np.eye(3)
  w = losses.candidate_weights(jnp.asarray(a), 4, include_self=True)  # [N, H, N]
  spec = comp.WireSpec(heads_sent=2, every=2)
  eye = jnp.eye(3, dtype=bool)
  got = np.asarray(comp.neighbour_weights(w, eye, spec, 2))
  # Receiver heads 0, 1, 2 read source heads 0, 0, 1 (sent); head 3 reads source head 2 (not).
  np.testing.assert_array_equal(got[:, :3], np.asarray(w[:, :3]))
  np.testing.assert_array_equal(got[:, 3], np.eye(3))
  off = np.asarray(comp.neighbour_weights(w, eye, spec, 1))  # a step that sends nothing
  np.testing.assert_array_equal(off, np.asarray(w) * np.eye(3)[:, None])


def _wire_config(**wire):
  c = ml_collections.ConfigDict({'num_heads': 3, 'wire': {
      'topk': 0, 'bits': 32, 'heads_sent': 0, 'every': 1}})
  c.wire.update(wire)
  return c


def test_config_problems_one_line():
  (line,) = comp.config_problems(_wire_config(heads_sent=4))
  assert 'heads_sent=4' in line and 'num_heads=3' in line
  assert comp.config_problems(_wire_config(topk=10, bits=4, heads_sent=3)) == []


def test_topk_against_the_classes():
  (line,) = comp.topk_problems(_wire_config(topk=11), 10)
  assert 'wire.topk=11' in line and '[1, 10]' in line
  assert comp.topk_problems(_wire_config(topk=10), 10) == []
  assert comp.topk_problems(_wire_config(topk=0), 10) == []
