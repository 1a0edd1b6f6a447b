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
included). An `auto` row also has `chose` (the strategy its measurement
picked) and `measured_ms` (each candidate's fastest measured step); its
`compile_s` adds up the candidates' compiles and the measuring.
"""

import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_N = {'resnet18_cifar': '1,2,4,8,16,32', 'default': '1,2,4,8,16,32,64'}


class AutoBench:
  """`strategy='auto'` as a run does it (`mhd_jax.placement.autotune`): compile each candidate, time
  `config.strategy_measure_steps` steps of each, keep the fastest (no cache: always measures).

  `choose()` returns the winner's Bench, labelled 'auto'; its `compile_s` is the candidates'
  compile seconds added up plus the measuring seconds. With one candidate (a model without
  convolutions: 'vmap'), nothing is measured and the row shows that strategy.
  """

  def __init__(self, config, image, num_clients: int, devices: int):
    from mhd_jax.placement import autotune  # pylint: disable=g-import-not-at-top
    from mhd_jax.population import groups as groups_lib  # pylint: disable=g-import-not-at-top
    self.config, self.num_clients = config, num_clients
    auto = config.copy_and_resolve_references()
    auto.strategy = 'auto'
    strategies = autotune.candidates(auto, groups_lib.make_specs(auto, 10), image, 10**9)
    self.candidates = [common.Bench(config, image, num_clients, s, devices) for s in strategies]

  def choose(self) -> common.Bench:
    from mhd_jax.placement import autotune  # pylint: disable=g-import-not-at-top
    if len(self.candidates) == 1:  # nothing to measure (no convolutions): labelled as it runs
      return self.candidates[0]
    t = time.perf_counter()
    runs = {b.strategy: functools.partial(b.run, 1) for b in self.candidates}
    best, seconds = autotune.fastest(runs, self.config.strategy_measure_steps)
    measure_s = time.perf_counter() - t
    winner = next(b for b in self.candidates if b.strategy == best)
    for b in self.candidates:
      if b is not winner:
        b.release()
    winner.compile_s = sum(b.compile_s for b in self.candidates) + measure_s
    winner.strategy, winner.chose = 'auto', best
    winner.measured_ms = {k: round(1e3 * v, 3) for k, v in seconds.items()}
    return winner


def main():
  p = common.parser(__doc__)
  p.add_argument('--n', default='', help='comma-separated client counts (default per model: ' +
                 '; '.join(f'{k}: {v}' for k, v in DEFAULT_N.items()) + ')')
  p.add_argument('--strategies', default='auto',
                 help="comma-separated, from auto, vmap, hybrid, loop ('auto' measures the others "
                      'as a run does and times the one it picks)')
  args = p.parse_args()
  if args.quick:
    args.repeats, args.n = 1, args.n or '2'
  common.setup(args)
  common.emit(common.machine())
  for model in args.models.split(','):
    config, image = common.model_config(model, args.quick)
    single = common.Bench(config, image, 1, 'loop', 1)
    runs = [AutoBench(config, image, n, args.devices) if strategy == 'auto' else
            common.Bench(config, image, n, strategy, args.devices)
            for n in map(int, (args.n or DEFAULT_N[model]).split(','))
            for strategy in args.strategies.split(',')]
    common.compile_all([single] + [b for r in runs for b in getattr(r, 'candidates', [r])])
    runs = [r.choose() if isinstance(r, AutoBench) else r for r in runs]
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
                   **({'chose': stacked.chose, 'measured_ms': stacked.measured_ms}
                      if stacked.strategy == 'auto' else {}),
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
