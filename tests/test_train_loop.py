"""The training loop with batch statistics: checkpoints, resume, weight averaging, bytes.

Runs use `conftest.ConvBN` (a conv, a BatchNorm, a Dense) so that `batch_stats`
is not empty, as it is for the MLP of the default config.
"""

import jax
import numpy as np
import pytest

import mhd_jax
from mhd_jax import models
from mhd_jax.algorithm import baselines
from mhd_jax.outputs import checkpoint
from mhd_jax.outputs import workdir as wd
from mhd_jax.population import state as state_lib
from mhd_jax.run import programs
from mhd_jax.run import train
from tests import test_step as ts
from tests.conftest import ConvBN, read_records, short_config

# Client i learns from j when A[i, j] > 0 (rows: receivers). Clients 0-2 are ConvBN,
# 3-4 MLP; client 0 also learns from client 4, across the groups.
ASYMMETRIC = '0 1 0 0 1; 0 0 1 0 0; 1 0 0 1 0; 0 0 0 0 1; 1 0 0 0 0'


def _config(**overrides):
  """5 clients in two groups (3 ConvBN, 2 MLP), the asymmetric graph, embedding distillation."""
  config = short_config(**{'num_clients': 5, 'topology': 'explicit', 'adjacency': ASYMMETRIC,
                           'nu_emb': 0.5, 'strategy': 'vmap', 'num_steps': 4, 'log_every': 2,
                           'eval_every': 2, 'checkpoint.every': 2, **overrides})
  config.groups.bn = {'num_clients': 3, 'model': {'name': 'convbn', 'width': 4}}
  config.groups.mlp = {'num_clients': 2, 'model': {'name': 'mlp', 'width': 16, 'depth': 1}}
  return config


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """{name: (Run, summary)}: 'whole' (4 steps), 'split' (2 steps, then resumed to 4),
  'averaged' (the whole run with gossip averaging at step 4)."""
  tmp, out = tmp_path_factory.mktemp('loop'), {}
  with pytest.MonkeyPatch.context() as m:
    m.setitem(models.BACKBONES, 'convbn', ConvBN)
    for name, steps, every in (('whole', [4], 0), ('split', [2, 4], 0), ('averaged', [4], 4)):
      for num_steps in steps:
        summary = train.train_and_evaluate(
            _config(num_steps=num_steps, average_every=every), str(tmp / name))
      out[name] = (mhd_jax.load(str(tmp / name)), summary)
  return out


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_checkpoint_round_trip_keeps_batch_stats_and_optimizer_state(tmp_path):
  specs = ts.make_specs('convbn')
  state = state_lib.init_state(specs, ts.IMAGE, jax.random.PRNGKey(0))
  state, _ = jax.jit(programs.make_train_step(specs, ts.ADJ, ts.distill_config()))(
      state, ts.make_batch(0), jax.random.PRNGKey(1))
  group = state.groups[0]
  assert all(np.any(x != 0) for x in jax.tree.leaves(group.batch_stats['backbone']['BatchNorm_0']))
  mngr = wd.checkpoint_manager(str(tmp_path), _config())
  checkpoint.save(mngr, 1, state, 1.5, force=True)
  mngr.wait_until_finished()
  restored, meta = checkpoint.restore(mngr, checkpoint.abstract_state(specs, ts.IMAGE))
  mngr.close()
  assert meta == {'step': 1, 'wall_seconds': 1.5}
  assert_trees_equal(restored, state)


def test_resumed_batchnorm_run_equals_the_uninterrupted_one(runs):
  (split, resumed), (whole, reference) = runs['split'], runs['whole']
  assert split.step == whole.step == 4
  assert jax.tree.leaves(split.state.groups[0].batch_stats)  # the model has batch statistics
  assert_trees_equal(split.state, whole.state)  # params, batch_stats, optimizer state: bit-equal
  assert resumed['clients'] == reference['clients']
  assert read_records(split.workdir) == read_records(whole.workdir)


def _hand_average(adjacency, first, n, tree):
  """Gossip averaging of one group by hand: x_i <- mean of x_i and its in-neighbours' x_j."""
  a = np.asarray(adjacency, np.float64)[first:first + n, first:first + n] > 0
  rows = [[i] + [j for j in range(n) if a[i, j]] for i in range(n)]
  return jax.tree.map(lambda x: np.stack([np.mean(np.asarray(x, np.float64)[r], 0)
                                          for r in rows]), tree)


def test_gossip_averaging_in_the_loop_stays_within_groups_and_keeps_optimizer_state(runs):
  (averaged, _), (plain, _) = runs['averaged'], runs['whole']
  adjacency = plain.adjacency
  for first, n, got, before in zip((0, 3), (3, 2), averaged.state.groups, plain.state.groups):
    for part in ('params', 'batch_stats'):
      want = _hand_average(adjacency, first, n, getattr(before, part))
      jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7),
                   getattr(got, part), want)
    assert_trees_equal(got.opt_state, before.opt_state)  # optimizer states stay local
  assert jax.tree.leaves(averaged.state.groups[0].batch_stats)
  # The same averaging as the library's, on the same state.
  expected = baselines.make_average(plain.specs, adjacency)(plain.state)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7),
               averaged.state, expected)


def test_bytes_sent_by_hand_on_an_asymmetric_graph_with_embeddings_and_two_groups(runs):
  _, summary = runs['whole']
  b_pub, heads, classes = 64, 3, 10
  emb_dim = {i: 2 * 4 for i in range(3)} | {3: 16, 4: 16}  # ConvBN: 2 * width; MLP: width
  # What an edge j -> i carries (float32): the heads some head of i distils from (0..H-2:
  # nobody reads the last head), and j's embedding only where its size matches i's.
  heads_sent = lambda j, i: heads - 1
  sends_embedding = lambda j, i: emb_dim[j] == emb_dim[i]
  receivers = {0: [2, 4], 1: [0], 2: [1], 3: [2], 4: [0, 3]}  # the columns of ASYMMETRIC
  want = [sum(4 * b_pub * (heads_sent(j, i) * classes + sends_embedding(j, i) * emb_dim[j])
              for i in receivers[j]) for j in range(5)]
  assert [c['bytes_sent_per_step'] for c in summary['clients']] == want
  assert want == [12288, 7168, 7168, 5120, 14336]  # (the rule, spelled out)
  assert summary['bytes_sent_per_step'] == sum(want)
