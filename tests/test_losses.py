"""Tests for mhd_jax/algorithm/losses.py: loss values by hand, gradients, target rules."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mhd_jax.algorithm import losses


def _lse(row):
  """log sum_c exp(row_c), written out."""
  return math.log(sum(math.exp(v) for v in row))


# ---------------------------------------------------------------- loss values


def test_cross_entropy_hand_computed():
  logits = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
  labels = [2, 0]
  expected = ((_lse(logits[0]) - 3.0) + (_lse(logits[1]) - 0.0)) / 2  # = (0.4076 + log 3) / 2
  got = losses.cross_entropy(jnp.array(logits), jnp.array(labels))
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # Picking the label matters: a different label gives a different loss.
  other = losses.cross_entropy(jnp.array(logits), jnp.array([0, 0]))
  np.testing.assert_allclose(other, ((_lse(logits[0]) - 1.0) + math.log(3)) / 2, rtol=1e-6)


def _kd_by_hand(t, s, temp):
  total = 0.0
  for t_row, s_row in zip(t, s):
    scaled = [v / temp for v in s_row]
    lse = _lse(scaled)
    total += sum(tc * (math.log(tc) - (sc - lse)) for tc, sc in zip(t_row, scaled) if tc > 0)
  return temp**2 * total / len(t)


@pytest.mark.parametrize('temp', [1.0, 2.0, 0.5])
def test_kd_hand_computed_with_temperature(temp):
  # A zero target entry (0 log 0 = 0) in row 0.
  t = [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]
  s = [[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]
  got = losses.kd(jnp.array(t), jnp.array(s), temp)
  np.testing.assert_allclose(got, _kd_by_hand(t, s, temp), rtol=1e-5)
  assert np.isfinite(got)


def test_kd_temperature_squared_scaling():
  # At T = 2 the KL is taken against softmax(s / 2) and multiplied by 4.
  s = jnp.array([[2.0, 0.0, -2.0]])
  t = jnp.array([[0.2, 0.3, 0.5]])
  p = [math.exp(v / 2 - _lse([1.0, 0.0, -1.0])) for v in (2.0, 0.0, -2.0)]
  kl = sum(tc * math.log(tc / pc) for tc, pc in zip([0.2, 0.3, 0.5], p))
  np.testing.assert_allclose(losses.kd(t, s, 2.0), 4.0 * kl, rtol=1e-5)


def test_kd_is_zero_iff_target_matches_student():
  s = jnp.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])
  temp = 2.0
  matched = jax.nn.softmax(s / temp)
  np.testing.assert_allclose(losses.kd(matched, s, temp), 0.0, atol=1e-6)
  # softmax(s) (wrong temperature) is a different distribution: KD > 0.
  assert losses.kd(jax.nn.softmax(s), s, temp) > 1e-3


def test_kd_gradient_flows_into_student_not_target():
  t = jnp.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
  s = jnp.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])
  temp = 2.0
  g_t = jax.grad(losses.kd, argnums=0)(t, s, temp)
  np.testing.assert_array_equal(g_t, np.zeros_like(t))
  # d/ds [T^2 * mean_b KL] = T * (softmax(s / T) - t) / B.
  g_s = jax.grad(losses.kd, argnums=1)(t, s, temp)
  expected = temp * (jax.nn.softmax(s / temp) - t) / 2
  np.testing.assert_allclose(g_s, expected, rtol=1e-5, atol=1e-7)
  assert np.abs(g_s).max() > 0.1


def test_embedding_mse_hand_computed_and_stops_target_gradient():
  e = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  t = jnp.array([[0.0, 0.0], [1.0, 1.0]])
  # ((1 + 4) + (4 + 9)) / 2 = 9: summed over D, averaged over B.
  np.testing.assert_allclose(losses.embedding_mse(e, t), 9.0, rtol=1e-6)
  np.testing.assert_array_equal(jax.grad(losses.embedding_mse, argnums=1)(e, t), np.zeros((2, 2)))
  np.testing.assert_allclose(jax.grad(losses.embedding_mse)(e, t), (e - t), rtol=1e-6)  # 2(e-t)/B


# ---------------------------------------------------------- candidate weights


def test_candidate_weights_include_self_only_for_aux_heads():
  a = jnp.array([[0.0, 1.0], [3.0, 0.0]])
  w = losses.candidate_weights(a, num_heads=3, include_self=True)
  assert w.shape == (2, 3, 2)  # [N, H, N]
  np.testing.assert_array_equal(w[:, 0], a)  # head 0: neighbours only
  np.testing.assert_array_equal(w[:, 1], [[1.0, 1.0], [3.0, 1.0]])
  np.testing.assert_array_equal(w[:, 2], [[1.0, 1.0], [3.0, 1.0]])
  w_off = losses.candidate_weights(a, num_heads=3, include_self=False)
  for k in range(3):
    np.testing.assert_array_equal(w_off[:, k], a)


def test_source_probs_head0_from_head0_head_k_from_head_k_minus_1():
  # One client, 3 heads, 1 example, 2 classes; each head's logits differ.
  z = jnp.array([[[[0.0, 0.0]], [[1.0, 0.0]], [[3.0, 0.0]]]])  # [1, 3, 1, 2]
  temp = 2.0
  p = losses.source_probs(z, temp)
  assert p.shape == (1, 3, 1, 2)
  sig = lambda x: 1.0 / (1.0 + math.exp(-x))
  np.testing.assert_allclose(p[0, 0, 0], [0.5, 0.5], rtol=1e-6)          # head 0 <- head 0
  np.testing.assert_allclose(p[0, 1, 0], [0.5, 0.5], rtol=1e-6)          # head 1 <- head 0
  np.testing.assert_allclose(p[0, 2, 0], [sig(0.5), 1 - sig(0.5)], rtol=1e-6)  # head 2 <- head 1 / T


# ------------------------------------------------------------ mixing weights

# Four clients. Client 0 receives from 1 (weight 1) and 2 (weight 3); client 1
# from 0; client 2 from nobody; client 3 from 1 and 2. Client 3 (never a source
# of client 0) and client 0 itself are the most confident of all.
_A = np.array([[0, 1, 3, 0],
               [1, 0, 0, 0],
               [0, 0, 0, 0],
               [0, 1, 1, 0]], np.float32)


def _probs_one_head():
  """[N=4, H=1, B=2, C=2] distributions; max-probabilities in comments."""
  p = np.array([
      [[0.95, 0.05], [0.05, 0.95]],  # client 0: 0.95, 0.95
      [[0.70, 0.30], [0.45, 0.55]],  # client 1: 0.70, 0.55
      [[0.40, 0.60], [0.20, 0.80]],  # client 2: 0.60, 0.80
      [[0.99, 0.01], [0.01, 0.99]],  # client 3: 0.99, 0.99
  ], np.float32)
  return jnp.asarray(p[:, None])


def _one_hot(j, n=4):
  return np.eye(n, dtype=np.float32)[j]


def test_most_confident_picks_per_example_among_neighbours_only():
  w = losses.candidate_weights(jnp.asarray(_A), 1, include_self=False)
  m = np.asarray(losses.mixing_weights(_probs_one_head(), w, 'most_confident', None))
  assert m.shape == (4, 1, 2, 4)
  # Client 0: example 0 -> client 1 (0.70 > 0.60), example 1 -> client 2
  # (0.80 > 0.55), although client 2 has the larger edge weight only in the
  # second case and client 3 (0.99) is more confident on both.
  np.testing.assert_array_equal(m[0, 0, 0], _one_hot(1))
  np.testing.assert_array_equal(m[0, 0, 1], _one_hot(2))
  # Client 1's only neighbour is 0.
  np.testing.assert_array_equal(m[1, 0], [_one_hot(0), _one_hot(0)])
  # Client 2 has no in-neighbour: all-zero weights, not a one-hot on client 0.
  np.testing.assert_array_equal(m[2], np.zeros((1, 2, 4)))
  np.testing.assert_array_equal(m[3, 0], [_one_hot(1), _one_hot(2)])


def test_most_confident_uses_each_heads_own_sources():
  # Two heads; on head 1 the confidence order of clients 1 and 2 is reversed.
  p0 = np.asarray(_probs_one_head())[:, 0]
  p1 = p0.copy()
  p1[1], p1[2] = p0[2], p0[1]
  probs = jnp.asarray(np.stack([p0, p1], axis=1))  # [4, 2, 2, 2]
  w = losses.candidate_weights(jnp.asarray(_A), 2, include_self=False)
  m = np.asarray(losses.mixing_weights(probs, w, 'most_confident', None))
  np.testing.assert_array_equal(m[0, 0], [_one_hot(1), _one_hot(2)])
  np.testing.assert_array_equal(m[0, 1], [_one_hot(2), _one_hot(1)])


def test_mean_is_adjacency_weighted_average():
  w = losses.candidate_weights(jnp.asarray(_A), 2, include_self=False)
  probs = jnp.broadcast_to(_probs_one_head(), (4, 2, 2, 2))
  m = np.asarray(losses.mixing_weights(probs, w, 'mean', None))
  assert m.shape == (4, 2, 2, 4)
  for k in range(2):
    for b in range(2):
      np.testing.assert_allclose(m[0, k, b], [0.0, 0.25, 0.75, 0.0], rtol=1e-6)
      np.testing.assert_allclose(m[1, k, b], [1.0, 0.0, 0.0, 0.0], rtol=1e-6)
      np.testing.assert_array_equal(m[2, k, b], np.zeros(4))
      np.testing.assert_allclose(m[3, k, b], [0.0, 0.5, 0.5, 0.0], rtol=1e-6)


def test_random_draws_neighbours_with_frequency_proportional_to_weight():
  w = losses.candidate_weights(jnp.asarray(_A), 1, include_self=False)
  probs = _probs_one_head()
  num_draws = 4000
  keys = jax.random.split(jax.random.key(0), num_draws)
  draw = jax.jit(jax.vmap(lambda k: losses.mixing_weights(probs, w, 'random', k)))
  m = np.asarray(draw(keys))  # [draws, N, H, B, N]
  # One draw per (client, head) per step: every example gets the same source.
  np.testing.assert_array_equal(m[:, :, :, 0], m[:, :, :, 1])
  # Client 0: 1 w.p. 1/4, 2 w.p. 3/4, never itself or the non-neighbour 3.
  freq0 = m[:, 0, 0, 0].mean(axis=0)
  assert freq0[0] == 0.0 and freq0[3] == 0.0
  np.testing.assert_allclose(freq0[1:3], [0.25, 0.75], atol=0.03)
  np.testing.assert_array_equal(m[:, 0, 0, 0].sum(-1), np.ones(num_draws))
  freq3 = m[:, 3, 0, 0].mean(axis=0)
  np.testing.assert_allclose(freq3, [0.0, 0.5, 0.5, 0.0], atol=0.04)
  assert freq3[0] == 0.0 and freq3[3] == 0.0
  np.testing.assert_array_equal(m[:, 1, 0, 0], np.broadcast_to(_one_hot(0), (num_draws, 4)))
  np.testing.assert_array_equal(m[:, 2], np.zeros_like(m[:, 2]))
  # Different keys give different draws (not one fixed choice).
  assert 0 < m[:, 0, 0, 0, 1].sum() < num_draws


def test_include_self_lets_aux_heads_pick_own_previous_head():
  # Client 0 receives from 1; client 1 from nobody. Client 0 is the more
  # confident source everywhere, so with include_self head 1 picks client 0
  # itself while head 0 still picks neighbour 1.
  a = jnp.array([[0.0, 1.0], [0.0, 0.0]])
  p = jnp.array([[[0.9, 0.1]], [[0.6, 0.4]]])[:, None]  # [2, 1, 1, 2]
  probs = jnp.broadcast_to(p, (2, 2, 1, 2))
  w = losses.candidate_weights(a, 2, include_self=True)
  m = np.asarray(losses.mixing_weights(probs, w, 'most_confident', None))
  np.testing.assert_array_equal(m[0, 0, 0], [0.0, 1.0])
  np.testing.assert_array_equal(m[0, 1, 0], [1.0, 0.0])
  # Client 1 has no neighbour: nothing for head 0, itself for head 1.
  np.testing.assert_array_equal(m[1, 0, 0], [0.0, 0.0])
  np.testing.assert_array_equal(m[1, 1, 0], [0.0, 1.0])
  m_mean = np.asarray(losses.mixing_weights(probs, w, 'mean', None))
  np.testing.assert_allclose(m_mean[0, 0, 0], [0.0, 1.0])
  np.testing.assert_allclose(m_mean[0, 1, 0], [0.5, 0.5])
  # Without include_self head 1 of client 0 can only pick its neighbour.
  w_off = losses.candidate_weights(a, 2, include_self=False)
  m_off = np.asarray(losses.mixing_weights(probs, w_off, 'most_confident', None))
  np.testing.assert_array_equal(m_off[0, 1, 0], [0.0, 1.0])
  np.testing.assert_array_equal(m_off[1], np.zeros((2, 1, 2)))


def test_all_zero_adjacency_gives_all_zero_mixing_for_every_rule():
  w = losses.candidate_weights(jnp.zeros((4, 4)), 2, include_self=False)
  probs = jnp.broadcast_to(_probs_one_head(), (4, 2, 2, 2))
  for rule in losses.TARGET_RULES:
    m = losses.mixing_weights(probs, w, rule, jax.random.key(1))
    np.testing.assert_array_equal(m, np.zeros((4, 2, 2, 4)), err_msg=rule)


def test_unknown_target_rule_raises():
  w = losses.candidate_weights(jnp.asarray(_A), 1, include_self=False)
  with pytest.raises(ValueError, match="unknown target rule 'loudest'.*most_confident"):
    losses.mixing_weights(_probs_one_head(), w, 'loudest', None)


# ------------------------------------------------------------------- mixing


def test_mix_targets_hand_computed():
  # N=2, H=1, B=2, C=3.
  p = jnp.array([[[[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]],
                 [[[0.0, 1.0, 0.0], [0.6, 0.2, 0.2]]]])
  m = jnp.array([[[[0.25, 0.75], [1.0, 0.0]]],   # client 0: mix on ex 0, copy 0 on ex 1
                 [[[0.0, 0.0], [0.0, 1.0]]]])     # client 1: nothing on ex 0, copy 1 on ex 1
  t = np.asarray(losses.mix_targets(m, p))
  assert t.shape == (2, 1, 2, 3)
  np.testing.assert_allclose(t[0, 0, 0], [0.25, 0.75, 0.0], rtol=1e-6)
  np.testing.assert_allclose(t[0, 0, 1], [0.2, 0.3, 0.5], rtol=1e-6)
  np.testing.assert_allclose(t[1, 0, 0], [0.0, 0.0, 0.0])
  np.testing.assert_allclose(t[1, 0, 1], [0.6, 0.2, 0.2], rtol=1e-6)


def test_mix_targets_keeps_heads_apart():
  # Head k's target mixes only head k's source distributions.
  p = jnp.array([[[[1.0, 0.0]], [[0.0, 1.0]]],
                 [[[0.5, 0.5]], [[0.3, 0.7]]]])  # [N=2, H=2, B=1, C=2]
  m = jnp.array([[[[0.0, 1.0]], [[0.0, 1.0]]],
                 [[[1.0, 0.0]], [[1.0, 0.0]]]])  # [N=2, H=2, B=1, N=2]
  t = np.asarray(losses.mix_targets(m, p))
  np.testing.assert_allclose(t[0, :, 0], [[0.5, 0.5], [0.3, 0.7]], rtol=1e-6)
  np.testing.assert_allclose(t[1, :, 0], [[1.0, 0.0], [0.0, 1.0]], rtol=1e-6)


def test_mix_embeddings_hand_computed():
  emb = jnp.array([[[1.0, 2.0], [3.0, 4.0]],
                   [[10.0, 20.0], [30.0, 40.0]]])  # [N=2, B=2, D=2]
  m = jnp.array([[[0.0, 1.0], [0.5, 0.5]],
                 [[1.0, 0.0], [0.0, 0.0]]])        # [N=2, B=2, N=2]
  t = np.asarray(losses.mix_embeddings(m, emb))
  np.testing.assert_allclose(t, [[[10.0, 20.0], [16.5, 22.0]],
                                 [[1.0, 2.0], [0.0, 0.0]]], rtol=1e-6)


def test_most_confident_target_equals_the_chosen_neighbours_distribution():
  w = losses.candidate_weights(jnp.asarray(_A), 1, include_self=False)
  probs = _probs_one_head()
  t = np.asarray(losses.mix_targets(
      losses.mixing_weights(probs, w, 'most_confident', None), probs))
  np.testing.assert_allclose(t[0, 0], [[0.70, 0.30], [0.20, 0.80]], rtol=1e-6)
  np.testing.assert_allclose(t[2, 0], np.zeros((2, 2)))


# ------------------------------------------------- rules for multi-hop chains
# Client 0 receives from 1 (weight 1) and 2 (weight 3), and, with
# include_self, from its own previous head; client 1 from nobody but itself.
_A3 = np.array([[0, 1, 3], [0, 0, 0], [1, 0, 0]], np.float32)
# [N=3, H=2, B=2, C=2]; both heads alike. Max-probabilities: client 0: 0.9,
# 0.9 (the over-confident own head); client 1: 0.8, 0.6; client 2: 0.6, 0.7.
_P3 = jnp.broadcast_to(jnp.array([[[0.9, 0.1], [0.1, 0.9]],
                                  [[0.8, 0.2], [0.4, 0.6]],
                                  [[0.4, 0.6], [0.3, 0.7]]])[:, None], (3, 2, 2, 2))


def test_confidence_weighted_mixes_candidates_by_weight_times_confidence():
  w = losses.candidate_weights(jnp.asarray(_A3), 2, include_self=True)
  m = np.asarray(losses.mixing_weights(_P3, w, 'confidence_weighted', None))
  assert m.shape == (3, 2, 2, 3)
  # Head 0, client 0: 1 * 0.8 and 3 * 0.6 on example 0; 1 * 0.6 and 3 * 0.7 on example 1.
  np.testing.assert_allclose(m[0, 0, 0], [0.0, 0.8 / 2.6, 1.8 / 2.6], rtol=1e-6)
  np.testing.assert_allclose(m[0, 0, 1], [0.0, 0.6 / 2.7, 2.1 / 2.7], rtol=1e-6)
  # Head 1 adds the own head (weight 1, conf 0.9): it gets a share, not everything.
  np.testing.assert_allclose(m[0, 1, 0], [0.9 / 3.5, 0.8 / 3.5, 1.8 / 3.5], rtol=1e-6)
  # Client 1: no neighbour; nothing for head 0, its own head for head 1.
  np.testing.assert_array_equal(m[1, 0], np.zeros((2, 3)))
  np.testing.assert_allclose(m[1, 1], [[0, 1, 0], [0, 1, 0]], rtol=1e-6)
  # Client 2, head 1: client 0 (1 * 0.9) and its own head (1 * 0.6).
  np.testing.assert_allclose(m[2, 1, 0], [0.9 / 1.5, 0.0, 0.6 / 1.5], rtol=1e-6)


def test_neighbours_first_uses_the_own_head_only_without_a_neighbour():
  w = losses.candidate_weights(jnp.asarray(_A3), 2, include_self=True)
  m = np.asarray(losses.mixing_weights(_P3, w, 'neighbours_first', None))
  e = np.eye(3, dtype=np.float32)
  # Client 0's own head (0.9) is the most confident candidate, yet head 1
  # picks the best neighbour: 1 (0.8 > 0.6) on example 0, 2 (0.7 > 0.6) on 1.
  np.testing.assert_array_equal(m[0, 1], [e[1], e[2]])
  np.testing.assert_array_equal(m[0, 0], [e[1], e[2]])
  # most_confident with the same candidates picks the own head on both examples.
  m_mc = np.asarray(losses.mixing_weights(_P3, w, 'most_confident', None))
  np.testing.assert_array_equal(m_mc[0, 1], [e[0], e[0]])
  # Client 1 has no neighbour: its own head for head 1, nothing for head 0.
  np.testing.assert_array_equal(m[1, 1], [e[1], e[1]])
  np.testing.assert_array_equal(m[1, 0], np.zeros((2, 3)))
  np.testing.assert_array_equal(m[2, 1], [e[0], e[0]])


def test_neighbour_and_self_halves_between_best_neighbour_and_own_head():
  w = losses.candidate_weights(jnp.asarray(_A3), 2, include_self=True)
  m = np.asarray(losses.mixing_weights(_P3, w, 'neighbour_and_self', None))
  np.testing.assert_allclose(m[0, 1], [[0.5, 0.5, 0.0], [0.5, 0.0, 0.5]], rtol=1e-6)
  # Head 0 has no own-head candidate: the best neighbour alone.
  np.testing.assert_allclose(m[0, 0], [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], rtol=1e-6)
  np.testing.assert_allclose(m[1, 1], [[0.0, 1.0, 0.0]] * 2, rtol=1e-6)  # own head only
  np.testing.assert_array_equal(m[1, 0], np.zeros((2, 3)))
  # The target is the half-half mixture of the two distributions.
  t = np.asarray(losses.mix_targets(jnp.asarray(m), _P3))
  np.testing.assert_allclose(t[0, 1, 1], [(0.1 + 0.3) / 2, (0.9 + 0.7) / 2], rtol=1e-6)
  # Without include_self it is most_confident over the neighbours.
  w_off = losses.candidate_weights(jnp.asarray(_A3), 2, include_self=False)
  np.testing.assert_array_equal(
      losses.mixing_weights(_P3, w_off, 'neighbour_and_self', None),
      losses.mixing_weights(_P3, w_off, 'most_confident', None))


# ------------------------------------------------------------ score rules


def score_reference(p_BxC, rule):
  """One sender's score on each example of its batch, written out example by example."""
  out = []
  for p in p_BxC:
    ent = -sum(v * math.log(v) for v in p if v > 0)
    c = int(np.argmax(p))
    out.append({'confidence_weighted': max(p),
                'relative_confidence': max(p) / np.mean([max(q) for q in p_BxC]),
                'certainty_weighted': 1 - ent / math.log(len(p)),
                'exp_entropy_weighted': math.exp(-ent),
                'class_relative': p[c] / np.mean([q[c] for q in p_BxC])}[rule])
  return np.array(out)


def _score_mixing_reference(probs, own, adjacency, rule, power):
  """M[i, k, b, j] per receiver i: W[k, i, j] s_j^power over the candidates, s_j scored on
  what i holds of j (its own outputs for j = i), normalised per example."""
  n, h, b, _ = probs.shape
  m = np.zeros((n, h, b, n))
  for i in range(n):
    for k in range(h):
      w = [adjacency[i, j] + (k > 0 and j == i) for j in range(n)]
      s = np.array([w[j] * score_reference((own if j == i else probs)[j, k], rule) ** power
                    if w[j] > 0 else np.zeros(b) for j in range(n)])  # [N, B]
      m[i, k] = (s / np.where(s.sum(0) > 0, s.sum(0), 1)).T
  return m


@pytest.mark.parametrize('power', [1.0, 3.0])
@pytest.mark.parametrize('rule', sorted(losses.SCORES))
def test_score_rules_match_a_per_client_reference(rule, power):
  rng = np.random.default_rng(1)
  n, h, b, c = 4, 3, 5, 6
  probs, own = (np.asarray(jax.nn.softmax(rng.normal(size=(n, h, b, c)) * 3, -1), np.float64)
                for _ in range(2))
  adjacency = rng.random((n, n)) * (1 - np.eye(n)) * (rng.random((n, n)) < 0.7)
  adjacency[2] = 0  # a client with no neighbour: only its own head, for heads k >= 1
  w = losses.candidate_weights(jnp.asarray(adjacency, jnp.float32), h, include_self=True)
  m = losses.mixing_weights(jnp.asarray(probs, jnp.float32), w, rule, None,
                            own_NxHxBxC=jnp.asarray(own, jnp.float32), power=power)
  np.testing.assert_allclose(m, _score_mixing_reference(probs, own, adjacency, rule, power),
                             rtol=2e-5, atol=1e-6)
  np.testing.assert_array_equal(m[2, 0], np.zeros((b, n)))


def test_class_relative_discounts_a_sender_that_names_one_class_everywhere():
  # Sender 1 says class 0 on both examples; sender 2 says class 0 only on example 0.
  probs = jnp.array([[[0.5, 0.5], [0.5, 0.5]],
                     [[0.8, 0.2], [0.8, 0.2]],
                     [[0.6, 0.4], [0.1, 0.9]]])[:, None]  # [N=3, H=1, B=2, C=2]
  np.testing.assert_allclose(losses.class_relative(probs)[1:, 0],
                             [[1.0, 1.0], [0.6 / 0.35, 0.9 / 0.65]], rtol=1e-6)
  a = jnp.array([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
  w = losses.candidate_weights(a, 1, include_self=False)
  m = losses.mixing_weights(probs, w, 'class_relative', None)
  s = 0.6 / 0.35
  np.testing.assert_allclose(m[0, 0, 0], [0.0, 1 / (1 + s), s / (1 + s)], rtol=1e-6)
  # confidence_weighted favours the sender that is more confident (0.8 > 0.6) on example 0.
  m_cw = losses.mixing_weights(probs, w, 'confidence_weighted', None)
  np.testing.assert_allclose(m_cw[0, 0, 0], [0.0, 0.8 / 1.4, 0.6 / 1.4], rtol=1e-6)
  # A higher power moves the weight towards the larger score.
  m4 = losses.mixing_weights(probs, w, 'class_relative', None, power=4.0)
  np.testing.assert_allclose(m4[0, 0, 0], [0.0, 1 / (1 + s**4), s**4 / (1 + s**4)], rtol=1e-5)


def test_certainty_is_zero_for_uniform_and_one_for_one_hot():
  probs = jnp.array([[0.25] * 4, [1.0, 0.0, 0.0, 0.0]])[None, None]  # [1, 1, B=2, C=4]
  np.testing.assert_allclose(losses.certainty(probs)[0, 0], [0.0, 1.0], atol=1e-6)
  np.testing.assert_allclose(losses.exp_entropy(probs)[0, 0], [0.25, 1.0], rtol=1e-6)
