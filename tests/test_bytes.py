"""Honest byte counts: only what another client's loss reads, and the proof that the rest is unread."""

import jax
import ml_collections
import numpy as np
import optax

from configs import default
from mhd_jax import models
from mhd_jax.network import topology
from mhd_jax.population import state as state_lib
from mhd_jax.run import programs
from mhd_jax.wire import communication

N, H, C, B, B_PUB = 3, 3, 5, 4, 6
IMAGE = (8, 8, 1)
ADJ = np.array([[0, 1, 3], [1, 0, 0], [2, 1, 0]], np.float32)


def _config(**kw):
  base = dict(nu_main=1.0, nu_aux=0.7, nu_emb=0.0, temperature=2.0, target='most_confident',
              include_self=False)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def _sent(adjacency, config, num_heads=3, head=2560, emb=0):
  n = adjacency.shape[0]
  read, q = communication.readers(adjacency, num_heads, config)
  return communication.bytes_sent_per_step(read, q, [head] * n, [emb] * n)


def test_default_config_sends_heads_0_to_h_minus_2_only():
  # 5 clients, complete graph, 3 heads; a head's logits on the public batch: 64 * 10 * 4 bytes.
  c = default.get_config()
  sent = _sent(topology.build(c), c)
  assert sent.sum() == 5 * 4 * 2 * 64 * 10 * 4 == 102_400  # not 153,600: the last head stays
  np.testing.assert_array_equal(sent, [20_480] * 5)


def test_nothing_is_sent_without_distillation():
  c = _config(nu_main=0.0, nu_aux=0.0, nu_emb=0.0)
  assert _sent(topology.complete(4), c).sum() == 0
  c = _config(nu_main=1.0, nu_aux=0.0)  # head 0 only
  assert _sent(topology.complete(4), c).sum() == 4 * 3 * 2560
  c = _config(nu_main=0.0, nu_aux=0.0, nu_emb=1.0, target='mean')  # embeddings only
  assert _sent(topology.complete(4), c, emb=100).sum() == 4 * 3 * 100
  for target in ('most_confident', 'confidence_weighted'):  # the mixing weighs head-0 confidences
    c = _config(nu_main=0.0, nu_aux=0.0, nu_emb=1.0, target=target)
    assert _sent(topology.complete(4), c, emb=100).sum() == 4 * 3 * (2560 + 100), target


def test_random_target_counts_the_expected_drawn_neighbour():
  # Complete graph of 5: each (client, head) draws one of 4 neighbours. Head 0 of j is read
  # by i when head 0's or head 1's draw picks j: 1 - (3/4)^2; head 1 when head 2's does: 1/4.
  c = _config(target='random')
  sent = _sent(topology.complete(5), c)
  np.testing.assert_allclose(sent, [4 * (1 - 0.75**2 + 0.25) * 2560] * 5)


def test_zero_weight_edges_and_self_carry_nothing():
  a = np.array([[0, 1, 0], [0, 0, 0], [0, 0, 5]], np.float32)  # 0 reads 1; 2 only itself
  c = _config(include_self=True)
  np.testing.assert_array_equal(_sent(a, c, head=10), [0, 20, 0])


def _population():
  model_cfg = ml_collections.ConfigDict(dict(name='mlp', width=8, depth=1, dtype='float32',
                                             aux_backbone_grad=True))
  specs = (state_lib.GroupSpec(models.make_model(model_cfg, H, C), optax.sgd(0.1, momentum=0.9), N),)
  state = state_lib.init_state(specs, IMAGE, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  batch = {'private': {'image': rng.normal(size=(N, B, *IMAGE)).astype(np.float32),
                       'label': rng.integers(C, size=(N, B)).astype(np.int32)},
           'public': {'image': rng.normal(size=(B_PUB, *IMAGE)).astype(np.float32)}}
  return specs, state, batch


def _after_step(specs, state, batch, config, perturb):
  """New params of every client after one step, with client 0's params changed by `perturb`."""
  group = state.groups[0]
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x.at[0].add(1.0) if perturb(jax.tree_util.keystr(path)) else x,
      group.params)
  state = state_lib.TrainState(step=state.step,
                         groups=(state_lib.Group(params, group.batch_stats, group.opt_state),))
  step = jax.jit(programs.make_train_step(specs, ADJ, config))
  new, _ = step(state, batch, jax.random.PRNGKey(1))
  return new.groups[0].params


def _others_equal(a, b) -> bool:
  return all(np.array_equal(np.asarray(x)[1:], np.asarray(y)[1:])
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_what_is_not_counted_changes_no_other_client():
  specs, state, batch = _population()
  for target in ('most_confident', 'mean', 'confidence_weighted'):
    config = _config(target=target, nu_emb=0.5)
    base = _after_step(specs, state, batch, config, lambda p: False)
    # Client 0's last head: counted for nobody, read by nobody.
    last = _after_step(specs, state, batch, config, lambda p: f'head_{H - 1}' in p)
    assert _others_equal(base, last), target
    # Its head H-2 is counted, and is read: the check can fail.
    read = _after_step(specs, state, batch, config, lambda p: f'head_{H - 2}' in p)
    assert not _others_equal(base, read), target
  assert communication.readers(ADJ, H, _config())[0][H - 1].sum() == 0
  # Without distillation nothing is counted, and nothing of client 0 reaches anyone.
  off = _config(nu_main=0.0, nu_aux=0.0, nu_emb=0.0)
  assert _sent(ADJ, off).sum() == 0
  base = _after_step(specs, state, batch, off, lambda p: False)
  assert _others_equal(base, _after_step(specs, state, batch, off, lambda p: True))
