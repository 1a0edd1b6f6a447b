"""Tests for mhd_jax/wire/privacy.py: DP-SGD's clipping and noise, per client; ε from the accountant."""

import dp_accounting
from dp_accounting import pld
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from mhd_jax import models
from mhd_jax.algorithm import losses
from mhd_jax.wire import privacy


def _linear_losses(params, x_Bx3, y_B):
  """loss_b = w . x_b + c y_b: its gradient is (x_b, y_b), so per-example norms are set by
  hand (no flax Dense: the norms come from per-example gradients)."""
  return x_Bx3 @ params['w'] + params['b'] * y_B


def _linear_params():
  return {'w': jnp.zeros(3), 'b': jnp.zeros(())}


def test_clipping_holds_per_example_over_the_whole_gradient():
  # Example 0's gradient (x, y) has norm 100 (over w and b together); the others 0.5.
  x = jnp.array([[60.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.4, 0.0], [0.0, 0.0, 0.3]])
  y = jnp.array([80.0, 0.4, 0.3, 0.4])
  g = privacy.private_grad(_linear_losses, _linear_params(), x, y, 1.0, 0.0, jax.random.key(0))
  # The huge example is scaled to norm 1: (0.6, 0, 0, 0.8); the small ones pass unchanged.
  np.testing.assert_allclose(g['w'], (np.array([0.6, 0, 0]) + [0.3, 0.4, 0.3]) / 4, rtol=1e-6)
  np.testing.assert_allclose(g['b'], (0.8 + 0.4 + 0.3 + 0.4) / 4, rtol=1e-6)


def _mlp_setup(n_clients=1, batch=6, seed=0):
  model = models.make_model(default.get_config().model, num_heads=2, num_classes=10)
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(n_clients, batch, 8, 8, 1)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, size=(n_clients, batch)))
  init = lambda k: model.init(k, x[0], train=False)['params']
  params = jax.vmap(init)(jax.random.split(jax.random.key(seed), n_clients))

  def losses_fn(p, x_b, y_b):  # per-example cross-entropy of head 0
    logits, _ = model.apply({'params': p}, x_b, train=True)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits[0]), y_b[:, None], axis=1)[:, 0]
  return losses_fn, params, x, y


def test_no_noise_and_no_clipping_is_the_plain_mean_gradient():
  loss_fn, params, x, y = _mlp_setup()
  p0 = jax.tree.map(lambda a: a[0], params)
  model = models.make_model(default.get_config().model, num_heads=2, num_classes=10)
  want = jax.grad(lambda p: losses.cross_entropy(
      model.apply({'params': p}, x[0], train=True)[0][0], y[0]))(p0)
  # A Python 0 skips the draws; a traced 0 (and a traced inf) must add exactly nothing.
  traced = jax.jit(lambda c, s: privacy.private_grad(loss_fn, p0, x[0], y[0], c, s,
                                                     jax.random.key(1)))
  for got in (privacy.private_grad(loss_fn, p0, x[0], y[0], jnp.inf, 0.0, jax.random.key(1)),
              traced(jnp.inf, 0.0)):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      assert np.isfinite(np.asarray(g)).all()
      np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_ghost_norms_are_the_per_example_gradient_norms():
  loss_fn, params, x, y = _mlp_setup()
  p0 = jax.tree.map(lambda a: a[0], params)
  ghost = privacy._dense_norms_B(loss_fn, p0, x[0], y[0])
  assert ghost is not None  # the MLP is Dense layers only
  np.testing.assert_allclose(ghost, privacy._vmap_norms_B(loss_fn, p0, x[0], y[0]), rtol=1e-5)
  # A model with a convolution falls back to per-example gradients.
  cnn = models.make_model(ml_collections.ConfigDict({**default.get_config().model.to_dict(),
                                                     'name': 'cnn', 'width': 4}), 2, 10)
  cp = cnn.init(jax.random.key(0), x[0], train=False)['params']
  cnn_losses = lambda p, xb, yb: -jax.nn.log_softmax(cnn.apply({'params': p}, xb, train=True)[0][0])[
      jnp.arange(yb.shape[0]), yb]
  assert privacy._dense_norms_B(cnn_losses, cp, x[0], y[0]) is None
  assert privacy.per_example_norms(cnn_losses, cp, x[0], y[0]).shape == (6,)


def _vmapped(loss_fn, clip, noise):
  return jax.jit(jax.vmap(lambda p, xb, yb, k: privacy.private_grad(loss_fn, p, xb, yb, clip,
                                                                       noise, k)))


def test_a_client_noised_gradient_ignores_the_other_clients_data():
  loss_fn, params, x, y = _mlp_setup(n_clients=3)
  keys = jax.random.split(jax.random.key(7), 3)
  step = _vmapped(loss_fn, 0.5, 1.0)
  before = step(params, x, y, keys)
  x2 = x.at[1].set(x[1] * -3.0 + 1.0)
  y2 = y.at[2].set((y[2] + 1) % 10)
  after = step(params, x2, y2, keys)
  for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    np.testing.assert_array_equal(np.asarray(b[0]), np.asarray(a[0]))
  for client in (1, 2):  # their own data did change their gradients
    assert any(not np.array_equal(b[client], a[client])
               for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
  # And the noise is there, with std sigma * C / B per coordinate.
  clean = _vmapped(loss_fn, 0.5, 0.0)(params, x, y, keys)
  diff = np.concatenate([np.ravel(b - c) for b, c in
                         zip(jax.tree.leaves(before), jax.tree.leaves(clean))])
  assert abs(diff.std() / (1.0 * 0.5 / 6) - 1) < 0.05


def _accountant_epsilon(noise, q, steps, delta):
  event = dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(noise)), steps)
  return pld.PLDAccountant().compose(event).get_epsilon(delta)


def test_epsilon_is_the_accountants():
  for noise, q, steps in [(1.1, 32 / 250, 300), (2.0, 0.05, 1000)]:
    assert privacy.epsilon(noise, q, steps, 1e-5) == _accountant_epsilon(noise, q, steps, 1e-5)
  assert privacy.epsilon(0.0, 0.1, 10, 1e-5) == float('inf')


def test_epsilon_falls_with_noise_and_rises_with_steps():
  eps = [privacy.epsilon(s, 0.1, 200, 1e-5) for s in (0.8, 1.0, 2.0, 4.0)]
  assert all(a > b for a, b in zip(eps, eps[1:])) and np.isfinite(eps).all()
  assert privacy.epsilon(1.0, 0.1, 400, 1e-5) > eps[1]


def test_client_epsilons_use_each_clients_sampling_rate():
  config = default.get_config()
  config.dp.noise_multiplier = 1.5
  got = privacy.client_epsilons(config, [200, 400, 200], steps=100)
  assert got[0] == got[2] == privacy.epsilon(1.5, 32 / 200, 100, 1e-5)
  assert got[1] == privacy.epsilon(1.5, 32 / 400, 100, 1e-5) < got[0]


def test_supports_dp_and_the_groups_are_checked():
  config = default.get_config()
  assert privacy.supports_dp(config.model)
  config.model.name = 'resnet18'
  assert not privacy.supports_dp(config.model)
  config = default.get_config()
  config.dp.enabled = True
  assert privacy.config_problems(config) == []
  config.num_clients = 4
  config.groups.small = {'num_clients': 2, 'model': {'name': 'mlp'}}
  config.groups.conv = {'num_clients': 2, 'model': {'name': 'resnet18_cifar'}}
  (line,) = privacy.config_problems(config)
  assert "groups.conv.model.name='resnet18_cifar'" in line
  config.dp.enabled = False
  assert privacy.config_problems(config) == []


@pytest.mark.parametrize('noise,clip,needle', [(0.0, 1.0, 'ε = inf'), (1.0, np.inf, 'clip_norm')])
def test_config_problems_refuse_an_infinite_epsilon(noise, clip, needle):
  config = default.get_config()
  config.dp.enabled = True
  config.dp.noise_multiplier, config.dp.clip_norm = noise, clip
  (line,) = privacy.config_problems(config)
  assert needle in line


def test_a_dp_runs_summary_reports_the_accountants_epsilon(tmp_path):
  """A tiny DP run: summary.json's ε of each client is the PLD accountant's for its q = B / n_i,
  and the log record and TensorBoard carry the same values."""
  from mhd_jax.run import train  # pylint: disable=g-import-not-at-top
  from mhd_jax.outputs import summary as summary_lib  # pylint: disable=g-import-not-at-top
  from mhd_jax.outputs import workdir as wd  # pylint: disable=g-import-not-at-top
  from tests.conftest import read_records, short_config  # pylint: disable=g-import-not-at-top
  config = short_config(**{'num_steps': 10, 'eval_every': 10, 'log_every': 10, 'num_clients': 3,
                           'dp.enabled': True, 'dp.noise_multiplier': 1.3, 'dp.clip_norm': 0.7})
  summary = summary_lib.Summary.from_json(train.train_and_evaluate(config, str(tmp_path)))
  sizes = wd.read_partition(str(tmp_path))['client_sizes']
  for c, n in zip(summary.clients, sizes):
    assert c.epsilon == _accountant_epsilon(1.3, 32 / n, 10, 1e-5)
  assert summary.dp == {'delta': 1e-5, 'noise_multiplier': 1.3, 'clip_norm': 0.7,
                        'accountant': privacy.ACCOUNTANT}
  (rec,) = [r for r in read_records(str(tmp_path)) if 'dp' in r]
  assert rec['dp']['epsilon'] == [c.epsilon for c in summary.clients]
  assert summary_lib.read_summary(str(tmp_path)) == summary
