"""`strategy = 'auto'` by measurement: time the candidate strategies' compiled steps, keep the fastest.

Which of vmap / hybrid / loop runs a population fastest depends on the
device, the models, the shapes and the clients per device (README, "Scale");
a static rule guesses wrong on some of them. So, for a model with
convolutions, `compile_fastest` compiles each candidate once, times a few
steps of each on copies of the real arguments (the run's state and its first
batch; the copies are donated, the run's own state is untouched), keeps the
fastest program for training and frees the others. The run is then the very
run that `strategy = <the winner>` gives.

Models without convolutions pay nothing: every backend batches their matmuls
best with 'vmap', which is chosen without measuring. Nor is anything measured
when `strategy_measure_steps` is 0 (the static rule of
`clients.resolve_strategy`), or when the run has fewer steps left than the
measurement would take.

Decisions are cached in a JSON file, `$MHD_STRATEGY_CACHE` or else
`~/.cache/mhd_jax/strategies.json`, keyed by (device kind, JAX version,
a hash of the models, batch shapes, clients per device), so that a resume or
a rerun does not measure again. A cache that cannot be read or written costs
one warning line and is rebuilt; it never stops a run.
"""

from concurrent import futures
import hashlib
import json
import os
import time
from typing import Any, Callable, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from mhd_jax.placement import clients
from mhd_jax.population import groups as groups_lib

CANDIDATES = ('vmap', 'hybrid', 'loop')
SLOWER = 2.0  # a candidate this many times slower than the best so far is timed no further


def cache_path() -> str:
  """`$MHD_STRATEGY_CACHE` if set, else `~/.cache/mhd_jax/strategies.json`."""
  return (os.environ.get('MHD_STRATEGY_CACHE')
          or os.path.join(os.path.expanduser('~'), '.cache', 'mhd_jax', 'strategies.json'))


def cache_key(config, num_classes: int, image_shape, clients_per_device: Sequence[int],
              num_devices: int = 1) -> str:
  """What the fastest strategy depends on, as one readable string.

  Models enter as the first 12 hex digits of a SHA-256 over their configs
  (with head and class counts); batches as (private, public) x image shape;
  clients per device of each group, and the devices of the mesh.
  """
  models = [(n, model.to_dict()) for _, n, model in groups_lib.group_configs(config)]
  digest = hashlib.sha256(json.dumps([models, config.num_heads, num_classes],
                                     sort_keys=True, default=str).encode()).hexdigest()[:12]
  device = jax.devices()[0]
  return (f'{device.platform}:{device.device_kind} | jax {jax.__version__} | models {digest} | '
          f'batch {config.data.batch_size}+{config.data.public_batch_size}x'
          f'{"x".join(map(str, image_shape))} | clients/device '
          f'{",".join(map(str, clients_per_device))} on {num_devices}')


def load_cache(path: str) -> dict:
  """The cached decisions; {} (and one warning) when the file is unreadable or not a JSON object."""
  try:
    with open(path) as f:
      entries = json.load(f)
    if not isinstance(entries, dict):
      raise ValueError('not a JSON object')
    return entries
  except (FileNotFoundError, NotADirectoryError):  # no cache yet (writing it will say if it fails)
    return {}
  except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
    logging.warning('strategy cache %s unreadable (%s); ignoring it and measuring again.',
                    path, e)
    return {}


def save_cache(path: str, entries: dict) -> None:
  """Writes the decisions atomically; an unwritable place costs one warning."""
  try:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + f'.tmp{os.getpid()}', 'w') as f:
      json.dump(entries, f, indent=1, sort_keys=True)
    os.replace(path + f'.tmp{os.getpid()}', path)
  except OSError as e:
    logging.warning('strategy cache %s not written (%s); the next run measures again.', path, e)


def _now() -> float:
  return time.perf_counter()


def fastest(runs: dict[str, Callable[[], Any]], steps: int,
            prune: bool = True) -> tuple[str, dict[str, float]]:
  """(name, {name: seconds per step}) of the fastest of `runs`.

  Each run does one step and blocks until it is done. One call each first
  (the first after compiling can be slow: a candidate `2 * SLOWER` times
  slower than the best there is timed no further), then `steps` rounds that
  call every remaining candidate once in turn, so that a change of machine
  load hits all alike; a candidate's time is its fastest timed step (the
  least disturbed one; its first call's when it was dropped there). With
  `prune`, a candidate `SLOWER` times slower than the best after a round is
  timed no further either (vmap's grouped convolutions on a CPU: 10-20x).
  """
  first = {}
  for name, run in runs.items():
    t = _now()
    run()
    first[name] = _now() - t
  alive = [n for n in runs if not prune or first[n] <= 2 * SLOWER * min(first.values())]
  times = {name: [] for name in runs}
  for _ in range(steps):
    for name in alive:
      t = _now()
      runs[name]()
      times[name].append(_now() - t)
    best = min(min(times[n]) for n in alive)
    if prune:
      alive = [n for n in alive if min(times[n]) <= SLOWER * best]
  seconds = {n: min(t) if t else first[n] for n, t in times.items()}
  return min(alive, key=seconds.get), seconds


def candidates(config, specs, image_shape, steps_left: int) -> tuple[str, ...]:
  """The strategies worth compiling: one (no measurement) unless 'auto' has something to choose.

  One when `config.strategy` is not 'auto', the models have no convolution
  ('vmap'), `strategy_measure_steps` is 0 or the run has fewer steps left
  than the measurement takes (the static rule of `resolve_strategy`).
  """
  static = clients.strategy_for(config.strategy, specs, image_shape)
  measure = config.get('strategy_measure_steps', 0)
  if config.strategy != 'auto' or static == 'vmap' or not measure:
    return (static,)
  found = tuple(s for s in CANDIDATES if s != 'hybrid' or clients.hybrid_available())
  if steps_left < len(found) * (1 + measure):
    return (static,)
  return found


def _agree(value: int) -> int:
  """Process 0's value on every process (a collective: all processes call it)."""
  if jax.process_count() == 1:
    return value
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def _copy(args):
  """Fresh buffers with the same shardings (the measured steps donate them)."""
  return jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, args)


def compile_fastest(make_step: Callable[[str], Any], strategies: Sequence[str], args,
                    key: str, steps: int):
  """(strategy, compiled step): the one candidate, else the cached or measured fastest.

  Args:
    make_step: strategy -> jitted step (it may donate its arguments).
    strategies: the candidates (`candidates`).
    args: the step's real arguments; only copies of them are run.
    key: the cache key (`cache_key`).
    steps: timed rounds (`config.strategy_measure_steps`).
  """
  compile_one = lambda s: make_step(s).lower(*args).compile()
  if len(strategies) == 1:
    return strategies[0], compile_one(strategies[0])
  path = cache_path()
  entries = load_cache(path)
  cached = entries.get(key, {}).get('strategy') if isinstance(entries.get(key), dict) else None
  # Every process follows process 0 (the measured steps are collectives).
  index = _agree(strategies.index(cached) if cached in strategies else -1)
  if index >= 0:
    logging.info("strategy 'auto': %s, measured earlier (%s in %s).", strategies[index], key,
                 path)
    return strategies[index], compile_one(strategies[index])
  t = time.perf_counter()
  with futures.ThreadPoolExecutor(2) as pool:  # XLA compiles without the GIL: two at a time
    compiled = dict(zip(strategies, pool.map(compile_one, strategies)))
  compile_s = time.perf_counter() - t

  def run(s):
    def step():
      jax.block_until_ready(compiled[s](*_copy(args)))
    return step
  t = time.perf_counter()
  best, seconds = fastest({s: run(s) for s in strategies}, steps,
                          prune=jax.process_count() == 1)
  best = strategies[_agree(strategies.index(best))]
  measured = ', '.join(f'{s} {1e3 * v:.1f} ms' for s, v in seconds.items())
  logging.info("strategy 'auto': %s per step (fastest of %d steps; compiling took %.1f s, "
               'timing %.1f s): %s.', measured, steps, compile_s, time.perf_counter() - t, best)
  if jax.process_index() == 0:
    entries[key] = {'strategy': best, 'step_ms': {s: round(1e3 * v, 3) for s, v in seconds.items()},
                    'measured': time.strftime('%Y-%m-%dT%H:%M:%S')}
    save_cache(path, entries)
  return best, compiled[best]
