"""Differential privacy of each client's private data: DP-SGD and its ε (docs/privacy.md).

Client i's private term is trained with DP-SGD (Abadi et al. 2016): each
example's gradient is clipped to L2 norm at most C (over all parameters
together), the clipped gradients are summed, Gaussian noise N(0, σ² C²) is
added to every coordinate, and the sum is divided by the batch size B. The
distillation terms (public data, targets from what the peers sent) add no
privacy cost: they are post-processing (docs/privacy.md has the argument).

`private_grad` is written for one client and holds no client axis, so the step
calls it under `jax.vmap` over clients with one rng per client, e.g.
`jax.random.split(jax.random.fold_in(rng, step), N)`; no client's draw then
depends on another's data. ε comes from Google's `dp_accounting` (PLD
accountant, Poisson subsampling with q = B / n_i; see docs/privacy.md for the
gap to the shuffled batches the pipeline draws).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mhd_jax.models import mnist1d

# Backbones whose examples do not interact in a training forward pass (the MLP, the CNN, the
# published MNIST-1D models). BatchNorm (every ResNet here) mixes the batch's examples through
# its statistics, so an example's "per-example gradient" depends on the others and clipping
# bounds nothing.
DP_BACKBONES = ('mlp', 'cnn', *mnist1d.BACKBONES)


def supports_dp(model_config) -> bool:
  """Whether per-example gradients of this model (`config.model`, or a dict of its fields) are
  per-example: no batch statistics (`DP_BACKBONES`, and the ResNets with `model.norm = 'group'`)."""
  return (model_config['name'] in DP_BACKBONES
          or model_config.get('norm', 'batch') == 'group')


def _vmap_norms_B(losses_fn, params, x_BxF, y_B):
  """||∇ loss_b|| for every example, from B materialised per-example gradients."""
  one = lambda p, x, y: losses_fn(p, x[None], y[None])[0]
  g_B = jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(params, x_BxF, y_B)
  b = y_B.shape[0]
  return jnp.sqrt(sum(jnp.sum(jnp.square(g.reshape(b, -1)), axis=1) for g in jax.tree.leaves(g_B)))


def _dense_norms_B(losses_fn, params, x_BxF, y_B):
  """Per-example gradient norms without per-example gradients ("ghost norms"), or None.

  For a Dense layer y_b = x_b W + c on [B, in] inputs, example b's gradient is
  (x_b δ_bᵀ, δ_b) with δ_b = ∂loss_b/∂y_b, so its squared norm is
  ||x_b||² ||δ_b||² + ||δ_b||². One backward pass of sum_b loss_b with respect to
  zeros added to every Dense output gives all δ_b at once (no example's loss
  reads another's outputs: no BatchNorm). Every flax `nn.Dense` call is
  intercepted; None when the Dense layers do not hold every parameter (a
  convolution), when one is called on inputs that are not [B, in], or called
  twice (its gradient would be a sum the formula does not cover).
  """
  b = y_B.shape[0]
  calls = []  # (module path, input, its params, output) per Dense call, in call order

  def run(p, eps):
    calls.clear()

    def intercept(next_fun, args, kwargs, context):
      if not (isinstance(context.module, nn.Dense) and context.method_name == '__call__'):
        return next_fun(*args, **kwargs)
      out = next_fun(*args, **kwargs)
      calls.append((context.module.path, args[0], context.module.variables['params'], out))
      return out if eps is None else out + eps[len(calls) - 1]
    with nn.intercept_methods(intercept):
      return losses_fn(p, x_BxF, y_B)

  jax.eval_shape(lambda p: run(p, None), params)
  paths = [c[0] for c in calls]
  dense_size = sum(v.size for c in calls for v in jax.tree.leaves(c[2]))
  total = sum(v.size for v in jax.tree.leaves(params))
  if (len(set(paths)) != len(paths) or dense_size != total
      or any(c[1].ndim != 2 or c[1].shape[0] != b or c[3].ndim != 2 for c in calls)):
    return None
  eps0 = [jnp.zeros(c[3].shape, c[3].dtype) for c in calls]

  def total_loss(eps):
    loss = jnp.sum(run(params, eps))
    return loss, [c[1] for c in calls]
  delta, inputs = jax.grad(total_loss, has_aux=True)(eps0)
  sq_B = 0.0
  for d, x, (_, _, v, _) in zip(delta, inputs, calls):
    d2 = jnp.sum(jnp.square(d.astype(jnp.float32)), axis=1)
    sq_B += jnp.sum(jnp.square(x.astype(jnp.float32)), axis=1) * d2 + ('bias' in v) * d2
  return jnp.sqrt(sq_B)


def per_example_norms(losses_fn, params, x_BxF, y_B):
  """[B] L2 norms of every example's gradient over all parameters: ghost norms where the
  model is Dense layers only (`_dense_norms_B`), else from per-example gradients."""
  norms = _dense_norms_B(losses_fn, params, x_BxF, y_B)
  return _vmap_norms_B(losses_fn, params, x_BxF, y_B) if norms is None else norms


def private_grad(losses_fn, params, x_BxF, y_B, clip_norm, noise_multiplier, rng):
  """DP-SGD gradient of one client: (sum_b clip_C(g_b) + N(0, σ² C² I)) / B.

  losses_fn(params, x_B, y_B) -> [B]: the private loss of every example (no
    mean; example b's loss may read only example b: no BatchNorm).
  clip_C(g) = g min(1, C / ||g||), ||g|| the L2 norm over every parameter.
  clip_norm = inf clips nothing; noise_multiplier σ = 0 adds nothing (not even
  0 * inf); both may be traced (a Python 0 skips the draws). Returns a pytree
  like `params`. The draws are a large part of the cost on a CPU: 8 clients of
  the digits MLP need 230k normals per step (benchmarks/dp_overhead.py).

  Two passes: the per-example norms ||g_b|| (`per_example_norms`), then one
  backward pass of sum_b f_b loss_b with f_b = min(1, C / ||g_b||) held constant
  (the gradient is linear), so no per-example gradient is summed by hand.
  """
  b = y_B.shape[0]
  norm_B = per_example_norms(losses_fn, params, x_BxF, y_B)
  factor_B = jax.lax.stop_gradient(
      jnp.minimum(1.0, clip_norm / jnp.maximum(norm_B, jnp.finfo(norm_B.dtype).tiny)))
  weighted = lambda p: jnp.sum(factor_B * losses_fn(p, x_BxF, y_B))
  leaves, treedef = jax.tree.flatten(jax.grad(weighted)(params))
  if isinstance(noise_multiplier, (int, float)) and noise_multiplier == 0:
    return jax.tree.unflatten(treedef, [s / b for s in leaves])  # no draws at all
  std = jnp.where(noise_multiplier > 0, noise_multiplier * clip_norm, 0.0)
  keys = jax.random.split(rng, len(leaves))
  return jax.tree.unflatten(treedef, [
      (s + (std * jax.random.normal(k, s.shape, s.dtype)).astype(s.dtype)) / b
      for s, k in zip(leaves, keys)])


def _event(noise_multiplier: float, sampling_probability: float, steps: int):
  import dp_accounting  # pylint: disable=g-import-not-at-top  # only runs that report ε need it
  return dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          sampling_probability, dp_accounting.GaussianDpEvent(noise_multiplier)), steps)


def epsilon(noise_multiplier: float, sampling_probability: float, steps: int,
            delta: float) -> float:
  """ε at δ of `steps` Poisson-subsampled Gaussian steps (q = sampling_probability), by the
  PLD accountant; inf when noise_multiplier is 0. q = 1 is full-batch, no amplification."""
  from dp_accounting import pld  # pylint: disable=g-import-not-at-top
  if steps == 0:
    return 0.0
  if noise_multiplier == 0:
    return float('inf')
  accountant = pld.PLDAccountant()
  accountant.compose(_event(noise_multiplier, min(sampling_probability, 1.0), steps))
  return float(accountant.get_epsilon(delta))


def client_epsilons(config, private_sizes, steps: int) -> list[float]:
  """ε of every client after `steps` steps: q_i = B / n_i (n_i its private examples).

  Clients with the same n_i share one accountant call (each call takes up to seconds).
  """
  dp, b = config.dp, config.data.batch_size
  cache = {}
  for n in set(int(n) for n in private_sizes):
    cache[n] = epsilon(dp.noise_multiplier, b / n, steps, dp.delta)
  return [cache[int(n)] for n in private_sizes]


ACCOUNTANT = 'dp_accounting 0.6 PLDAccountant, Poisson sampling q = batch_size / n_i'


def summary_block(config) -> dict:
  """summary.json's `dp` block: what the reported ε assumes."""
  dp = config.dp
  return {'delta': float(dp.delta), 'noise_multiplier': float(dp.noise_multiplier),
          'clip_norm': float(dp.clip_norm), 'accountant': ACCOUNTANT}


def config_problems(config) -> list[str]:
  """One line per DP choice the run cannot honour (ranges are checked in FIELDS)."""
  dp = config.dp
  if not dp.enabled:
    return []
  out = []
  if dp.noise_multiplier == 0:
    out.append('dp.enabled with dp.noise_multiplier=0 gives ε = inf; set a noise multiplier > 0 '
               '(e.g. 1.0) or dp.enabled=False.')
  if not dp.clip_norm < float('inf'):
    out.append(f'dp.clip_norm={dp.clip_norm} bounds no gradient, so no ε holds; use a finite '
               'clip norm (e.g. 1.0).')
  groups = config.get('groups') or {}
  models = [(f'groups.{name}.model', {**config.model.to_dict(), **dict(g.get('model', {}))})
            for name, g in groups.items()] if groups else [('model', config.model)]
  for where, model in models:
    if not supports_dp(model):
      out.append(f'dp.enabled with {where}.name={model["name"]!r}: its BatchNorm mixes examples, '
                 f'so per-example clipping bounds nothing; use {" or ".join(DP_BACKBONES)}, '
                 f"or {where}.norm='group'.")
  return out
