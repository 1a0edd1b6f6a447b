"""What DP-SGD costs: the private-gradient step of N stacked clients, DP against plain.

    python benchmarks/dp_overhead.py            # default: the digits MLP, N = 8

Both steps compute every client's private cross-entropy gradient on the same
batch and apply it (plain SGD, so nothing but the gradient differs): the plain
step with `jax.grad` of the batch mean, the DP step with
`privacy.private_grad` (per-example gradients by `vmap(grad)`, clipping over
the whole gradient, Gaussian noise), vmapped over clients with one key each.
They are timed in alternating windows in one process (median of `--repeats`);
`ratio_dp_vs_plain` is the overhead. The issue asks for < 3x at N = 8 on the
digits MLP. `clip_only` is the DP step without the noise draws (σ = 0): the
rest of the overhead is drawing one normal per parameter per client. Models
with BatchNorm refuse DP (privacy.supports_dp); `resnet18_cifar_group` is the
CIFAR ResNet-18 with `model.norm='group'`:

    python benchmarks/dp_overhead.py --models resnet18_cifar_group --n 2 --repeats 3

`full_plain` and `full_dp` time the run's whole training step
(`programs.train_step` through `common.Bench`: both passes, distillation over
the complete graph, the optimizer), without and with `dp.enabled`;
`ratio_full_dp_vs_plain` is the overhead a run sees. `full_dp_no_draws` is the
full DP step with noise 0 (what the draws cost in the whole step).
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

MODELS = {'default': common.MODELS['default'],
          'cnn': ({'name': 'cnn'}, (8, 8, 1), None, None),
          # The ResNet with GroupNorm (model.norm='group'): the BatchNorm one refuses DP.
          'resnet18_cifar_group': ({'name': 'resnet18_cifar', 'width': 16, 'norm': 'group'},
                                   (32, 32, 3), 32, 32)}
QUICK = {'default': common.QUICK['default'], 'cnn': ({'name': 'cnn'}, (8, 8, 1), 8, 8),
         'resnet18_cifar_group': ({'name': 'resnet18_cifar', 'width': 4, 'norm': 'group'},
                                  (16, 16, 3), 4, 4)}


class PrivateGradStep(common.Bench):
  """Every client's private gradient and an SGD update; DP-SGD when `dp` is set."""
  dp, noise = False, None

  def make_step(self, specs, adjacency, config, layout):
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from mhd_jax.algorithm import losses  # pylint: disable=g-import-not-at-top
    from mhd_jax.wire import privacy  # pylint: disable=g-import-not-at-top
    del adjacency, layout
    (spec,) = specs
    dp, clip = self.dp, config.dp.clip_norm
    noise = config.dp.noise_multiplier if self.noise is None else self.noise

    def losses_fn(params, x, y):  # per example
      logits, _ = spec.model.apply({'params': params}, x, train=True)
      return -jnp.take_along_axis(jax.nn.log_softmax(logits[0]), y[:, None], axis=1)[:, 0]

    def client(params, x, y, key):
      g = (privacy.private_grad(losses_fn, params, x, y, clip, noise, key) if dp
           else jax.grad(lambda p: losses.cross_entropy(
               spec.model.apply({'params': p}, x, train=True)[0][0], y))(params))
      return jax.tree.map(lambda p, d: p - 1e-3 * d, params, g)

    def train_step(state, batch, rng):
      (g,) = state.groups
      (private,) = batch['private']  # one group
      x, y = private['image'], private['label']
      keys = jax.random.split(jax.random.fold_in(rng, state.step), y.shape[0])
      params = jax.vmap(client)(g.params, x, y, keys)
      return state.replace(step=state.step + 1, groups=(g.replace(params=params),)), {}

    return jax.jit(train_step, donate_argnums=0)


class DPStep(PrivateGradStep):
  dp = True


class ClipOnlyStep(PrivateGradStep):
  """DP-SGD's clipping without the noise draws (noise_multiplier = 0): what the draws cost."""
  dp, noise = True, 0.0


def _full(config, dp: bool, noise=None):
  """`config` with DP on or off (the run's step program is `common.Bench`'s default)."""
  config = config.copy_and_resolve_references()
  config.dp.enabled = dp
  if noise is not None:
    config.dp.noise_multiplier = noise
  return config


def main():
  p = common.parser(__doc__, models=MODELS, default_models='default')
  p.add_argument('--n', default='8', help='comma-separated client counts')
  args = p.parse_args()
  if args.quick:
    args.repeats, args.n = 1, '2'
  common.MODELS.update(MODELS)
  common.QUICK.update(QUICK)
  common.setup(args)
  common.emit(common.machine())
  for model in args.models.split(','):
    config, image = common.model_config(model, args.quick)
    for n in map(int, args.n.split(',')):
      plain = PrivateGradStep(config, image, n, 'vmap', 1)
      dp = DPStep(config, image, n, 'vmap', 1)
      clip_only = ClipOnlyStep(config, image, n, 'vmap', 1)
      benches = {'plain': plain, 'dp': dp, 'clip_only': clip_only,
                 'full_plain': common.Bench(_full(config, False), image, n, 'vmap', 1),
                 'full_dp': common.Bench(_full(config, True), image, n, 'vmap', 1),
                 'full_dp_no_draws': common.Bench(_full(config, True, 0.0), image, n, 'vmap', 1)}
      common.compile_all(list(benches.values()))
      for bench in benches.values():
        bench.warm()
      times = {name: [] for name in benches}
      for _ in range(args.repeats):
        for name, bench in benches.items():
          times[name].append(bench.time(plain.block))
      t = {k: statistics.median(v) for k, v in times.items()}
      common.emit({'model': model, 'n_clients': n, 'batch_size': config.data.batch_size,
                   'plain_step_ms': round(1e3 * t['plain'], 4),
                   'dp_step_ms': round(1e3 * t['dp'], 4),
                   'clip_only_step_ms': round(1e3 * t['clip_only'], 4),
                   'ratio_dp_vs_plain': round(t['dp'] / t['plain'], 3),
                   'ratio_clip_only_vs_plain': round(t['clip_only'] / t['plain'], 3),
                   'full_plain_step_ms': round(1e3 * t['full_plain'], 4),
                   'full_dp_step_ms': round(1e3 * t['full_dp'], 4),
                   'full_dp_no_draws_step_ms': round(1e3 * t['full_dp_no_draws'], 4),
                   'ratio_full_dp_vs_plain': round(t['full_dp'] / t['full_plain'], 3),
                   'repeats': args.repeats, 'loadavg': round(os.getloadavg()[0], 2)})


if __name__ == '__main__':
  main()
