"""What a changing network costs in the step: default dynamics against gossip and against lag.

    python benchmarks/dynamics_overhead.py

Three steps of the run's program (`programs.train_step`) on identical batches,
timed in alternating windows in one process (median of `--repeats`):

  static     the default dynamics: the fixed graph, every client every step, tau = 0;
  gossip     `dynamics.schedule='matching'`, `participation='bernoulli'` with
             availability 0.7: graph and participants drawn inside the step;
  lag        `dynamics.staleness=2`: targets from the lag buffer, one extra
             public forward per client (no backward) on the batch of step t + tau.

`ratio_gossip_vs_static` and `ratio_lag_vs_static` are the quotients of the
medians. Issue 15 asks the dynamic features to stay within 10% of static at
N = 8; the lag step is expected to add its extra public pass (docs/dynamics.md).
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

VARIANTS = {'static': {}, 'gossip': {'schedule': 'matching', 'participation': 'bernoulli',
                                     'availability': 0.7},
            'lag': {'staleness': 2}}


class DynamicBench(common.Bench):
  """The run's step with the dynamics the config draws (and, with lag, its buffers filled)."""

  def __init__(self, config, image, num_clients, strategy, devices, dynamics: dict):
    import numpy as np  # pylint: disable=g-import-not-at-top
    config = config.copy_and_resolve_references()
    config.num_clients = num_clients
    config.dynamics.update(dynamics)
    self.tau = config.dynamics.staleness
    batch = common.random_batch(num_clients, config.data.batch_size,
                                config.data.public_batch_size, image, 10)
    if self.tau:  # another public batch: the one of step t + tau
      batch['public_ahead'] = {'image': np.roll(batch['public']['image'], 1, axis=0)}
    super().__init__(config, image, num_clients, strategy, devices, batch=batch)

  def make_step(self, specs, adjacency, config, layout):
    import numpy as np  # pylint: disable=g-import-not-at-top
    from mhd_jax.network import graph_schedule  # pylint: disable=g-import-not-at-top
    from mhd_jax.network import participation  # pylint: disable=g-import-not-at-top
    from mhd_jax.run import programs  # pylint: disable=g-import-not-at-top
    del adjacency  # the config's topology, through its schedule
    if self.tau:  # Bench lowers with self.state after this returns: give it its lag buffers
      publics = np.stack([np.asarray(self.batch['public']['image'])] * self.tau)
      self.state = programs.initial_lag(layout, specs, config, self.strategy)(
          self.state, layout.replicate(publics))
    step = programs.train_step(layout, specs, config, self.strategy)
    dynamics = (graph_schedule.build(config), participation.build(config))
    first_bad = np.zeros(config.num_clients, np.int32)
    return self.jax.jit(lambda state, batch, rng: step(state, batch, rng, first_bad,
                                                       dynamics)[:2], donate_argnums=0)


def main():
  for args, model, config, image, n in common.step_cases(__doc__, '8', 'default'):
    benches = {k: DynamicBench(config, image, n, args.strategy, args.devices, v)
               for k, v in VARIANTS.items()}
    common.compile_all(list(benches.values()))
    for bench in benches.values():
      bench.warm()
    block = benches['static'].block
    times = {k: [] for k in benches}
    for _ in range(args.repeats):
      for k, bench in benches.items():
        times[k].append(bench.time(block))
    t = {k: statistics.median(v) for k, v in times.items()}
    common.emit({'model': model, 'n_clients': n, 'strategy': benches['static'].strategy,
                 'devices': args.devices,
                 **{f'{k}_step_ms': round(1e3 * v, 3) for k, v in t.items()},
                 'ratio_gossip_vs_static': round(t['gossip'] / t['static'], 3),
                 'ratio_lag_vs_static': round(t['lag'] / t['static'], 3),
                 'peak_rss_mb': round(common.peak_rss_mb(), 1),
                 'loadavg': round(os.getloadavg()[0], 2)})


if __name__ == '__main__':
  main()
