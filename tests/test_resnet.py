"""Tests for mhd_jax/models/resnet.py: torchvision param counts, shapes, BN, dtypes."""

import math

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mhd_jax.models import resnet


class _OneHead(nn.Module):
  """Backbone + one Dense head, as the multi-head classifier builds it."""
  backbone: nn.Module
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool):
    return nn.Dense(self.num_classes)(self.backbone(x, train))


def _count(tree):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _abstract_init(model, image_size):
  x = jax.ShapeDtypeStruct((2, image_size, image_size, 3), jnp.float32)
  return jax.eval_shape(
      lambda k, x: model.init_with_output(k, x, train=False),
      jax.random.key(0), x)


@pytest.mark.parametrize('model, num_params, num_bn_features', [
    (resnet.ResNet18(), 11_689_512, 4_800),
    (resnet.ResNet34(), 21_797_672, 8_512),
])
def test_imagenet_param_count_matches_torchvision(
    model, num_params, num_bn_features):
  _, variables = _abstract_init(_OneHead(model, 1000), 224)
  assert _count(variables['params']) == num_params
  # Running mean and var of every BN, kept out of params.
  assert _count(variables['batch_stats']) == 2 * num_bn_features


def test_cifar_stem_param_count():
  # kuangliu/pytorch-cifar ResNet18 with 10 classes has 11,173,962 params.
  _, variables = _abstract_init(_OneHead(resnet.ResNet18Cifar(), 10), 32)
  assert _count(variables['params']) == 11_173_962


@pytest.mark.parametrize('model_fn, image_size, final_hw', [
    (resnet.ResNet18, 224, 7),
    (resnet.ResNet34, 224, 7),
    (resnet.ResNet18Cifar, 32, 4),
    (resnet.ResNet34Cifar, 32, 4),
])
def test_embedding_shape(model_fn, image_size, final_hw):
  model = model_fn()
  x = jax.ShapeDtypeStruct((3, image_size, image_size, 3), jnp.float32)
  variables = _abstract_init(model, image_size)[1]
  emb, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, capture_intermediates=True),
      variables, x)
  assert emb.shape == (3, 512)
  assert emb.dtype == jnp.float32
  last_block = f'BasicBlock_{sum(model.stage_sizes) - 1}'
  feat = state['intermediates'][last_block]['__call__'][0]
  assert feat.shape == (3, final_hw, final_hw, 512)


def test_train_step_updates_batch_stats_with_momentum():
  model = resnet.ResNet18Cifar(width=8, bn_momentum=0.9)
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  assert 'batch_stats' not in variables['params']
  assert _count(variables['params']['conv_init']) == 3 * 3 * 3 * 8

  emb, state = model.apply(variables, x, train=True,
                           mutable=['batch_stats', 'intermediates'],
                           capture_intermediates=True)
  assert emb.shape == (2, 64) and emb.dtype == jnp.float32
  new_stats = state['batch_stats']
  old_leaves = jax.tree.leaves(variables['batch_stats'])
  new_leaves = jax.tree.leaves(new_stats)
  assert len(new_leaves) == len(old_leaves) > 0
  for old, new in zip(old_leaves, new_leaves):
    assert np.all(np.isfinite(new))
    assert not np.allclose(old, new)
  # Running mean = momentum * 0 + (1 - momentum) * batch mean of the stem conv.
  stem = state['intermediates']['conv_init']['__call__'][0]
  np.testing.assert_allclose(new_stats['bn_init']['mean'],
                             0.1 * stem.mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)

  # Eval mode reads the running stats without needing a mutable collection.
  eval_emb = model.apply({**variables, 'batch_stats': new_stats}, x,
                         train=False)
  assert eval_emb.shape == (2, 64)
  assert not np.allclose(eval_emb, emb, atol=1e-3)


def test_zero_init_last_bn():
  x = jnp.zeros((1, 32, 32, 3))
  params = resnet.ResNet18Cifar(width=8, zero_init_last_bn=True).init(
      jax.random.key(0), x, train=False)['params']
  assert np.all(params['BasicBlock_0']['BatchNorm_1']['scale'] == 0)
  assert np.all(params['BasicBlock_0']['BatchNorm_0']['scale'] == 1)
  assert np.all(params['BasicBlock_2']['bn_proj']['scale'] == 1)


def test_bfloat16_compute_keeps_float32_params_and_output():
  model = resnet.ResNet18Cifar(width=8, dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  emb, variables = _abstract_init(model, 32)
  assert emb.dtype == jnp.float32
  assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype('float32')}
  emb, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, capture_intermediates=True,
                               mutable=['batch_stats', 'intermediates']),
      variables, x)
  assert emb.dtype == jnp.float32
  # Convs and BN really compute in bfloat16; BN statistics stay float32.
  for layer in ('conv_init', 'bn_init'):
    out = state['intermediates'][layer]['__call__'][0]
    assert out.dtype == jnp.bfloat16
  assert {s.dtype for s in jax.tree.leaves(state['batch_stats'])} == {
      jnp.dtype('float32')}


def test_unknown_stem_raises():
  with pytest.raises(ValueError, match='stem'):
    resnet.ResNet(stage_sizes=(1,), stem='vit').init(
        jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)


def test_group_norm_resnet_keeps_examples_apart_and_allows_dp():
  """model.norm='group': no batch statistics, each example's outputs its own; DP accepted."""
  from configs import default  # pylint: disable=g-import-not-at-top
  from mhd_jax.run import config_check  # pylint: disable=g-import-not-at-top
  from mhd_jax.wire import privacy  # pylint: disable=g-import-not-at-top
  model = resnet.ResNet18Cifar(width=4, norm='group')
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 16, 3))  # 2x2 left at the last stage
  variables = model.init(jax.random.PRNGKey(1), x, train=True)
  assert set(variables) == {'params'}
  out = model.apply(variables, x, train=True)
  other = model.apply(variables, x.at[1:].set(0.0), train=True)
  np.testing.assert_allclose(out[0], other[0], rtol=1e-6, atol=1e-6)
  assert not np.allclose(out[1], other[1])
  batch = resnet.ResNet18Cifar(width=4)  # BatchNorm: example 0 moves with the others
  v = batch.init(jax.random.PRNGKey(1), x, train=True)
  a = batch.apply(v, x, train=True, mutable=['batch_stats'])[0]
  b = batch.apply(v, x.at[1:].set(0.0), train=True, mutable=['batch_stats'])[0]
  assert not np.allclose(a[0], b[0], atol=1e-4)
  config = default.get_config()
  config.model.name, config.model.norm, config.dp.enabled = 'resnet18_cifar', 'group', True
  assert privacy.supports_dp(config.model) and not privacy.config_problems(config)
  config.model.norm = 'batch'
  assert privacy.config_problems(config)
