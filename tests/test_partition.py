"""Tests for mhd_jax/data/partition.py: invariants, skew, Dirichlet, errors, config dispatch."""

import ml_collections
import numpy as np
import pytest

from mhd_jax.data import partition

C = 10


def _labels(num_examples=20_000, num_classes=C, seed=0):
  """Balanced labels in random order: each class exactly num_examples / C times."""
  return np.random.default_rng(seed).permutation(np.arange(num_examples) % num_classes)


def _assert_disjoint_and_complete(p, num_examples):
  parts = [p.public_indices, *p.client_indices]
  everything = np.concatenate(parts)
  # Each index exactly once: no loss, no duplicate.
  assert len(everything) == num_examples
  np.testing.assert_array_equal(np.sort(everything), np.arange(num_examples))
  for part in parts:
    np.testing.assert_array_equal(part, np.sort(part))


def _assert_same(p, q):
  np.testing.assert_array_equal(p.public_indices, q.public_indices)
  assert len(p.client_indices) == len(q.client_indices)
  for a, b in zip(p.client_indices, q.client_indices):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(p.primary_classes, q.primary_classes):
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------- Partition API


def test_label_counts_and_primary_mask_hand_checked():
  labels = np.array([0, 1, 1, 2, 2, 2, 0])
  p = partition.Partition(client_indices=(np.array([0, 1]), np.array([2, 3, 4, 5])),
                          public_indices=np.array([6]),
                          primary_classes=(np.array([0]), np.array([1, 2])),
                          num_classes=3)
  assert p.num_clients == 2
  np.testing.assert_array_equal(p.label_counts(labels), [[1, 1, 0], [0, 1, 3]])
  np.testing.assert_array_equal(p.primary_mask(), [[True, False, False], [False, True, True]])


def test_by_client_is_each_clients_sorted_share_in_one_pass():
  """`by_client` (one sort) against the pass per client it replaced, clients without any."""
  rng = np.random.default_rng(0)
  values, dest = rng.permutation(500), rng.integers(0, 40, 500)
  dest[dest == 7] = 8  # client 7 gets nothing
  got = partition.by_client(values, dest, 41)  # client 40 neither
  assert len(got) == 41
  for i, share in enumerate(got):
    np.testing.assert_array_equal(share, np.sort(values[dest == i]))
  assert len(got[7]) == len(got[40]) == 0


def test_class_blocks():
  blocks = partition.class_blocks(3, 10)
  assert [b.tolist() for b in blocks] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
  # More clients than classes: client i owns class i mod C.
  assert [b.tolist() for b in partition.class_blocks(5, 2)] == [[0], [1], [0], [1], [0]]


# ---------------------------------------------------------------- class skew


@pytest.mark.parametrize('skew', [0.0, 0.5, 1.0])
@pytest.mark.parametrize('public_fraction', [0.0, 0.3])
def test_skew_partition_is_disjoint_and_complete(skew, public_fraction):
  labels = _labels(5_003)
  p = partition.class_skew(labels, C, 4, skew, public_fraction, seed=1)
  _assert_disjoint_and_complete(p, len(labels))
  assert p.num_clients == 4 and p.num_classes == C
  assert len(p.public_indices) == round(public_fraction * len(labels))
  assert all(len(idx) > 0 for idx in p.client_indices)


def test_public_set_is_a_uniform_sample():
  labels = _labels()
  p = partition.class_skew(labels, C, 5, 1.0, 0.3, seed=0)
  public_counts = np.bincount(labels[p.public_indices], minlength=C)
  np.testing.assert_allclose(public_counts / public_counts.sum(), np.full(C, 0.1), atol=0.02)


def test_skew_one_gives_only_primary_classes():
  labels = _labels()
  p = partition.class_skew(labels, C, 5, 1.0, 0.2, seed=0)
  counts = p.label_counts(labels)
  mask = p.primary_mask()
  assert np.all(counts[~mask] == 0)
  # Each class has one owner, so the owner holds every private example of it.
  private = np.setdiff1d(np.arange(len(labels)), p.public_indices)
  np.testing.assert_array_equal(counts.sum(0), np.bincount(labels[private], minlength=C))
  assert np.all(counts[mask] > 0)


def test_skew_zero_is_roughly_iid():
  labels = _labels()
  p = partition.class_skew(labels, C, 5, 0.0, 0.2, seed=0)
  counts = p.label_counts(labels)
  dist = counts / counts.sum(1, keepdims=True)
  np.testing.assert_allclose(dist, np.full((5, C), 0.1), atol=0.025)
  # Clients get about the same number of examples (16000 / 5 each).
  np.testing.assert_allclose(counts.sum(1), 3200, rtol=0.08)


@pytest.mark.parametrize('num_clients', [2, 5])
def test_intermediate_skew_fraction_of_primary_examples(num_clients):
  # Balanced classes and equal blocks: a client's primary fraction is
  # skew + (1 - skew) * |primary| / C (the random part hits its block too).
  labels = _labels(40_000)
  skew = 0.9
  p = partition.class_skew(labels, C, num_clients, skew, 0.2, seed=3)
  counts = p.label_counts(labels)
  frac = (counts * p.primary_mask()).sum(1) / counts.sum(1)
  expected = skew + (1 - skew) * (C // num_clients) / C  # 0.95 for 2 clients, 0.92 for 5
  np.testing.assert_allclose(frac, expected, atol=0.01)


def test_skew_partition_is_deterministic_given_seed():
  labels = _labels(3_000)
  p = partition.class_skew(labels, C, 4, 0.7, 0.25, seed=5)
  _assert_same(p, partition.class_skew(labels, C, 4, 0.7, 0.25, seed=5))
  q = partition.class_skew(labels, C, 4, 0.7, 0.25, seed=6)
  assert not np.array_equal(p.public_indices, q.public_indices)
  assert not np.array_equal(p.client_indices[0], q.client_indices[0])


def test_more_clients_than_classes_shares_owners():
  num_classes, num_clients = 3, 7
  labels = _labels(6_000, num_classes)
  p = partition.class_skew(labels, num_classes, num_clients, 1.0, 0.1, seed=0)
  _assert_disjoint_and_complete(p, len(labels))
  assert [c.tolist() for c in p.primary_classes] == [[i % 3] for i in range(7)]
  counts = p.label_counts(labels)
  # Only own class, and a class is shared about evenly among its owners
  # (class 0: clients 0, 3, 6 get ~1800 each of 5400 private examples).
  assert np.all(counts[~p.primary_mask()] == 0)
  own = counts[np.arange(7), np.arange(7) % 3]
  per_class_total = np.bincount(labels[np.setdiff1d(np.arange(6000), p.public_indices)],
                                minlength=3)
  owners = np.array([3, 2, 2])
  np.testing.assert_allclose(own, (per_class_total / owners)[np.arange(7) % 3], rtol=0.1)


# ------------------------------------------------------------------ Dirichlet


@pytest.mark.parametrize('alpha', [0.1, 1.0, 100.0])
def test_dirichlet_is_disjoint_and_complete(alpha):
  labels = _labels(5_003)
  p = partition.dirichlet(labels, C, 4, alpha, 0.3, seed=2)
  _assert_disjoint_and_complete(p, len(labels))
  assert len(p.public_indices) == round(0.3 * len(labels))


def _mean_top_share(p, labels):
  """Mean over classes of the largest share one client holds of the class."""
  counts = p.label_counts(labels)
  return np.mean(counts.max(0) / counts.sum(0))


def test_dirichlet_small_alpha_is_more_skewed_than_large_alpha():
  labels = _labels()
  small = _mean_top_share(partition.dirichlet(labels, C, 5, 0.05, 0.2, seed=0), labels)
  large = _mean_top_share(partition.dirichlet(labels, C, 5, 100.0, 0.2, seed=0), labels)
  assert small > 0.7   # nearly each class in one client
  assert large < 0.3   # close to the iid 1/5
  assert small > large + 0.3


def test_dirichlet_primary_classes_are_disjoint_covering_and_the_largest_holder():
  labels = _labels()
  p = partition.dirichlet(labels, C, 5, 0.5, 0.2, seed=4)
  owned = np.concatenate(p.primary_classes)
  np.testing.assert_array_equal(np.sort(owned), np.arange(C))  # each class owned once
  counts = p.label_counts(labels)
  for i, classes in enumerate(p.primary_classes):
    for c in classes:
      assert counts[i, c] == counts[:, c].max()
  assert p.primary_mask().sum(0).tolist() == [1] * C


def test_dirichlet_is_deterministic_given_seed():
  labels = _labels(3_000)
  p = partition.dirichlet(labels, C, 4, 0.5, 0.2, seed=5)
  _assert_same(p, partition.dirichlet(labels, C, 4, 0.5, 0.2, seed=5))
  q = partition.dirichlet(labels, C, 4, 0.5, 0.2, seed=6)
  assert not all(np.array_equal(a, b) for a, b in zip(p.client_indices, q.client_indices))


# --------------------------------------------------------------------- errors


@pytest.mark.parametrize('skew', [-0.1, 1.1, float('nan')])
def test_skew_out_of_range_raises(skew):
  with pytest.raises(ValueError, match=r'skew must be in \[0, 1\]'):
    partition.class_skew(_labels(100), C, 2, skew, 0.2, seed=0)


@pytest.mark.parametrize('fraction', [-0.1, 1.0, 1.5])
@pytest.mark.parametrize('fn, arg', [(partition.class_skew, 0.5), (partition.dirichlet, 0.5)])
def test_public_fraction_out_of_range_raises(fn, arg, fraction):
  with pytest.raises(ValueError, match=r'public_fraction must be in \[0, 1\)'):
    fn(_labels(100), C, 2, arg, fraction, 0)


@pytest.mark.parametrize('alpha', [0.0, -1.0])
def test_dirichlet_alpha_must_be_positive(alpha):
  with pytest.raises(ValueError, match='alpha must be > 0'):
    partition.dirichlet(_labels(100), C, 2, alpha, 0.2, seed=0)


@pytest.mark.parametrize('bad', [-1, C])
@pytest.mark.parametrize('fn', [partition.class_skew, partition.dirichlet])
def test_labels_out_of_range_raise(fn, bad):
  labels = _labels(100)
  labels[7] = bad
  with pytest.raises(ValueError, match=rf'labels must lie in \[0, {C}\)'):
    fn(labels, C, 2, 0.5, 0.2, 0)


def test_other_bad_inputs_raise():
  with pytest.raises(ValueError, match='num_clients must be >= 1'):
    partition.class_skew(_labels(100), C, 0, 0.5, 0.2, seed=0)
  with pytest.raises(ValueError, match='non-empty 1-D'):
    partition.class_skew(np.array([], np.int64), C, 2, 0.5, 0.2, seed=0)
  with pytest.raises(ValueError, match='non-empty 1-D'):
    partition.dirichlet(_labels(100).reshape(10, 10), C, 2, 0.5, 0.2, seed=0)


# ---------------------------------------------------------------------- make


def _config(**overrides):
  c = ml_collections.ConfigDict(dict(partition='skew', num_clients=4, skew=0.8,
                                     dirichlet_alpha=0.3, public_fraction=0.25, seed=7))
  c.update(overrides)
  return c


def test_make_dispatches_on_config_partition():
  labels = _labels(3_000)
  _assert_same(partition.make(labels, C, _config()),
               partition.class_skew(labels, C, 4, 0.8, 0.25, seed=7))
  _assert_same(partition.make(labels, C, _config(partition='dirichlet')),
               partition.dirichlet(labels, C, 4, 0.3, 0.25, seed=7))
  # The fields reach the partition: a different skew changes it.
  p = partition.make(labels, C, _config(skew=1.0))
  assert np.all(p.label_counts(labels)[~p.primary_mask()] == 0)


def test_make_unknown_partition_raises():
  with pytest.raises(ValueError, match="partition must be one of skew, dirichlet, got 'iid'"):
    partition.make(_labels(100), C, _config(partition='iid'))
