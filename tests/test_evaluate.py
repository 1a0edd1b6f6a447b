"""`evaluate.accuracies` against numbers computed by hand from a fake `predict`."""

import numpy as np

from mhd_jax.algorithm import evaluate

# 2 clients, 2 heads, 3 classes. Client 0 owns class 0, client 1 classes 1 and 2.
PRIMARY = np.array([[1, 0, 0], [0, 1, 1]], bool)
# Two evaluation batches of 4; the second holds 2 real examples and 2 padded rows whose
# label is 0 (as `eval_batches_from_arrays` pads) and which every head "gets right".
BATCHES = [
    {'image': np.arange(4), 'label': np.array([0, 1, 2, 0]), 'mask': np.ones(4, bool)},
    {'image': np.arange(4, 8), 'label': np.array([1, 2, 0, 0]),
     'mask': np.array([1, 1, 0, 0], bool)},
]
# Predictions [N, H, B] per batch, indexed by the fake image ids.
PREDS = np.array([
    # client 0: head 0 right on ids 0, 1, 3, 6, 7 (6, 7 padded); head 1 always class 2.
    [[0, 1, 0, 0, 2, 0, 0, 0], [2, 2, 2, 2, 2, 2, 0, 0]],
    # client 1: head 0 predicts 1 everywhere (a class outside client 0's), head 1 right on all.
    [[1, 1, 1, 1, 1, 1, 0, 0], [0, 1, 2, 0, 1, 2, 0, 0]],
])


def fake_predict(state, images):
  del state
  return PREDS[:, :, images]


def test_accuracies_by_hand():
  acc = evaluate.accuracies(fake_predict, None, BATCHES, PRIMARY)
  # Real examples: ids 0-5 with labels 0 1 2 0 1 2 (two of each class).
  np.testing.assert_array_equal(acc.count_C, [2, 2, 2])
  # Client 0 head 0: right on id 0 (class 0), 1 (class 1), 3 (class 0): 3 of 6.
  # Client 0 head 1: class 2 always: right on ids 2, 5 (class 2).
  # Client 1 head 0: right on ids 1, 4 (class 1). Head 1: all six.
  np.testing.assert_array_equal(acc.correct_NxHxC, [[[2, 1, 0], [0, 0, 2]],
                                                    [[0, 2, 0], [2, 2, 2]]])
  np.testing.assert_allclose(acc.shared_NxH, [[3 / 6, 2 / 6], [2 / 6, 1.0]])
  # Private: client 0 on class 0 (2 examples), client 1 on classes 1, 2 (4 examples).
  np.testing.assert_allclose(acc.private_NxH, [[2 / 2, 0 / 2], [2 / 4, 4 / 4]])
  np.testing.assert_allclose(acc.per_class()[1, 0], [0, 1, 0])


def test_argmax_over_all_classes_counts_a_prediction_outside_the_primary_ones_as_wrong():
  """Client 0's head 0 predicts class 1 on id 1 (right, but not a primary class): private
  accuracy ignores id 1, shared counts it; predicting class 1 on a class-0 example is wrong."""
  preds = PREDS.copy()
  preds[0, 0, 0] = 1  # id 0 is class 0
  acc = evaluate.accuracies(lambda s, x: preds[:, :, x], None, BATCHES, PRIMARY)
  assert acc.private_NxH[0, 0] == 1 / 2 and acc.shared_NxH[0, 0] == 2 / 6
