"""Distillation transfers knowledge: clients learn the classes only their neighbours hold.

Three clients on a chain 0 - 1 - 2, skew 1.0 (each sees only its own classes:
0-3, 4-6 and 7-9), 200 steps of MHD against the same clients trained in
isolation. Thresholds come from the isolated run of the same test: distillation
must close at least half the gap between what an isolated client knows of
another's classes and what it knows of its own.
"""

import os

import numpy as np
import pytest

from mhd_jax.run import train
from tests.conftest import short_config

BLOCKS = [np.arange(0, 4), np.arange(4, 7), np.arange(7, 10)]  # primary classes per client


@pytest.fixture(scope='module')
def per_class(tmp_path_factory):
  """{'mhd' | 'isolated': [N, H, C] test accuracy per class} after 200 steps."""
  out = {}
  for name, overrides in (('mhd', {}), ('isolated', {'nu_main': 0.0, 'nu_aux': 0.0,
                                                     'topology': 'none'})):
    workdir = str(tmp_path_factory.mktemp(name))
    config = short_config(**{'num_clients': 3, 'topology': 'chain', 'skew': 1.0,
                             'num_steps': 200, 'log_every': 200, 'eval_every': 200,
                             'checkpoint.every': 0, **overrides})
    train.train_and_evaluate(config, workdir)
    npz = np.load(os.path.join(workdir, 'per_class.npz'))
    np.testing.assert_array_equal(npz['primary_NxC'], [np.isin(np.arange(10), b) for b in BLOCKS])
    out[name] = npz['correct_NxHxC'] / npz['count_C']
  return out


def _acc(per_class_NxHxC, client, head, owner):
  """Accuracy of `client`'s `head` on the test examples of `owner`'s classes."""
  return per_class_NxHxC[client, head, BLOCKS[owner]].mean()


def _closes_half_the_gap(mhd, isolated, client, owner):
  iso_own = _acc(isolated, client, 0, client)
  iso_other = _acc(isolated, client, 0, owner)
  assert iso_own > iso_other + 0.5  # the isolated client knows its classes, not the others'
  return mhd >= iso_other + 0.5 * (iso_own - iso_other)


@pytest.mark.parametrize('client,owner', [(0, 1), (1, 0), (1, 2), (2, 1)])
def test_main_head_learns_its_neighbours_classes(per_class, client, owner):
  mhd = _acc(per_class['mhd'], client, 0, owner)
  assert _closes_half_the_gap(mhd, per_class['isolated'], client, owner), mhd


@pytest.mark.parametrize('client,hops', [(0, 1), (0, 2), (2, 1), (2, 2)])
def test_auxiliary_head_k_reaches_classes_k_hops_away(per_class, client, hops):
  """Head k of an end client on the classes of the client k hops down the chain."""
  owner = client + hops if client == 0 else client - hops
  mhd = _acc(per_class['mhd'], client, hops, owner)
  assert _closes_half_the_gap(mhd, per_class['isolated'], client, owner), mhd
