"""What the network draws cost per step: `weights_at` and `active_at`, jitted, alone.

    python benchmarks/dynamics_draws.py

One JSON line per (N, draw): the median over `--repeats` rounds of the time of
one call with a traced step (the step changes every call, nothing recompiles).
These are what a step that takes the network as an input adds at most when it
draws the network inside the jit; the step itself is timed by
`distill_overhead.py`.
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, common.ROOT)


def main():
  p = common.parser(__doc__, default_models='default')
  p.add_argument('--clients', default='8,64,256', help='comma-separated N')
  args = p.parse_args()
  common.setup(args)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from mhd_jax.network import graph_schedule  # pylint: disable=g-import-not-at-top
  from mhd_jax.network import participation  # pylint: disable=g-import-not-at-top

  common.emit(common.machine())
  sizes = [8] if args.quick else [int(n) for n in args.clients.split(',')]
  repeats, calls = (1, 5) if args.quick else (args.repeats, 200)
  for n in sizes:
    c = default.get_config()
    c.num_clients = n
    c.dynamics.failure_p, c.dynamics.cycle_graphs = 0.3, 'ring | chain'
    c.dynamics.availability = 0.5
    draws = []
    for kind in graph_schedule.SCHEDULES:
      c.dynamics.schedule = kind
      draws.append((f'schedule={kind}', graph_schedule.weights_at, graph_schedule.build(c)))
    c.dynamics.participation = 'bernoulli'
    draws.append(('participation=bernoulli', participation.active_at, participation.build(c)))
    for name, fn, tree in draws:
      jitted = jax.jit(fn)
      compile_start = time.perf_counter()
      jitted(tree, jnp.int32(1)).block_until_ready()
      compile_s = time.perf_counter() - compile_start
      rounds = []
      for r in range(repeats):
        start = time.perf_counter()
        for t in range(calls):
          out = jitted(tree, jnp.int32(2 + r * calls + t))
        out.block_until_ready()
        rounds.append((time.perf_counter() - start) / calls)
      common.emit({'n_clients': n, 'draw': name, 'us_per_step': round(statistics.median(rounds)
                                                                      * 1e6, 1),
                   'compile_s': round(compile_s, 3)})


if __name__ == '__main__':
  main()
