"""Hop curves, reachability and efficiency figures of finished runs, by hand."""

import dataclasses

import numpy as np

from mhd_jax.network import topology
from mhd_jax.outputs import summary as summary_lib
from mhd_jax.studies import metrics as sm


def _matrix_power_reach(a, k):
  """(A^k)[i, j] > 0: a walk of exactly k edges from j to i."""
  return np.linalg.matrix_power((a > 0).astype(int), k) > 0


def test_hop_distances_chain_ring_and_directed():
  np.testing.assert_array_equal(sm.hop_distances(topology.chain(4)),
                                [[0, 1, 2, 3], [1, 0, 1, 2], [2, 1, 0, 1], [3, 2, 1, 0]])
  ring = sm.hop_distances(topology.ring(6))
  np.testing.assert_array_equal(ring[0], [0, 1, 2, 3, 2, 1])  # wraps around
  # Directed: 1 learns from 0, 2 from 1; nothing flows back to 0.
  a = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]])
  np.testing.assert_array_equal(sm.hop_distances(a), [[0, -1, -1], [1, 0, -1], [2, 1, 0]])


def _per_class(correct_head_NxN, heads=2):
  """N clients owning class i each, 10 test examples per class; head k = correct / (k + 1)."""
  n = len(correct_head_NxN)
  correct = np.stack([np.asarray(correct_head_NxN, float) / (k + 1) for k in range(heads)], 1)
  return summary_lib.PerClass(correct_NxHxC=correct, count_C=np.full(n, 10),
                              primary_NxC=np.eye(n, dtype=bool))


def test_hop_curves_on_a_chain_by_hand():
  pc = _per_class([[10, 5, 2], [4, 10, 6], [0, 8, 10]])
  out = sm.hop_curves(pc, topology.chain(3))
  assert out['d'] == [1, 2] and out['pairs_D'] == [4, 2]
  # d=1: (0,1) (1,0) (1,2) (2,1) -> 50, 40, 60, 80; d=2: (0,2) (2,0) -> 20, 0.
  np.testing.assert_allclose(out['acc_HxD'], [[57.5, 10.0], [28.75, 5.0]])
  # Class 1 with 20 test examples: pairs (0,1) (2,1) -> 25, 40; d=1 mean (25+40+60+40)/4.
  pc = dataclasses.replace(pc, count_C=np.array([10, 20, 10]))
  np.testing.assert_allclose(sm.hop_curves(pc, topology.chain(3))['acc_HxD'][0], [41.25, 10.0])


def test_hop_curves_on_a_ring_wrap_around():
  # 5 clients on a ring: client i's accuracy on class j is 10 * j (examples correct
  # out of 10 -> j * 10%), plus its own class at 100%.
  correct = np.tile(np.arange(5.0), (5, 1))
  np.fill_diagonal(correct, 10.0)
  out = sm.hop_curves(_per_class(correct, heads=1), topology.ring(5))
  assert out['d'] == [1, 2] and out['pairs_D'] == [10, 10]
  # d=1 pairs: (i, i+-1 mod 5): every j appears twice -> mean of j = 2 -> 20%.
  # The wrap matters: on a chain (0, 4) would be 4 hops apart.
  np.testing.assert_allclose(out['acc_HxD'], [[20.0, 20.0]])
  d1 = [correct[i, j] * 10 for i in range(5) for j in range(5) if (i - j) % 5 in (1, 4)]
  assert np.isclose(np.mean(d1), 20.0)
  chain = sm.hop_curves(_per_class(correct, heads=1), topology.chain(5))
  assert chain['pairs_D'] == [8, 6, 4, 2]
  np.testing.assert_allclose(chain['acc_HxD'][0, 3], 20.0)  # (0, 4) -> 40, (4, 0) -> 0


def test_reachability_chain_without_main_distillation_is_exact_k_walks():
  a = topology.chain(6).toarray()
  r = sm.reachability(a, num_heads=4, nu_main=0.0, include_self=False)
  np.testing.assert_array_equal(r[0], np.eye(6, dtype=bool))
  for k in range(1, 4):
    np.testing.assert_array_equal(r[k], _matrix_power_reach(a, k))
    # Parity: a chain is bipartite, so head k never reaches distance k - 1 or k + 1.
    dist = np.abs(np.subtract.outer(np.arange(6), np.arange(6)))
    np.testing.assert_array_equal(r[k], (dist <= k) & (dist % 2 == k % 2))


def test_reachability_include_self_is_walks_of_length_at_most_k():
  a = topology.chain(6)
  r = sm.reachability(a, num_heads=4, nu_main=0.0, include_self=True)
  dist = np.abs(np.subtract.outer(np.arange(6), np.arange(6)))
  for k in range(4):
    np.testing.assert_array_equal(r[k], dist <= k)
  # With head-0 distillation every head of a connected graph hears everyone.
  full = sm.reachability(topology.ring(5), num_heads=3, nu_main=0.1, include_self=False)
  assert full.all()
  # Without auxiliary distillation heads k >= 1 hear nobody.
  assert not sm.reachability(a, 3, nu_main=1.0, include_self=True, nu_aux=0.0)[1:].any()


def test_reachability_follows_edge_direction():
  a = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]])  # 0 -> 1 -> 2
  r = sm.reachability(a, num_heads=3, nu_main=0.0, include_self=False)
  assert r[2][2, 0] and not r[2][0, 2] and r[2].sum() == 1


def _records(steps, accs):
  """metrics.jsonl eval records of one client and one head (plus a train record)."""
  recs = [{'step': 1, 'loss': 1.0}]
  for s, a in zip(steps, accs):
    recs.append({'step': s, 'eval': {'private_acc': [[a / 100]], 'shared_acc': [[a / 100]]}})
  return recs


def test_efficiency_figures_by_hand():
  steps, acc = sm.accuracy_curve(_records([10, 20, 30, 40], [40.0, 80.0, 90.0, 100.0]))
  np.testing.assert_array_equal(steps, [10, 20, 30, 40])
  out = sm.efficiency(steps, acc, bound_final=95.0)
  assert out['final'] == 100.0
  assert out['steps_90_own'] == 30 and out['steps_95_own'] == 40
  # 90% of the bound = 85.5 -> step 30; 95% = 90.25 -> step 40.
  assert out['steps_90_bound'] == 30 and out['steps_95_bound'] == 40
  # Trapezoid: (60 + 85 + 95) * 10 / 30 = 80.
  np.testing.assert_allclose(out['auc'], 80.0)
  never = sm.efficiency([10, 20], [10.0, 20.0], bound_final=100.0)
  assert never['steps_90_bound'] is None and never['steps_90_own'] == 20


def test_accuracy_curve_averages_clients_of_the_chosen_head():
  recs = [{'step': 5, 'eval': {'private_acc': [[0, 0], [0, 0]],
                               'shared_acc': [[0.2, 0.6], [0.4, 0.8]]}}]
  np.testing.assert_allclose(sm.accuracy_curve(recs)[1], [70.0])
  np.testing.assert_allclose(sm.accuracy_curve(recs, head=0)[1], [30.0])


def test_exceeds_noise_two_standard_errors():
  assert sm.exceeds_noise([10, 11, 12], [1, 2, 3])
  assert not sm.exceeds_noise([10, 11, 12], [9, 10, 14])
  # Difference 1.5, standard error sqrt(1/3 + 1/3) = 0.82: beyond one, within two.
  assert not sm.exceeds_noise([10, 11, 12], [8.5, 9.5, 10.5])
  assert sm.exceeds_noise([10, 11, 12], [8.3, 9.3, 10.3])
  assert not sm.exceeds_noise([10], [0])  # one seed: no noise estimate, never claimed
