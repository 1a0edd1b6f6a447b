"""Where the neighbour table stops paying: the sparse exchange against the dense one as the
graph fills up (what `neighbours.AUTO_SHARE` is set from).

    python benchmarks/exchange_crossover.py | tee benchmarks/results/exchange_crossover.jsonl

For each N and degree d: a random regular graph of degree d (d = N - 1: the complete
graph), so every row of the neighbour table holds K = d + 1 clients, a share K / N of
the population. Both steps (`common.Bench`, the default config's model and
distillation, strategy `vmap`) are compiled in one process and timed in alternating
windows of equal length; `sparse_vs_dense` is the median over `--repeats` rounds of the
sparse step's time over the dense one's, `cpu_sparse_vs_dense` the same in the process's
CPU time (`common.Bench.time`: steadier on a shared machine). Below 1 the table is faster.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

DEGREES = {16: '2,4,6,8,10,12,15', 64: '4,8,12,16,24,32,48,63',
           256: '4,16,32,48,64,96,128,192,255'}


def main():
  p = common.parser(__doc__, default_models='default')
  p.add_argument('--n', default=','.join(map(str, DEGREES)), help='comma-separated client counts')
  p.add_argument('--degrees', default='', help='comma-separated degrees (default per N: ' +
                 '; '.join(f'{k}: {v}' for k, v in DEGREES.items()) + ')')
  args = p.parse_args()
  if args.quick:
    args.repeats, args.n, args.degrees = 1, '8', args.degrees or '2'
  common.setup(args)
  common.emit(common.machine())
  from mhd_jax.network import topology  # pylint: disable=g-import-not-at-top  # after setup
  for model in args.models.split(','):
    for n in map(int, args.n.split(',')):
      for d in map(int, (args.degrees or DEGREES[n]).split(',')):
        config, image = common.model_config(model, args.quick)
        config.update(num_clients=n, degree=d,
                      topology='complete' if d == n - 1 else 'random_regular')
        a = topology.build(config)
        benches = {e: common.Bench(config, image, n, 'vmap', 1, adjacency=a, sparse=e == 'sparse')
                   for e in ('sparse', 'dense')}
        common.compile_all(benches.values())
        block = max(b.warm().block for b in benches.values())
        wall, cpu = {e: [] for e in benches}, {e: [] for e in benches}
        for _ in range(args.repeats):
          for e, b in benches.items():
            wall[e].append(b.time(block))
            cpu[e].append(b.cpu_s)
        ratio = lambda t: round(statistics.median(s / d for s, d in zip(t['sparse'], t['dense'])),
                                3)
        common.emit({'model': model, 'n_clients': n, 'degree': d, 'width': d + 1,
                     'share': round((d + 1) / n, 4), 'topology': config.topology,
                     **{f'{e}_step_ms': round(1e3 * statistics.median(t), 3)
                        for e, t in wall.items()},
                     **{f'{e}_cpu_step_ms': round(1e3 * statistics.median(t), 3)
                        for e, t in cpu.items()},
                     'sparse_vs_dense': ratio(wall), 'cpu_sparse_vs_dense': ratio(cpu),
                     **{f'{e}_memory_mb': round(b.memory_mb, 1) for e, b in benches.items()},
                     'loadavg': round(os.getloadavg()[0], 2)})
        for b in benches.values():
          b.release()


if __name__ == '__main__':
  main()
