"""What distillation costs: the MHD step against the isolated step on identical batches.

    python benchmarks/distill_overhead.py

The MHD step is the default config's (complete graph, 3 heads, most-confident
targets); the isolated step is the same step with an all-zero adjacency (the
project's isolated baseline, docs/algorithm.md): every client still runs its public
pass, nobody distils. Both run on the same batches, timed in alternating
windows in one process (median of `--repeats`). `ratio_mhd_vs_isolated` is
what the targets and distillation losses add: teachers are the stop-gradient
of the students' own public outputs, so they cost no extra model evaluation.

For scale, `ratio_mhd_vs_private_only` compares with a step that never sees
the public batch (cross-entropy on the private batch only): the difference is
the public pass, which MHD needs as its input (the outputs the clients send).
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position


class PrivateOnly(common.Bench):
  """Cross-entropy on the private batch only: no public pass, no distillation."""

  def make_step(self, specs, adjacency, config, layout):
    import jax  # pylint: disable=g-import-not-at-top
    from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
    import optax  # pylint: disable=g-import-not-at-top
    from mhd_jax.algorithm import losses  # pylint: disable=g-import-not-at-top
    from mhd_jax.placement import clients  # pylint: disable=g-import-not-at-top
    from mhd_jax.population import state as state_lib  # pylint: disable=g-import-not-at-top
    from mhd_jax import models  # pylint: disable=g-import-not-at-top
    del adjacency, config
    (spec,) = layout.padded_specs(specs)
    strategy = self.strategy

    def client_step(params, stats, opt, x, y):
      def loss(params):
        logits, _, new_stats = models.forward(spec.model, params, stats, x, train=True)
        return losses.cross_entropy(logits[0], y), new_stats
      grads, new_stats = jax.grad(loss, has_aux=True)(params)
      upd, opt = spec.tx.update(grads, opt, params)
      return optax.apply_updates(params, upd), new_stats, opt

    def per_device(groups, private):
      (g,), (priv,) = groups, private
      p, s, o = clients.map_clients(client_step, strategy, g.params, g.batch_stats, g.opt_state,
                                priv['image'], priv['label'])
      return (state_lib.Group(p, s, o),)

    per_device = jax.shard_map(per_device, mesh=layout.mesh, in_specs=P('clients'),
                               out_specs=P('clients'))

    def train_step(state, batch, rng):
      del rng
      return state_lib.TrainState(step=state.step + 1,
                            groups=per_device(state.groups, batch['private'])), {}

    return jax.jit(train_step, donate_argnums=0)


def main():
  for args, model, config, image, n in common.step_cases(__doc__, '4,8'):
    import numpy as np  # pylint: disable=g-import-not-at-top  # after common.setup
    mhd = common.Bench(config, image, n, args.strategy, args.devices)
    isolated = common.Bench(config, image, n, args.strategy, args.devices,
                            adjacency=np.zeros((n, n), np.float32))
    private = PrivateOnly(config, image, n, args.strategy, args.devices)
    common.compile_all([mhd, isolated, private])
    for bench in (mhd, isolated, private):
      bench.warm()
    times = {'mhd': [], 'isolated': [], 'private': []}
    for _ in range(args.repeats):
      for name, bench in (('mhd', mhd), ('isolated', isolated), ('private', private)):
        times[name].append(bench.time(mhd.block))
    t = {k: statistics.median(v) for k, v in times.items()}
    common.emit({'model': model, 'n_clients': n, 'strategy': mhd.strategy,
                 'devices': args.devices, 'mhd_step_ms': round(1e3 * t['mhd'], 3),
                 'isolated_step_ms': round(1e3 * t['isolated'], 3),
                 'private_only_step_ms': round(1e3 * t['private'], 3),
                 'ratio_mhd_vs_isolated': round(t['mhd'] / t['isolated'], 3),
                 'ratio_mhd_vs_private_only': round(t['mhd'] / t['private'], 3),
                 'peak_rss_mb': round(common.peak_rss_mb(), 1),
                 'loadavg': round(os.getloadavg()[0], 2)})


if __name__ == '__main__':
  main()
