"""The MHD step on an accelerator: every strategy, throughput, memory, TFLOP/s.

    PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=.95 python benchmarks/accelerator.py \
        --out=/tmp/accel.jsonl
    python benchmarks/accelerator.py --models=resnet18 --n=1,8 --strategies=hybrid,vmap
    python benchmarks/accelerator.py --quick          # tiny CNN on the CPU, seconds

Shapes (`SHAPES`): the paper's (ResNet-18 and ResNet-34, ImageNet stem,
224 px, N = 1, 8, 16) and the CIFAR shape (ResNet-18, CIFAR stem, width 64,
32 px, N = 1, 8, 32); all bfloat16 compute, 128 private images per client and
128 public images per step, H = 4 heads, complete graph, the paper recipe of
`configs/imagenet_resnet18.py` (SGD with momentum, most-confident targets).

Timing follows `client_scaling.py`: after compiling (two programs at a time)
and warm calls, windows of N single-client steps (one client, plain program)
alternate with one window of stacked steps of the same count; `step_ms` and
`single_step_ms` are medians over `--repeats` windows (each ended by
`block_until_ready`), `ratio_vs_n_single` is the median over rounds of
stacked / (N x single). N = 1 is the single-client program itself (ratio 1).
`auto` does what a run does (`mhd_jax.placement.autotune.fastest`): it times its
compiled candidates (vmap, hybrid, loop) for `MEASURE_STEPS` steps each, and
its row repeats the timed row of the strategy it chose (`chose`, with the
milliseconds it measured, and `best_timed`: the fastest in the timed rows).

FLOPs are counted analytically (`count_flops`): 2 x the multiply-adds of every
convolution and matrix product in the traced forward pass of one training-mode
image, from the operands' shapes. A training step costs
`TRAIN_FACTOR` (3) x forward per image (the backward pass is about twice the
forward: gradients of activations and of weights) for each client's private
and public batches; the teachers are the students' own public outputs, so no
extra forward. Elementwise work, normalisation and pooling are not counted,
and neither is the unneeded input gradient of the first convolution, so
achieved TFLOP/s is a lower bound on useful work within a few percent.
(XLA's own cost analysis does not count convolutions on GPU: not used.)
`fraction_of_peak` divides by the device's dense bf16 peak (`PEAK_TFLOPS`).

Memory: JAX takes 75% of a GPU's memory by default, and 16 clients at 224 px
may need more (XLA:CPU assigns one ResNet-18 client's step 9.3 GB; bf16 on a
GPU should need less): raise XLA_PYTHON_CLIENT_MEM_FRACTION as above. A strategy that runs out of memory gives an `error` row; the rest go
on. `step_memory_mb` is XLA's buffer assignment for one step (arguments,
outputs, temporaries); `device_peak_mb` is the device allocator's peak so far
in the process (`memory_stats()`, GPU/TPU only; it only grows, rows come in
ascending N).

Output: the first line describes the machine; then one JSON row per
(model, N, strategy), printed and appended (flushed) to `--out` as soon as it
is measured, so a run killed at its time limit keeps its rows. `--budget_s`
bounds the whole run: compiling stops at 90% of it (what compiled is then
timed, the last 10% being kept for that), and when it runs out the remaining
rows are written as skipped and the process exits cleanly. A markdown table closes stdout (and is
written to `--out` + '.md').
"""

import concurrent.futures
import functools
import json
import math
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

START = time.monotonic()
RESERVE = 0.1  # of the budget, kept for timing what compiled when compiling runs late
TRAIN_FACTOR = 3  # forward + backward FLOPs per image, in units of the forward pass
STRATEGIES = ('vmap', 'hybrid', 'loop', 'auto')
AUTO_CANDIDATES = ('vmap', 'hybrid', 'loop')
MEASURE_STEPS = 3  # configs/default.py's strategy_measure_steps

# name: (config.model overrides, image shape, classes, default N, heads, private / public batch)
SHAPES = {
    'resnet18': ({'name': 'resnet18', 'width': 64, 'dtype': 'bfloat16'}, (224, 224, 3), 1000,
                 '1,8,16', 4, 128, 128),
    'resnet34': ({'name': 'resnet34', 'width': 64, 'dtype': 'bfloat16'}, (224, 224, 3), 1000,
                 '1,8,16', 4, 128, 128),
    'resnet18_cifar': ({'name': 'resnet18_cifar', 'width': 64, 'dtype': 'bfloat16'},
                       (32, 32, 3), 100, '1,8,32', 4, 128, 128),
    # --quick: one 3x3 convolution (3 -> 4 channels), 2x2 average pool, Dense(8), 2 heads of 10:
    # per 8x8x3 image, 8*8*4*27 + 64*8 + 2*8*10 = 7584 multiply-adds, 15168 FLOPs forward.
    'tiny_cnn': ({'name': 'cnn', 'width': 4, 'depth': 1, 'dtype': 'float32'}, (8, 8, 3), 10,
                 '1,2', 2, 4, 4),
}

# Dense (no sparsity) bf16 peak TFLOP/s by `device_kind` prefix, first match wins. Sources:
# NVIDIA H100 datasheet (SXM 989.4, PCIe 756, NVL 835; the 1,979 figure is with sparsity); H200
# datasheet (989, same tensor cores as H100 SXM); A100 datasheet (312); Google Cloud TPU
# system-architecture pages: v4 275, v5e 197, v5p 459, v6e (Trillium) 918.
PEAK_TFLOPS = (
    ('NVIDIA H100 PCIe', 756.0), ('NVIDIA H100 NVL', 835.0), ('NVIDIA H100', 989.4),
    ('NVIDIA H200', 989.4), ('NVIDIA A100', 312.0), ('TPU v4', 275.0), ('TPU v5 lite', 197.0),
    ('TPU v5e', 197.0), ('TPU v5p', 459.0), ('TPU v5', 459.0), ('TPU v6 lite', 918.0),
    ('TPU v6e', 918.0),
)


def _sig(x: float, digits: int = 4) -> float:
  """`x` to `digits` significant figures (the quick shapes' TFLOP/s are tiny)."""
  return float(f'{x:.{digits}g}')


def peak_tflops(device_kind: str) -> float | None:
  """Dense bf16 peak of a device, or None where we do not know it."""
  return next((v for k, v in PEAK_TFLOPS if device_kind.startswith(k)), None)


def _sub_jaxprs(value):
  """The jaxprs inside an equation parameter (pjit, custom_jvp, remat, cond branches...)."""
  if hasattr(value, 'jaxpr') and hasattr(value.jaxpr, 'eqns'):  # ClosedJaxpr
    yield value.jaxpr
  elif hasattr(value, 'eqns'):  # Jaxpr
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)


def _macs(jaxpr) -> int:
  """Multiply-adds of the convolutions and matrix products in a jaxpr, nested ones included.

  conv_general_dilated: every output element sums kernel-window x input-features/groups
  products, i.e. prod(out) x prod(kernel) / out_features. dot_general: prod(out) x the
  product of the contracted sizes.
  """
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'conv_general_dilated':
      kernel = eqn.invars[1].aval.shape
      out_features = kernel[eqn.params['dimension_numbers'].rhs_spec[0]]
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(kernel) // out_features
    elif name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
    inner = sum(_macs(j) for v in eqn.params.values() for j in _sub_jaxprs(v))
    total += inner * (eqn.params.get('length', 1) if name == 'scan' else 1)
  return total


def count_flops(fn, *args) -> int:
  """2 x multiply-adds of `fn(*args)`, from its jaxpr (traced abstractly, nothing runs)."""
  import jax  # pylint: disable=g-import-not-at-top
  return 2 * _macs(jax.make_jaxpr(fn)(*args).jaxpr)


def forward_flops_per_image(model, image) -> int:
  """FLOPs of one training-mode forward pass of `model` on one image (all heads)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  x = jax.ShapeDtypeStruct((1, *image), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(x.shape),
                                                train=False))
  return count_flops(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']),
                     variables, x)


def make_config(name: str):
  """(config, image shape, classes, heads) for a shape of `SHAPES`."""
  from configs import default  # pylint: disable=g-import-not-at-top
  from configs import imagenet_resnet18  # pylint: disable=g-import-not-at-top
  model, image, classes, _, heads, b, b_pub = SHAPES[name]
  config = (default if name == 'tiny_cnn' else imagenet_resnet18).get_config()
  config.unlock()
  config.model.update(model)
  config.num_heads = heads
  config.data.batch_size, config.data.public_batch_size = b, b_pub
  config.data.image_size = image[0]
  return config, image, classes


class Run:
  """The rows of one run: printed, appended to `--out` at once, kept for the final table."""

  def __init__(self, args):
    self.out, self.rows = args.out, []
    self.budget = args.budget_s
    self.deadline = START + args.budget_s

  def left(self) -> float:
    return self.deadline - time.monotonic()

  def emit(self, record: dict) -> None:
    common.emit(record)
    if self.out:
      with open(self.out, 'a') as f:
        f.write(json.dumps(record) + '\n')
        f.flush()
    if 'model' in record:
      self.rows.append(record)

  def finish(self, todo) -> None:
    """Prints (and writes) the table, rows in the order asked for (`todo`: (model, N, strategy))."""
    order = {key: i for i, key in enumerate(todo)}
    table = markdown(sorted(self.rows, key=lambda r: order.get(
        (r['model'], r['n_clients'], r['strategy']), len(order))))
    print(table, flush=True)
    if self.out:
      with open(self.out + '.md', 'w') as f:
        f.write(table)


def markdown(rows) -> str:
  cols = ('model', 'n_clients', 'strategy', 'step_ms', 'images_per_s', 'ratio_vs_n_single',
          'tflops', 'fraction_of_peak', 'compile_s', 'step_memory_mb', 'device_peak_mb')
  lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
  for r in rows:
    if 'skipped' in r or 'error' in r:
      note = r.get('skipped') or 'error: ' + r['error'][:80]
      lines.append(f"| {r['model']} | {r['n_clients']} | {r['strategy']} | {note} |"
                   + ' |' * (len(cols) - 4))
      continue
    strategy = r['strategy'] + (f" (= {r['chose']})" if r.get('chose') else '')
    vals = [r['model'], r['n_clients'], strategy] + [r.get(c) for c in cols[3:]]
    lines.append('| ' + ' | '.join('–' if v is None else str(v) for v in vals) + ' |')
  return '\n'.join(lines) + '\n'


def device_peak_mb():
  import jax  # pylint: disable=g-import-not-at-top
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  # unsupported on some backends
    stats = {}
  peak = stats.get('peak_bytes_in_use')
  return None if peak is None else round(peak / 2**20, 1)


# Building a Bench traces its step; 'hybrid' swaps a global JAX batching rule while it
# traces, so a 'vmap' traced beside it in another thread would get per-client convolutions.
# Tracing is one at a time; compiling (most of the time) overlaps.
_TRACING = threading.Lock()


def _build_and_compile(make):
  """A compiled Bench whose state and batch wait on the host (`_unpark` before timing)."""
  import jax  # pylint: disable=g-import-not-at-top
  with _TRACING:
    bench = make()
  bench.compile()
  # Benches of one group wait for each other: on the device their copies of the state and the
  # batch (about 8 GB at 16 ResNet-18 clients) would crowd the step being timed.
  bench.parked = jax.tree.map(lambda a: a.sharding, (bench.state, bench.batch))
  bench.state, bench.batch = jax.device_get((bench.state, bench.batch))
  return bench


def _unpark(bench) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  if bench.parked is not None:
    bench.state, bench.batch = jax.device_put((bench.state, bench.batch), bench.parked)
    bench.parked = None


def compile_group(run, makers: dict) -> tuple[dict, bool]:
  """Builds and compiles benches two at a time, within the budget.

  `makers`: key -> (client count, strategy, a function that builds the
  Bench: init, trace and lower, which for 16 clients takes a while too).
  Returns (key -> compiled Bench or the exception it raised, whether all
  finished). Compiling stops `RESERVE` of the budget before its end, so that
  what compiled can still be timed; the rest are left compiling in their
  threads (the caller times what it has, then exits).
  """
  pool = concurrent.futures.ThreadPoolExecutor(2)
  # The single-client program first (every row needs it), then longest first (program
  # size grows with the clients; loop > vmap > hybrid at one N, as issue 12 measured on
  # an H100), so that the two threads finish together.
  rank = {'single': -1, 'loop': 0, 'vmap': 1, 'hybrid': 2}
  order = sorted(makers, key=lambda k: (makers[k][1] != 'single', -makers[k][0],
                                          rank.get(makers[k][1], 3)))
  futures = {k: pool.submit(_build_and_compile, makers[k][2]) for k in order}
  done, pending = concurrent.futures.wait(futures.values(),
                                          timeout=max(run.left() - RESERVE * run.budget, 0))
  pool.shutdown(wait=False)
  return {k: f.exception() or f.result() for k, f in futures.items() if f in done}, not pending


def measure(bench, single, repeats: int):
  """(stacked s, single s, ratio): medians over alternating windows of equal step counts."""
  n, t_single, t_stacked = bench.num_clients, [], []
  for _ in range(repeats):
    t_single.append(single.time(n * bench.block))
    t_stacked.append(bench.time())
  ratio = statistics.median(b / (n * a) for a, b in zip(t_single, t_stacked))
  return statistics.median(t_stacked), statistics.median(t_single), ratio


def main():
  p = common.parser(__doc__, SHAPES, 'resnet18,resnet34,resnet18_cifar')
  p.add_argument('--n', default='', help='comma-separated client counts (default per shape: ' +
                 '; '.join(f'{k}: {v[3]}' for k, v in SHAPES.items()) + ')')
  p.add_argument('--strategies', default='hybrid,vmap,loop,auto',
                 help='comma-separated, from ' + ', '.join(STRATEGIES) + ', measured in that order')
  p.add_argument('--budget_s', type=float, default=540,
                 help='seconds for the whole run; rows left after it are skipped')
  p.add_argument('--out', default='', help='also append every JSON line to this file')
  p.add_argument('--fused', action='store_true',
                 help='config.model.fused_passes = True: one model call per client on '
                      '[private; public] with per-segment batch statistics')
  args = p.parse_args()
  if args.quick:
    args.repeats = 1
    if args.models == p.get_default('models'):
      args.models = 'tiny_cnn'
  models, strategies = args.models.split(','), args.strategies.split(',')
  bad = [m for m in models if m not in SHAPES] + [s for s in strategies if s not in STRATEGIES]
  try:
    ns = [int(n) for n in args.n.split(',')] if args.n else []
  except ValueError:
    ns = [0]
  if bad or any(n < 1 for n in ns) or args.budget_s <= 0:
    p.error(f'unknown models/strategies {bad} (models: {", ".join(SHAPES)}; strategies: '
            f'{", ".join(STRATEGIES)}), or --n / --budget_s not positive')
  args.no_malloc_tuning = args.no_malloc_tuning or not args.quick  # CPU-only tuning
  common.setup(args, platforms='cpu' if args.quick else None)
  import jax  # pylint: disable=g-import-not-at-top
  run = Run(args)
  kind = jax.devices()[0].device_kind
  machine = common.machine()
  machine['machine'].update(device_kind=kind, peak_bf16_tflops=peak_tflops(kind),
                            flops='analytic: 2 x multiply-adds of convolutions and matmuls, '
                                  f'training step = {TRAIN_FACTOR} x forward')
  run.emit(machine)
  todo = [(m, n, s) for m in models
          for n in (ns or [int(x) for x in SHAPES[m][3].split(',')])
          for s in (['single'] if n == 1 else strategies)]
  for model in models:
    if not measure_model(run, args, model, [t for t in todo if t[0] == model]):
      done = {(r['model'], r['n_clients'], r['strategy']) for r in run.rows}
      for m, n, s in todo:
        if (m, n, s) not in done:
          run.emit({'model': m, 'n_clients': n, 'strategy': s,
                    'skipped': f'budget of {args.budget_s:.0f} s spent'})
      run.finish(todo)
      os._exit(0)  # compiles may still run in threads: leave without waiting for them
  run.finish(todo)


def measure_model(run, args, model, rows) -> bool:
  """Emits the rows of one shape, N by N; False when the budget ran out.

  The single-client program compiles beside the first group of stacked ones
  (the N = 1 row comes first all the same: nothing is timed before both are
  compiled).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from mhd_jax.placement import clients  # pylint: disable=g-import-not-at-top
  from mhd_jax.population import groups as groups_lib  # pylint: disable=g-import-not-at-top
  config, image, classes = make_config(model)
  config.model.fused_passes = args.fused
  b, b_pub = config.data.batch_size, config.data.public_batch_size
  config.num_clients = 1
  specs = groups_lib.make_specs(config, classes)
  flops_fwd = forward_flops_per_image(specs[0].model, image)
  peak = peak_tflops(jax.devices()[0].device_kind)
  base = {'model': model, 'image': list(image), 'dtype': config.model.dtype,
          'batch_private': b, 'batch_public': b_pub, 'heads': config.num_heads,
          'fused_passes': args.fused,
          'classes': classes, 'forward_gflop_per_image': _sig(flops_fwd / 1e9),
          'forward_flop_per_image': flops_fwd}

  def bench(n, strategy, batch):
    x = common.Bench(config, image, n, strategy, args.devices, num_classes=classes, batch=batch)
    x.min_block, x.min_window_s = (1, 0.3) if args.quick else (2, 0.5)
    return x

  def metrics(x, single, n):
    """The measured fields of a row (x is single: the N = 1 row)."""
    if x is single:
      stacked_s = single_s = statistics.median(single.time() for _ in range(args.repeats))
      ratio = 1.0
    else:
      stacked_s, single_s, ratio = measure(x, single, args.repeats)
    train_flop = TRAIN_FACTOR * flops_fwd * n * (b + b_pub)
    tflops = train_flop / stacked_s / 1e12
    return {'step_ms': _sig(1e3 * stacked_s, 5), 'single_step_ms': _sig(1e3 * single_s, 5),
            'ratio_vs_n_single': round(ratio, 3),
            'images_per_s': round(n * (b + b_pub) / stacked_s, 1),
            'train_tflop_per_step': _sig(train_flop / 1e12), 'tflops': _sig(tflops),
            'fraction_of_peak': None if peak is None else _sig(tflops / peak, 3),
            'compile_s': round(x.compile_s, 1), 'step_memory_mb': round(x.memory_mb, 1),
            'device_peak_mb': device_peak_mb(), 'timed_steps': x.block * args.repeats}

  single = None
  ns = sorted({r[1] for r in rows})
  for n in [n for n in ns if n > 1] or [1]:
    if run.left() <= 0:
      return False
    group = [r[2] for r in rows if r[1] == n]
    resolved = {s: clients.strategy_for(s, specs, image) for s in group if s not in ('single', 'auto')}
    if 'auto' in group:  # auto measures its candidates as a run does: compile them all
      resolved.update({c: c for c in AUTO_CANDIDATES if c != 'hybrid' or clients.hybrid_available()})
    makers = {}
    if n > 1:
      batch = common.random_batch(n, b, b_pub, image, classes)
      makers = {s: (n, s, functools.partial(bench, n, s, batch))
                for s in dict.fromkeys(resolved.values())}
    first = single is None
    if first:
      makers['single'] = (1, 'single', functools.partial(bench, 1, 'loop', None))
    benches, complete = compile_group(run, makers)
    if first:
      if 'single' not in benches:
        return False
      single = benches.pop('single')
      if isinstance(single, Exception):  # nothing to compare with: report the shape as failed
        for _, m, strategy in rows:
          run.emit({**base, 'n_clients': m, 'strategy': strategy, 'error': repr(single)[:500]})
        return True
      _unpark(single)
      single.warm()
      if 1 in ns:
        run.emit({**base, 'n_clients': 1, 'strategy': 'single', **metrics(single, single, 1)})
    if n == 1:
      break
    measured = {}
    timed = [s for s in dict.fromkeys(resolved.values()) if s not in group]
    for strategy in [g for g in group if g != 'auto'] + timed:
      row = {**base, 'n_clients': n, 'strategy': strategy}
      s = resolved[strategy]
      if s in measured:
        run.emit({**row, **measured[s]})
        continue
      x = benches.get(s)
      if x is None:  # still compiling: the budget is spent (written as skipped at the end)
        continue
      if isinstance(x, Exception):  # building or compiling it failed (e.g. out of memory)
        run.emit({**row, 'error': repr(x)[:500]})
        continue
      try:
        _unpark(x)
        x.warm()
        per_round = x.block * x.time(1) + n * x.block * single.time(1)
        if run.left() < args.repeats * per_round + 1:
          return False
        measured[s] = metrics(x, single, n)
        if not complete:
          measured[s]['timing_note'] = 'timed while other programs were still compiling'
        run.emit({**row, **measured[s]})
      except Exception as e:  # pylint: disable=broad-except  # e.g. out of memory
        run.emit({**row, 'error': repr(e)[:500]})
        benches[s] = e  # for the auto row
      finally:
        if 'auto' not in group:
          x.release()
    if 'auto' in group:
      _auto_row(run, {**base, 'n_clients': n, 'strategy': 'auto'}, benches, measured)
    if not complete:
      return False
  return True


def _auto_row(run, row, benches, measured) -> None:
  """`strategy='auto'` as a run does it: `autotune.fastest` over the compiled candidates
  (`MEASURE_STEPS` steps each), then the winner's timed row with the choice and the
  measured milliseconds; the candidates are released after."""
  from mhd_jax.placement import autotune  # pylint: disable=g-import-not-at-top
  ok = {s: b for s, b in benches.items() if s in measured and not isinstance(b, Exception)}
  try:
    if ok:
      for b in ok.values():
        _unpark(b)
      best, seconds = autotune.fastest({s: functools.partial(b.run, 1) for s, b in ok.items()},
                                       MEASURE_STEPS)
      run.emit({**row, **measured[best], 'chose': best,
                'measured_ms': {k: round(1e3 * v, 3) for k, v in seconds.items()},
                'best_timed': min(measured, key=lambda s: measured[s]['step_ms'])})
  finally:
    for b in benches.values():
      if not isinstance(b, Exception) and b is not None:
        b.release()


if __name__ == '__main__':
  main()
