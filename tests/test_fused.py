"""Fused passes: one model call on [private; public] with batch statistics per segment.

The fused call must compute what the two calls compute (outputs, gradients,
running averages in the order private, then public) and keep the private
batch out of the public outputs.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import default
from mhd_jax import models
from mhd_jax.algorithm import step as step_lib
from mhd_jax.models import resnet
from mhd_jax.outputs import workdir as wd
from mhd_jax.population import groups as groups_lib
from mhd_jax.population import state as state_lib
from mhd_jax.run import programs
from tests import test_step as ts

# float32 throughout; the two paths differ only in reduction and fusion order.
TOL = dict(rtol=2e-5, atol=2e-6)


def tiny_resnet(fused, width=4):
  """A two-stage CIFAR-stem ResNet: stem BN, block BNs and a projection BN, compiled in seconds."""
  backbone = resnet.ResNet(stage_sizes=(1, 1), stem='cifar', width=width)
  return models.MultiHeadClassifier(backbone, ts.H, ts.C, fused_passes=fused)


def tiny_specs(fused, name='resnet'):
  """One group of N clients: the tiny ResNet, or a backbone without batch statistics by name."""
  if name == 'resnet':
    model = tiny_resnet(fused)
  else:
    model = models.make_model(ml_collections.ConfigDict(dict(
        name=name, width=8, depth=1, dtype='float32', aux_backbone_grad=True,
        fused_passes=fused)), ts.H, ts.C)
  return (state_lib.GroupSpec(model, optax.sgd(0.1, momentum=0.9), ts.N),)


def _variables(model, seed=0):
  x = jnp.zeros((1, *ts.IMAGE), jnp.float32)
  return model.init(jax.random.PRNGKey(seed), x, train=False)


@pytest.mark.parametrize('b,b_pub', [(4, 4), (3, 5)])  # equal: reshape path; unequal: slices
def test_fused_call_equals_two_calls(b, b_pub):
  """Logits, public embedding, batch statistics and the gradient of a loss on both outputs."""
  model = tiny_resnet(True)
  variables = _variables(model)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(b, *ts.IMAGE)).astype(np.float32)
  u = 2.0 + 3.0 * rng.normal(size=(b_pub, *ts.IMAGE)).astype(np.float32)  # other statistics

  def loss(params, fused):
    apply = step_lib.client_outputs if fused else _two_calls
    lp, lu, eu, stats = apply(model, params, variables['batch_stats'], x, u)
    total = (jnp.sum(jnp.sin(lp)) + jnp.sum(jnp.cos(lu) * jnp.arange(lu.shape[-1]))
             + jnp.sum(eu**2))
    return total, (lp, lu, eu, stats)

  grad = jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)
  g_two, out_two = grad(variables['params'], False)
  g_fused, out_fused = grad(variables['params'], True)
  ts.assert_trees_close(out_fused, out_two, **TOL)
  ts.assert_trees_close(g_fused, g_two, **TOL)
  # Not vacuous: the statistics moved, and updating them public-first would differ.
  differ = lambda a, b: all(jax.tree.leaves(jax.tree.map(lambda p, q: not np.allclose(p, q), a, b)))
  assert differ(out_two[3], variables['batch_stats'])
  swapped = _two_calls(model, variables['params'], variables['batch_stats'], u, x)[3]
  assert differ(out_two[3], swapped)


def _two_calls(model, params, batch_stats, x, u):
  lp, _, stats = models.forward(model, params, batch_stats, x, train=True)
  lu, eu, stats = models.forward(model, params, stats, u, train=True)
  return lp, lu, eu, stats


def test_variable_tree_is_that_of_flax_batchnorm(monkeypatch):
  """Checkpoints written with `nn.BatchNorm` restore: same paths, shapes and dtypes."""
  ours = jax.eval_shape(lambda: _variables(tiny_resnet(False)))
  monkeypatch.setattr(resnet, 'BatchNorm', lambda segments, **kw: nn.BatchNorm(**kw))
  flax_bn = jax.eval_shape(lambda: _variables(tiny_resnet(False)))
  assert jax.tree.structure(ours) == jax.tree.structure(flax_bn)
  assert jax.tree.leaves(ours) == jax.tree.leaves(flax_bn)
  assert 'BatchNorm_0' in ours['params']['backbone']['BasicBlock_1']


def test_eval_mode_ignores_segments():
  model = tiny_resnet(True)
  variables = _variables(model)
  x = np.random.default_rng(0).normal(size=(6, *ts.IMAGE)).astype(np.float32)
  plain = model.apply(variables, x, train=False)
  segmented = model.apply(variables, x, train=False, segments=(2, 4))
  ts.assert_trees_close(segmented, plain, rtol=0, atol=0)


@functools.cache
def _reference(name):
  """(state, reference group, reference metrics): the fused model's initial population and
  test_step's two-call reference two steps later, computed op by op once per backbone."""
  specs = tiny_specs(True, name)
  state = state_lib.init_state(specs, ts.IMAGE, jax.random.PRNGKey(0))
  ref, metrics = state.groups[0], None
  for s in range(2):
    ref, metrics = ts.reference_step(specs[0], ref, ts.make_batch(s), ts.ADJ,
                                     ts.distill_config('mean'), jax.random.PRNGKey(3), s)
  return state, ref, metrics


@pytest.mark.parametrize('strategy,name', [
    ('vmap', 'resnet'), ('vmap', 'cnn'),
    pytest.param('hybrid', 'resnet', marks=pytest.mark.slow),  # the same check, other mappings
    pytest.param('loop', 'resnet', marks=pytest.mark.slow)])
def test_fused_step_matches_per_client_reference(strategy, name):
  """The fused step under each strategy against test_step's two-call reference, two steps."""
  specs = tiny_specs(True, name)
  assert specs[0].model.fused_passes
  state, ref, ref_metrics = _reference(name)
  step = jax.jit(programs.make_train_step(specs, ts.ADJ, ts.distill_config('mean'), strategy))
  for s in range(2):
    state, metrics = step(state, ts.make_batch(s), jax.random.PRNGKey(3))
  for part in ('params', 'batch_stats', 'opt_state'):
    ts.assert_trees_close(getattr(state.groups[0], part), getattr(ref, part), **TOL)
  ts.assert_trees_close(metrics, ref_metrics, **TOL)
  assert np.all(metrics.kd_main > 0) and np.all(metrics.kd_aux > 0)


@pytest.mark.parametrize('strategy', ['vmap', 'loop'])
def test_fused_private_batch_of_one_client_never_reaches_another(strategy):
  """test_step's privacy check with fused passes: client 1's private batch changes only client 1.

  The private segment's batch statistics must not reach the public segment's
  normalisation, or client 1's public outputs (its neighbours' targets) move.
  """
  config = ts.distill_config('most_confident')
  specs = tiny_specs(True)
  adjacency = np.ones((ts.N, ts.N), np.float32) - np.eye(ts.N)
  batch = ts.make_batch(0)
  other = jax.tree.map(np.copy, batch)
  rng = np.random.default_rng(1)
  other['private']['image'][1] = 3.0 * rng.normal(size=other['private']['image'][1].shape)
  other['private']['label'][1] = (other['private']['label'][1] + 1) % ts.C
  state = state_lib.init_state(specs, ts.IMAGE, jax.random.PRNGKey(0))
  step = jax.jit(programs.make_train_step(specs, adjacency, config, strategy))
  a, _ = step(state, batch, jax.random.PRNGKey(0))
  b, _ = step(state, other, jax.random.PRNGKey(0))
  for i in range(ts.N):
    same = jax.tree.map(lambda x, y: bool(np.array_equal(x[i], y[i])), a.groups, b.groups)
    assert all(jax.tree.leaves(same)) == (i != 1), f'client {i}'


def test_config_field_reaches_the_model_and_may_change_on_resume():
  config = default.get_config()
  assert not groups_lib.make_specs(config, 10)[0].model.fused_passes
  config.model.fused_passes = True
  assert groups_lib.make_specs(config, 10)[0].model.fused_passes
  # Same results either way: a workdir saved without the field (or with False) resumes.
  saved = default.get_config().to_dict()
  assert wd.config_differences(saved, config) == []
  del saved['model']['fused_passes']
  assert wd.config_differences(saved, config) == []
