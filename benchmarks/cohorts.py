"""A population streamed through the devices in cohorts of K against the resident step.

    python benchmarks/cohorts.py                  # ResNet-18 on the digits' shapes, K = 8
    python benchmarks/cohorts.py --n=8,64 --k=8 --strategy=loop

For each N, the resident step (all N clients in one program, `programs.train_step`)
and the streamed step (cohorts of K, `streaming.train_step`: pass 1, every
client's public outputs; pass 2, each cohort's update) are compiled, run once,
then timed in alternating windows (resident steps, then streamed steps of
about the same duration) so that a change of machine load hits both alike;
times are medians of `--repeats` rounds, ratios the median of each round's
ratio. One JSON object per line: the machine, then per (model, N):

  resident_memory_mb / streamed_memory_mb: XLA's buffers for one step
    (arguments, outputs, temporaries; streamed: the larger pass's, plus the
    next cohort's inputs in flight: what the devices hold at once);
  host_store_mb: every client's state on the host; rss_mb, peak_rss_mb: the
    process's (every program compiled so far is held to the end);
  resident_ms_per_client, streamed_ms_per_client, ratio_streamed_vs_resident (wall);
    cpu_ratio_streamed_vs_resident: the same over the process's CPU seconds (every thread:
    on a shared machine, what the steps cost rather than waited);
  pass1_ms_per_client, pass1_share: pass 1 alone (the second public forward,
    with the transfers of every client's variables), and its share of the
    streamed step.

Models: `resnet18_digits` is ResNet-18 (CIFAR stem, width 16) on the
embedded digits' shapes (8x8x1) with the batches of the N = 64 run
(docs/scale.md): private batch 4 (64 clients leave 4 to 23 private digits
each), public batch 64; `default` is the default config's MLP and batches.
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

MODELS = {'resnet18_digits': ({'name': 'resnet18_cifar', 'width': 16}, (8, 8, 1), 4, 64),
          'default': ({}, (8, 8, 1), None, None)}
QUICK = {'resnet18_digits': ({'name': 'resnet18_cifar', 'width': 4}, (8, 8, 1), 4, 4),
         'default': ({}, (8, 8, 1), 8, 8)}


class StreamedBench:
  """The streamed step of N clients in cohorts of K, on the same batch as the resident one."""

  def __init__(self, config, image, num_clients, k, strategy, devices, num_classes=10):
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from mhd_jax.placement import cohorts as cohorts_lib  # pylint: disable=g-import-not-at-top
    from mhd_jax.placement import layout as layout_lib  # pylint: disable=g-import-not-at-top
    from mhd_jax.population import groups as groups_lib  # pylint: disable=g-import-not-at-top
    from mhd_jax.run import programs  # pylint: disable=g-import-not-at-top
    from mhd_jax.run import streaming  # pylint: disable=g-import-not-at-top
    self.jax, self.num_clients = jax, num_clients
    config = config.copy_and_resolve_references()
    config.num_clients = num_clients
    specs = groups_lib.make_specs(config, num_classes)
    self.cohorts = cohorts_lib.Cohorts.create([num_clients], k, layout_lib.make_mesh(devices))
    self.state = self.cohorts.init_state(specs, image, jax.random.PRNGKey(0))
    self.batch = self.cohorts.place_batch(common.random_batch(
        num_clients, config.data.batch_size, config.data.public_batch_size, image, num_classes))
    self.dynamics = programs.static_dynamics(np.ones((num_clients,) * 2, np.float32)
                                             - np.eye(num_clients, dtype=np.float32))
    self.rng, self.first_bad = jax.random.PRNGKey(1), np.zeros(num_clients, np.int32)
    t = time.perf_counter()
    self.step = streaming.train_step(self.cohorts, specs, config, strategy).lower(
        self.state, self.batch, self.rng, self.first_bad, self.dynamics).compile()
    self.compile_s = time.perf_counter() - t
    self.memory_mb = self.step.memory_bytes() / 2**20
    self.host_mb = sum(x.nbytes for x in jax.tree.leaves(self.state)) / 2**20
    self.block = 1

  def run(self, k: int) -> None:
    for _ in range(k):
      self.state, metrics, self.first_bad = self.step(self.state, self.batch, self.rng,
                                                      self.first_bad, self.dynamics)
    self.jax.block_until_ready(metrics)

  def pass1(self, k: int) -> float:
    """Seconds per pass 1 alone (every client's public forward and transfers)."""
    t = time.perf_counter()
    for _ in range(k):
      out = self.step.pass1(self.state, self.batch, self.dynamics)
    self.jax.block_until_ready(out)
    return (time.perf_counter() - t) / k

  def time(self, k: int | None = None) -> float:
    """Seconds per step over a block of calls; `cpu_s` the process's CPU seconds per step."""
    k = k or self.block
    t, cpu = time.perf_counter(), time.process_time()
    self.run(k)
    self.cpu_s = (time.process_time() - cpu) / k
    return (time.perf_counter() - t) / k


def main():
  p = common.parser(__doc__, models=MODELS, default_models='resnet18_digits')
  p.add_argument('--n', default='8,16,32,64', help='comma-separated client counts')
  p.add_argument('--k', type=int, default=8, help='clients per cohort')
  p.add_argument('--strategy', default='loop', help="vmap | hybrid | loop (both steps)")
  args = p.parse_args()
  if args.quick:
    args.repeats, args.n, args.k = 1, '2,4', 2
  common.setup(args)
  common.emit(common.machine())
  for model in args.models.split(','):
    overrides, image, b, b_pub = (QUICK if args.quick else MODELS)[model]
    config, _ = common.model_config('default', args.quick)
    config.model.update(overrides)
    if b:
      config.data.batch_size, config.data.public_batch_size = b, b_pub
    for n in map(int, args.n.split(',')):
      resident = common.Bench(config, image, n, args.strategy, args.devices).compile()
      streamed = StreamedBench(config, image, n, args.k, args.strategy, args.devices)
      resident.warm()
      streamed.run(1)
      streamed.block = max(1, round(resident.block * resident.time(1) / streamed.time(1)))
      t_res, t_str, t_p1, c_res, c_str = [], [], [], [], []
      for _ in range(args.repeats):
        t_res.append(resident.time())
        c_res.append(resident.cpu_s)
        t_str.append(streamed.time())
        c_str.append(streamed.cpu_s)
        t_p1.append(streamed.pass1(streamed.block))
      res_s, str_s, p1_s = (statistics.median(t) for t in (t_res, t_str, t_p1))
      common.emit({
          'model': model, 'n_clients': n, 'k': args.k, 'cohort_width': streamed.cohorts.width,
          'strategy': args.strategy, 'devices': args.devices,
          'resident_ms_per_client': round(1e3 * res_s / n, 3),
          'streamed_ms_per_client': round(1e3 * str_s / n, 3),
          'ratio_streamed_vs_resident': round(statistics.median(
              s / r for r, s in zip(t_res, t_str)), 3),
          'cpu_ratio_streamed_vs_resident': round(statistics.median(
              s / r for r, s in zip(c_res, c_str)), 3),
          'pass1_ms_per_client': round(1e3 * p1_s / n, 3),
          'pass1_share': round(p1_s / str_s, 3),
          'resident_memory_mb': round(resident.memory_mb, 1),
          'streamed_memory_mb': round(streamed.memory_mb, 1),
          'host_store_mb': round(streamed.host_mb, 3),
          'rss_mb': round(_rss_mb(), 1), 'peak_rss_mb': round(common.peak_rss_mb(), 1),
          'resident_compile_s': round(resident.compile_s, 1),
          'streamed_compile_s': round(streamed.compile_s, 1),
          'loadavg': round(os.getloadavg()[0], 2)})
      resident.release()


def _rss_mb() -> float:
  """The process's resident memory now (Linux /proc), MB."""
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


if __name__ == '__main__':
  main()
