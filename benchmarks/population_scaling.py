"""Step time and memory against the population size N, sparse and dense exchange.

    python benchmarks/population_scaling.py | tee benchmarks/results/population_scaling.jsonl
    python benchmarks/population_scaling.py --report=benchmarks/results/population_scaling.jsonl

Each case (model, graph, N, exchange) runs in a fresh process, so its `peak_rss_mb`
is its own: the run's step (`programs.train_step` through `common.Bench`, strategy
`vmap`) on the graph `topology.build` gives (`GRAPHS`), with the targets mixed over
every client (`dense`: [S, H, B, S]) or over the graph's neighbour table (`sparse`:
[S, H, B, K], K = `width`, the largest degree + 1). Before timing, a case that cannot
fit is skipped (`skipped` says why): the exchange's own lower bound
(`neighbours.fits`), then XLA's step memory against the memory available; a larger N
of the same model, graph and exchange is then skipped too.

Timing: windows of the case's steps (each at least 0.3 s, ended by
`block_until_ready`) alternate with windows of the same length of the 16-client step
of the same model, graph and exchange, compiled in the same process; `--repeats`
rounds. Times are medians over rounds, in wall time (`step_ms`) and in the process's
CPU time over all its threads (`cpu_step_ms`): this machine's 2 cores are shared, and
under a load average of 20 a window's wall time varies by 3x, its CPU time by about
10%. `per_client_vs_16` and `cpu_per_client_vs_16` are the medians over rounds of the
case's time per client over the 16-client step's in the same round.

Rows: both times and per client (/ N), `compile_s` (XLA's compile of the step, tracing
excluded), `step_memory_mb` (XLA's buffers for one step and device: arguments,
outputs, temporaries), `peak_rss_mb`, the load average when the case ends; with
`--devices` > 1, `collectives`: every cross-device op of the compiled step with its
result's shape and bytes. `--report` prints the markdown table of a results file and
draws `docs/img/population_scaling.png`.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

MODELS = {'default': common.MODELS['default'],  # the digits MLP
          'mnist1d_cnn': ({'name': 'mnist1d_cnn'}, (40, 1), None, None)}
QUICK = {'default': common.QUICK['default'],
         'mnist1d_cnn': ({'name': 'mnist1d_cnn'}, (40, 1), 8, 8)}
GRAPHS = {'ring': {'topology': 'ring'},
          'random_regular': {'topology': 'random_regular', 'degree': 4},
          'small_world': {'topology': 'small_world', 'degree': 4},
          'complete': {'topology': 'complete'}}
REF_N = 16  # rows compare their time per client with this N's (same model, graph, exchange)
PNG = os.path.join(common.ROOT, 'docs', 'img', 'population_scaling.png')


def available_bytes() -> int:
  """The memory the kernel could give this process now (MemAvailable: the machine is shared)."""
  with open('/proc/meminfo') as f:
    return next(int(l.split()[1]) * 1024 for l in f if l.startswith('MemAvailable'))


class Case:
  """One model, graph, N and exchange: its config, graph and the width of its candidates."""

  def __init__(self, spec: str, quick: bool, devices: int = 1):
    from mhd_jax.network import neighbours, topology  # pylint: disable=g-import-not-at-top
    self.model, self.graph, n, self.exchange = spec.split(':')
    self.n, self.quick, self.devices = int(n), quick, devices
    self.config, self.image = common.model_config(self.model, quick)
    self.config.update({**GRAPHS[self.graph], 'num_clients': self.n})
    self.adjacency = topology.build(self.config)
    self.sparse = self.exchange == 'sparse'
    self.table_width = neighbours.build([self.adjacency])[0].width
    self.width = self.table_width if self.sparse else self.n  # each client's candidates

  def row(self) -> dict:
    return {'model': self.model, 'graph': self.graph, 'n_clients': self.n,
            'exchange': self.exchange, 'width': self.width}

  def too_big(self) -> str | None:
    """Why the exchange cannot fit, from its lower bound before anything compiles (or None)."""
    from mhd_jax.network import neighbours  # pylint: disable=g-import-not-at-top
    return neighbours.fits(self.sparse, self.n, self.table_width, self.config.num_heads,
                           self.config.data.public_batch_size, 10, available_bytes())

  def bench(self) -> common.Bench:
    return common.Bench(self.config, self.image, self.n, 'vmap', self.devices,
                        adjacency=self.adjacency, sparse=self.sparse)


# One cross-device op of a compiled step: its result's type and shape, and the op.
COLLECTIVE = re.compile(r'= (\w+)\[([\d,]*)\]\S* (all-gather|all-reduce|all-to-all|'
                        r'collective-permute|reduce-scatter)(?:-start)?\(')
BYTES = {'f32': 4, 's32': 4, 'u32': 4, 'bf16': 2, 'f16': 2, 'pred': 1, 's8': 1, 'u8': 1}


def collectives(hlo: str) -> list[dict]:
  """The cross-device ops in a compiled step's HLO: op, result shape and the result's bytes (an
  all-gather over D devices brings each device (D - 1) / D of them)."""
  out = []
  for dtype, dims, op in COLLECTIVE.findall(hlo):
    shape = [int(d) for d in dims.split(',') if d]
    out.append({'op': op, 'shape': f'{dtype}{shape}',
                'bytes': BYTES[dtype] * int(np.prod(shape, dtype=np.int64))})
  return out


def measure(case: Case, repeats: int) -> dict:
  """The case's row: compiled, checked against the memory available, timed (beside the
  16-client step of its model, graph and exchange)."""
  problem = case.too_big()
  if problem:
    return {**case.row(), 'skipped': problem}
  b = case.bench().compile()
  compiled = {'compile_s': round(b.compile_s, 3), 'step_memory_mb': round(b.memory_mb, 1)}
  if case.devices > 1:
    compiled['collectives'] = collectives(b.step.as_text())
  need = b.memory_mb * 2**20 * case.devices  # per device; fake CPU devices share the host's
  if need > available_bytes():
    return {**case.row(), **compiled, 'skipped': f'XLA step memory {need / 2**30:.1f} GiB > '
                                                 f'{available_bytes() / 2**30:.1f} GiB available'}
  ref = b
  if case.n != REF_N:
    ref = Case(f'{case.model}:{case.graph}:{REF_N}:{case.exchange}', case.quick,
               case.devices).bench().compile().warm()
  b.warm()
  ref_step_s = ref.time()
  wall, cpu, vs_ref, cpu_vs_ref = [], [], [], []
  for _ in range(repeats):  # windows of the case, then of the reference, of the same length
    wall.append(b.time())
    cpu.append(b.cpu_s)
    ref_s = ref.time(max(1, round(wall[-1] * b.block / ref_step_s)))
    vs_ref.append((wall[-1] / case.n) / (ref_s / REF_N))
    cpu_vs_ref.append((cpu[-1] / case.n) / (ref.cpu_s / REF_N))
  wall_s, cpu_s = statistics.median(wall), statistics.median(cpu)
  return {**case.row(), 'step_ms': round(1e3 * wall_s, 3),
          'per_client_ms': round(1e3 * wall_s / case.n, 4), 'cpu_step_ms': round(1e3 * cpu_s, 3),
          'cpu_per_client_ms': round(1e3 * cpu_s / case.n, 4),
          'per_client_vs_16': round(statistics.median(vs_ref), 3),
          'cpu_per_client_vs_16': round(statistics.median(cpu_vs_ref), 3), **compiled,
          'peak_rss_mb': round(common.peak_rss_mb(), 1), 'loadavg': round(os.getloadavg()[0], 2)}


def child(args) -> None:
  """Runs `args.cases` (';'-separated model:graph:n:exchange) in this process, one row each."""
  for spec in args.cases.split(';'):
    common.emit(measure(Case(spec, args.quick, args.devices), args.repeats))


def run(cases, flags) -> dict:
  """{case: row} of the cases (model, graph, N, exchange), run in one fresh process; a case
  without a row (the process was killed, e.g. for memory) gets an `error` row."""
  t = time.perf_counter()
  out = subprocess.run([sys.executable, os.path.abspath(__file__), *flags,
                        '--cases=' + ';'.join(':'.join(map(str, c)) for c in cases)],
                       capture_output=True, text=True)
  rows = {}
  for line in out.stdout.splitlines():
    r = common.json.loads(line)
    rows[(r['model'], r['graph'], r['n_clients'], r['exchange'])] = r
  error = (f'exit {out.returncode} after {time.perf_counter() - t:.0f} s: '
           f'{out.stderr.strip()[-300:]}')
  return {c: rows.get(c) or dict(zip(('model', 'graph', 'n_clients', 'exchange'), c),
                                 error=error) for c in cases}


def parent(args) -> None:
  """Every case in a fresh process (all in one with --quick); the rows in order."""
  from mhd_jax import models  # pylint: disable=g-import-not-at-top  # after common.setup
  common.emit(common.machine())
  flags = [f'--repeats={args.repeats}', f'--devices={args.devices}'] + (
      ['--quick'] if args.quick else [])
  missed = set()  # (model, graph, exchange) that did not fit or failed at a smaller N
  for model in args.models.split(','):
    name = MODELS[model][0].get('name')  # None: the default config's
    if name and name not in models.BACKBONES:
      common.emit({'model': model,
                   'skipped': f'model.name={name} is not in models.BACKBONES on this branch'})
      continue
    cases = [(model, g, n, e) for g in args.graphs.split(',')
             for n in map(int, args.n.split(',')) for e in args.exchanges.split(',')]
    for group in [cases] if args.quick else [[c] for c in cases]:
      todo = [c for c in group if (c[0], c[1], c[3]) not in missed]
      rows = run(todo, flags) if todo else {}
      for c in group:
        r = rows.get(c) or dict(zip(('model', 'graph', 'n_clients', 'exchange'), c),
                                skipped='a smaller N did not fit')
        common.emit(r)
        if 'skipped' in r or 'error' in r:
          missed.add((c[0], c[1], c[3]))


def table(rows) -> str:
  """A markdown table of the rows: time per client against N = 16 (the rows' own ratios),
  sparse against dense at the same N (CPU time); skipped rows say why."""
  dense = {(r['model'], r['graph'], r['n_clients']): r for r in rows
           if r.get('exchange') == 'dense' and 'step_ms' in r}
  lines = ['| model | graph | N | exchange | K | step (ms) | per client (ms) | per client / '
           'N=16 | CPU per client (ms) | CPU per client / N=16 | sparse / dense (CPU) | step '
           'memory (MB) | per client (MB) | peak RSS (MB) | compile (s) |', '|' + '---|' * 15]
  for r in rows:
    cells = [str(r.get(k, '')) for k in ('model', 'graph', 'n_clients', 'exchange', 'width')]
    if 'step_ms' not in r:
      lines.append('| ' + ' | '.join(cells + [r.get('skipped') or r['error']] + [''] * 9) + ' |')
      continue
    d = dense.get((r['model'], r['graph'], r['n_clients']))
    cells += [f'{r["step_ms"]:.1f}', f'{r["per_client_ms"]:.3f}', f'{r["per_client_vs_16"]:.2f}',
              f'{r["cpu_per_client_ms"]:.3f}', f'{r["cpu_per_client_vs_16"]:.2f}',
              f'{r["cpu_step_ms"] / d["cpu_step_ms"]:.2f}' if d and d is not r else '',
              f'{r["step_memory_mb"]:.1f}', f'{r["step_memory_mb"] / r["n_clients"]:.3f}',
              f'{r["peak_rss_mb"]:.0f}', f'{r["compile_s"]:.1f}']
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot(rows, png: str) -> None:
  """CPU time per client and step memory against N, one line per model, graph and exchange."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
  lines = {}
  for r in rows:
    if 'step_ms' in r:
      lines.setdefault((r['model'], r['graph'], r['exchange']), []).append(r)
  for (model, graph, exchange), pts in sorted(lines.items()):
    n = [r['n_clients'] for r in pts]
    style = dict(ls='-' if exchange == 'sparse' else '--', marker='o',
                 label=f'{graph}, {exchange}' + ('' if model == 'default' else f' ({model})'))
    ax_t.plot(n, [r['cpu_per_client_ms'] for r in pts], **style)
    ax_m.plot(n, [r['step_memory_mb'] for r in pts], **style)
  ax_t.set(xscale='log', xlabel='clients N', ylabel='CPU time per client and step (ms)')
  ax_m.set(xscale='log', yscale='log', xlabel='clients N', ylabel='XLA step memory (MB)')
  for ax in (ax_t, ax_m):
    ax.grid(True, which='both', alpha=0.3)
  ax_m.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(png, dpi=120)


def main():
  p = common.parser(__doc__, models=MODELS, default_models='default,mnist1d_cnn')
  p.add_argument('--n', default='16,64,256,1024,4096,10000', help='comma-separated client counts')
  p.add_argument('--graphs', default=','.join(GRAPHS), help='comma-separated: ' + ', '.join(GRAPHS))
  p.add_argument('--exchanges', default='sparse,dense')
  p.add_argument('--cases', default='', help=argparse.SUPPRESS)
  p.add_argument('--report', default='', help='a results file: print its table, plot it')
  p.add_argument('--plot', default=PNG, help='where --report draws its plot')
  args = p.parse_args()
  common.MODELS.update(MODELS)
  common.QUICK.update(QUICK)
  if args.report:
    rows = [common.json.loads(l) for l in open(args.report) if '"machine"' not in l]
    print(table(rows))
    plot(rows, args.plot)
    return
  if args.quick:
    args.repeats = 1
    if not args.cases:
      args.models, args.graphs, args.n = 'default', 'ring', str(REF_N)
  common.setup(args)
  child(args) if args.cases else parent(args)


if __name__ == '__main__':
  main()
