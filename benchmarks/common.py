"""Shared set-up for the benchmarks: fixed threads, the machine record, timing, steps.

Import order matters: `setup(args)` sets XLA_FLAGS before JAX is imported, so
the scripts parse their flags first and import JAX (and mhd_jax) after.
"""

import argparse
import json
import os
import platform
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = {
    # name: (config.model overrides, image shape, private batch, public batch)
    'resnet18_cifar': ({'name': 'resnet18_cifar', 'width': 16}, (32, 32, 3), 32, 32),
    'default': ({}, (8, 8, 1), None, None),  # the default config's model, data shapes, batches
}
QUICK = {'resnet18_cifar': ({'name': 'resnet18_cifar', 'width': 4}, (8, 8, 3), 4, 4),
         'default': ({}, (8, 8, 1), 8, 8)}


def parser(doc: str, models=MODELS,
           default_models: str = 'resnet18_cifar,default') -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--models', default=default_models, help='comma-separated: ' + ', '.join(models))
  p.add_argument('--repeats', type=int, default=5, help='timed rounds; the median is reported')
  p.add_argument('--devices', type=int, default=1,
                 help='CPU devices to fake (XLA_FLAGS) and shard the clients over')
  p.add_argument('--quick', action='store_true', help='tiny shapes, few N, 1 repeat (smoke test)')
  p.add_argument('--no_malloc_tuning', action='store_true',
                 help='leave glibc malloc as it is (see `setup`)')
  return p


def step_cases(doc: str, default_n: str, default_models: str = 'resnet18_cifar,default'):
  """For the benchmarks that time steps: parses `parser`'s flags plus --n and --strategy
  (`--quick`: one repeat, N = 2), runs `setup`, prints the machine record, then yields
  (args, model name, config, image shape, N) for every model and client count."""
  p = parser(doc, default_models=default_models)
  p.add_argument('--n', default=default_n, help='comma-separated client counts')
  p.add_argument('--strategy', default='auto')
  args = p.parse_args()
  if args.quick:
    args.repeats, args.n = 1, '2'
  setup(args)
  emit(machine())
  for model in args.models.split(','):
    config, image = model_config(model, args.quick)
    for n in map(int, args.n.split(',')):
      yield args, model, config, image, n


# Keep freed memory in the process (one arena, no mmap, no trim) and back it with
# transparent huge pages. See `setup`.
MALLOC_TUNING = ('glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:'
                 'glibc.malloc.trim_threshold=68719476736')


def setup(args, platforms: str | None = 'cpu') -> None:
  """Fixes the configuration before JAX starts, re-running the script if it must.

  Threads: every core of the affinity mask, one XLA:CPU intra-op thread pool
  shared by `args.devices` devices. Memory: `GLIBC_TUNABLES=MALLOC_TUNING`
  (read when a process starts, hence the re-run). XLA:CPU allocates each
  step's temporaries afresh (about 110 MB per ResNet-18 client here), from a
  worker thread: glibc serves that from a fresh mmap and unmaps it after the
  step, so the kernel faults every page in again each step (about 250,000
  faults per step for 8 clients). One arena without mmap keeps the memory in
  the process, and huge pages cut TLB misses: together about 25% off the
  single-client step on this machine, and more as N grows.

  `platforms`: the JAX_PLATFORMS default ('cpu'); None leaves JAX its own
  choice (an accelerator where there is one).
  """
  if not args.no_malloc_tuning and MALLOC_TUNING not in os.environ.get('GLIBC_TUNABLES', ''):
    tunables = ':'.join(filter(None, [os.environ.get('GLIBC_TUNABLES', ''), MALLOC_TUNING]))
    os.environ['GLIBC_TUNABLES'] = tunables
    os.execv(sys.executable, [sys.executable] + sys.argv)
  cores = sorted(os.sched_getaffinity(0))
  os.sched_setaffinity(0, cores)
  flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
           if not f.startswith(('--xla_force_host_platform_device_count',
                                '--xla_cpu_multi_thread_eigen'))]
  flags += ['--xla_cpu_multi_thread_eigen=true',
            f'--xla_force_host_platform_device_count={args.devices}']
  os.environ['XLA_FLAGS'] = ' '.join(flags)
  if platforms:
    os.environ.setdefault('JAX_PLATFORMS', platforms)
  sys.path.insert(0, ROOT)


def machine() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  cpu = ''
  if os.path.exists('/proc/cpuinfo'):
    names = [l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')]
    cpu = names[0] if names else ''
  thp = ''
  if os.path.exists('/sys/kernel/mm/transparent_hugepage/enabled'):
    thp = open('/sys/kernel/mm/transparent_hugepage/enabled').read().strip()
  return {'machine': {
      'cpu': cpu or platform.processor(), 'cpu_count': os.cpu_count(),
      'affinity': len(os.sched_getaffinity(0)), 'jax': jax.__version__,
      'backend': jax.default_backend(), 'devices': [str(d) for d in jax.devices()],
      'xla_flags': os.environ.get('XLA_FLAGS', ''), 'python': platform.python_version(),
      'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''), 'transparent_hugepage': thp,
      'loadavg_at_start': [round(x, 2) for x in os.getloadavg()]}}


def emit(record: dict) -> None:
  print(json.dumps(record), flush=True)


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def model_config(name: str, quick: bool, **distill):
  """(config, image_shape): the default config with the benchmark's model and batch sizes."""
  from configs import default  # pylint: disable=g-import-not-at-top
  overrides, image, b, b_pub = (QUICK if quick else MODELS)[name]
  config = default.get_config()
  config.unlock()
  config.model.update(overrides)
  if b:
    config.data.batch_size, config.data.public_batch_size = b, b_pub
  config.update(distill)
  return config, image


class Bench:
  """A jitted step on fixed batches, timed in blocks of calls; `sparse`: the exchange on a
  neighbour table of `adjacency` (`programs.static_dynamics`), else dense."""

  def __init__(self, config, image, num_clients: int, strategy: str, devices: int,
               adjacency=None, num_classes: int = 10, batch=None, sparse: bool = False):
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from mhd_jax.placement import clients  # pylint: disable=g-import-not-at-top
    from mhd_jax.population import groups as groups_lib  # pylint: disable=g-import-not-at-top
    from mhd_jax.population import state as state_lib  # pylint: disable=g-import-not-at-top
    from mhd_jax.placement import layout as layout_lib  # pylint: disable=g-import-not-at-top
    self.jax = jax
    config = config.copy_and_resolve_references()
    config.num_clients = self.num_clients = num_clients
    specs = groups_lib.make_specs(config, num_classes)
    if adjacency is None:
      adjacency = np.ones((num_clients, num_clients), np.float32) - np.eye(num_clients)
    if batch is None:
      batch = random_batch(num_clients, config.data.batch_size, config.data.public_batch_size,
                           image, num_classes)
    state = state_lib.init_state(specs, image, jax.random.PRNGKey(0))
    self.strategy = clients.strategy_for(strategy, specs, image)
    layout = layout_lib.Layout.create([s.num_clients for s in specs],
                                      layout_lib.make_mesh(devices))
    self.state = layout.pad_state(state)
    self.batch = layout.place_batch(batch)
    self.rng, self.sparse = jax.random.PRNGKey(1), sparse
    self.lowered = self.make_step(specs, adjacency, config, layout).lower(
        self.state, self.batch, self.rng)
    self.step, self.compile_s, self.block = None, None, 1
    self.min_block, self.min_window_s = 1, 0.3

  def compile(self) -> 'Bench':
    """Compiles the step (XLA releases the GIL: benches can compile two at a time)."""
    t = time.perf_counter()
    self.step = self.lowered.compile()
    self.compile_s = time.perf_counter() - t
    m = self.step.memory_analysis()
    self.memory_mb = (m.temp_size_in_bytes + m.argument_size_in_bytes
                      + m.output_size_in_bytes - m.alias_size_in_bytes) / 2**20
    return self

  def release(self) -> None:
    self.step = self.lowered = self.state = self.batch = None

  def warm(self) -> 'Bench':
    """Runs twice (the first calls after compiling can be slow) and sizes the timing blocks."""
    self.run(1)
    per_step = self.time(1)
    # blocks of >= min_window_s against timer noise
    self.block = max(self.min_block, int(self.min_window_s / max(per_step, 1e-6)))
    return self

  def make_step(self, specs, adjacency, config, layout):
    """The run's step program (`programs.train_step`) as `(state, batch, rng) -> (state, metrics)`."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    from mhd_jax.run import programs  # pylint: disable=g-import-not-at-top
    step = programs.train_step(layout, specs, config, self.strategy)
    net = programs.static_dynamics(adjacency, self.sparse)  # the exchange on a table, or dense
    first_bad = np.zeros(adjacency.shape[0], np.int32)
    return self.jax.jit(lambda state, batch, rng: step(state, batch, rng, first_bad, net)[:2],
                        donate_argnums=0)

  def run(self, k: int) -> None:
    for _ in range(k):
      self.state, metrics = self.step(self.state, self.batch, self.rng)
    self.jax.block_until_ready((self.state, metrics))

  def time(self, k: int | None = None) -> float:
    """Seconds per step over a block of calls; `cpu_s`: the process's CPU seconds per step
    over it (every thread: on a shared machine, what the step cost rather than waited)."""
    k = k or self.block
    t, cpu = time.perf_counter(), time.process_time()
    self.run(k)
    self.cpu_s = (time.process_time() - cpu) / k
    return (time.perf_counter() - t) / k


def random_batch(num_clients: int, b: int, b_pub: int, image, num_classes: int) -> dict:
  """Normal images, uniform labels: N x b private examples and b_pub public images."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  return {'private': {'image': rng.standard_normal((num_clients, b, *image), np.float32),
                      'label': rng.integers(num_classes, size=(num_clients, b)).astype(np.int32)},
          'public': {'image': rng.standard_normal((b_pub, *image), np.float32)}}


def compile_all(benches) -> None:
  """Compiles the benches two at a time, largest first beside the rest (compiling is mostly
  single-threaded; timing starts only when all are compiled)."""
  from concurrent import futures  # pylint: disable=g-import-not-at-top
  order = sorted(benches, key=lambda b: -b.num_clients)  # program size grows with the clients
  with futures.ThreadPoolExecutor(2) as pool:
    list(pool.map(Bench.compile, order))
