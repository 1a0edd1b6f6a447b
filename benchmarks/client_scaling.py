"""Step time of the stacked MHD step against N single-client steps.

    python benchmarks/client_scaling.py                      # the README table
    python benchmarks/client_scaling.py --strategies=vmap,hybrid,loop --n=4 --models=resnet18_cifar

For each model and N, the stacked step (all N clients in one jitted step,
complete graph, the default config's distillation) and the single-client
step (one client, the plain program: strategy 'loop' with N = 1) are timed
in the same process, after compiling and one warm call, in alternating
windows of equal length (N single-client steps, then one stacked step), so
that other processes' load hits both alike; each time is the median of
`--repeats` rounds. Prints one JSON object per line:
first the machine, then one row per (model, N, strategy) with `step_ms` and
`single_step_ms` (medians), `ratio_vs_n_single` (the median over rounds of
stacked step time / (N x single-client step time), each round's two windows
side by side), `compile_s` (programs compile two at a time, before any
timing), `step_memory_mb` (XLA's buffers for one step: arguments, outputs,
temporaries) and `peak_rss_mb` (the process's peak so far, compiling
included).
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_N = {'resnet18_cifar': '1,2,4,8,16,32', 'default': '1,2,4,8,16,32,64'}


def main():
  p = common.parser(__doc__)
  p.add_argument('--n', default='', help='comma-separated client counts (default per model: ' +
                 '; '.join(f'{k}: {v}' for k, v in DEFAULT_N.items()) + ')')
  p.add_argument('--strategies', default='auto', help='comma-separated, from auto, vmap, hybrid, loop')
  args = p.parse_args()
  if args.quick:
    args.repeats, args.n = 1, args.n or '2'
  common.setup(args)
  common.emit(common.machine())
  for model in args.models.split(','):
    config, image = common.model_config(model, args.quick)
    single = common.Bench(config, image, 1, 'loop', 1)
    runs = [common.Bench(config, image, n, strategy, args.devices)
            for n in map(int, (args.n or DEFAULT_N[model]).split(','))
            for strategy in args.strategies.split(',')]
    common.compile_all([single] + runs)
    single.warm()
    for stacked in runs:
      n = stacked.num_clients
      stacked.warm()
      t_single, t_stacked = [], []
      for _ in range(args.repeats):
        # N single-client steps, then one stacked step of about the same duration: a change
        # of machine load (other processes) hits both alike.
        t_single.append(single.time(n * stacked.block))
        t_stacked.append(stacked.time())
      single_s, stacked_s = statistics.median(t_single), statistics.median(t_stacked)
      ratio = statistics.median(b / (n * a) for a, b in zip(t_single, t_stacked))
      common.emit({'model': model, 'n_clients': n, 'strategy': stacked.strategy,
                   'devices': args.devices, 'step_ms': round(1e3 * stacked_s, 3),
                   'single_step_ms': round(1e3 * single_s, 3),
                   'ratio_vs_n_single': round(ratio, 3),
                   'compile_s': round(stacked.compile_s, 1),
                   'step_memory_mb': round(stacked.memory_mb, 1),
                   'peak_rss_mb': round(common.peak_rss_mb(), 1),
                   'loadavg': round(os.getloadavg()[0], 2)})
      stacked.release()


if __name__ == '__main__':
  main()
