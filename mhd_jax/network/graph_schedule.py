"""Communication graphs that change with the step: `adjacency_at(schedule, step)`.

A `Schedule` is built once on the host from the config (`build`); `adjacency_at`
is pure and jittable with `step` a traced int32, so a graph that changes every
step compiles once, and the graph of step s depends only on (seed, s), so a
resume is exact. Steps are numbered as in the training loop, 1 .. num_steps
(inside the step: `state.step + 1`). The matrix is over the real clients,
`A[i, j] > 0` when i learns from j, as `topology.build` gives it.

Schedules (`SCHEDULES`, config.dynamics.schedule):
- static: the base graph (`topology.build(config)`) at every step, unchanged.
- matching (gossip): at each step a random maximal matching over the base
  graph's links (pairs i, j with A[i, j] > 0 or A[j, i] > 0); matched pairs
  exchange both ways as the base graph has them, everyone else hears nobody.
  Maximal rather than merely random: no link whose two ends are both free is
  left unused, so each step carries as much as one matching can, and an
  unmatched client really has no free neighbour. The draw is greedy over a
  uniformly random order of the links (not uniform over maximal matchings).
- edge_failure: each link fails independently with probability `failure_p` at
  each step; a failed link carries nothing in either direction.
- cycle: the graphs of `cycle_graphs` in turn, `cycle_every` steps each
  (steps 1 .. k on the first, k + 1 .. 2k on the second, ...).

Under matching and edge failure a client may have no in-neighbour at a step:
its row of the matrix is zero, and it must get no distillation term then.
"""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mhd_jax.network import topology

SCHEDULES = ('static', 'matching', 'edge_failure', 'cycle')
_STREAM = 2  # fold_in(PRNGKey(seed), 0) initialises the clients and 1 drives the step
# Fields a cycle entry may override (`cycle_configs`): the topology builders' parameters.
CYCLE_FIELDS = ('num_islands', 'degree', 'adjacency', 'edge_prob', 'rewire_prob', 'grid_rows',
                'radius', 'seed')


@flax.struct.dataclass
class Schedule:
  """What `adjacency_at` needs; `kind` is static, the arrays are traced."""
  kind: str = flax.struct.field(pytree_node=False)
  graphs_GxNxN: jax.Array  # the base graph (G = 1), or the cycle's graphs in order
  key: jax.Array           # stream_key(seed, 2): the step's draws fold the step in
  failure_p: jax.Array     # float32 scalar
  every: jax.Array         # int32 scalar, steps per graph of a cycle


def parse_cycle(spec: str) -> list[tuple[str, dict[str, str]]]:
  """'ring | islands:num_islands=3' -> [('ring', {}), ('islands', {'num_islands': '3'})]."""
  out = []
  for entry in spec.split('|'):
    name, *pairs = [p.strip() for p in entry.split(':')]
    if not name:
      raise ValueError(f"dynamics.cycle_graphs={spec!r} has an empty graph; write graphs "
                       "separated by '|', e.g. 'ring | islands:num_islands=3'.")
    fields = {}
    for pair in pairs:
      key, eq, value = [p.strip() for p in pair.partition('=')]
      if not eq or key not in CYCLE_FIELDS:
        raise ValueError(f'dynamics.cycle_graphs: cannot read {pair!r} in {entry.strip()!r}; '
                         f'write field=value with a field of {", ".join(CYCLE_FIELDS)}.')
      fields[key] = value
    out.append((name, fields))
  return out


def cycle_configs(config) -> list[ml_collections.ConfigDict]:
  """One copy of `config` per graph of `dynamics.cycle_graphs`, its topology set.

  Graph i's seed is `config.seed + i` unless it sets `seed=`, so that two
  entries of one random family are different graphs.
  """
  if not config.dynamics.cycle_graphs.strip():
    raise ValueError("dynamics.schedule='cycle' needs dynamics.cycle_graphs, e.g. "
                     "'ring | chain'.")
  out = []
  for i, (name, fields) in enumerate(parse_cycle(config.dynamics.cycle_graphs)):
    c = ml_collections.ConfigDict(config.to_dict())
    c.topology, c.seed = name, config.seed + i
    for key, value in fields.items():
      kind = type(config[key])  # str, int or float, as configs/default.py has it
      try:
        c[key] = kind(value)
      except ValueError:
        raise ValueError(f'dynamics.cycle_graphs: {key}={value!r} in graph {i} ({name}) is not '
                         f'{"an integer" if kind is int else "a number"}.') from None
    out.append(c)
  return out


def base_graphs(config) -> np.ndarray:
  """[G, N, N] float32: the graphs a schedule draws from, each validated (host only)."""
  kind = config.dynamics.schedule
  if kind not in SCHEDULES:
    raise ValueError(f'unknown schedule {kind!r}: config.dynamics.schedule must be one of '
                     f'{", ".join(SCHEDULES)}.')
  if kind != 'cycle':
    return topology.build(config)[None]
  graphs = []
  for i, c in enumerate(cycle_configs(config)):
    try:
      graphs.append(topology.build(c))
    except ValueError as e:
      raise ValueError(f'dynamics.cycle_graphs, graph {i} ({c.topology}): {e}') from None
  return np.stack(graphs)


def build(config) -> Schedule:
  """The schedule a config asks for; raises ValueError (one line) on a bad one."""
  return Schedule(kind=config.dynamics.schedule,
                  graphs_GxNxN=jnp.asarray(base_graphs(config)),
                  key=stream_key(config.seed, _STREAM),
                  failure_p=jnp.asarray(config.dynamics.failure_p, jnp.float32),
                  every=jnp.asarray(config.dynamics.cycle_every, jnp.int32))


def stream_key(seed: int, stream: int) -> jax.Array:
  """fold_in(PRNGKey(seed), stream), made on the host once; a step's draws fold in the step."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), stream)


def links(a_NxN: jax.Array) -> jax.Array:
  """[N, N] bool, symmetric: i and j are linked when either learns from the other."""
  return (a_NxN > 0) | (a_NxN.T > 0)


def surviving_links(key: jax.Array, n: int, failure_p) -> jax.Array:
  """[N, N] bool, symmetric: each unordered pair survives with probability 1 - failure_p."""
  up = jnp.triu(jax.random.uniform(key, (n, n)) >= failure_p, 1)
  return up | up.T


def pair_bits(key: jax.Array, n: int) -> jax.Array:
  """[N, N] uint32, symmetric: random bits per unordered pair, the order greedy matching uses."""
  bits = jax.random.bits(key, (n, n), jnp.uint32)
  i = jnp.arange(n)
  return jnp.where(i[:, None] < i[None, :], bits, bits.T)


def greedy_matching(link_NxN: jax.Array, bits_NxN: jax.Array) -> jax.Array:
  """[N, N] bool, symmetric: the maximal matching greedy picks in increasing (bits, pair) order.

  Ties of the random bits (about E^2 / 2^33 pairs per step for E links) are
  broken by the pair's index min(i, j) * N + max(i, j), so the order is total.
  Computed in parallel rather than link by link: each round takes every free
  link that is the first free link at both its ends (these share no client, and
  greedy would take each of them), then drops the links of matched clients;
  the first free link is always taken, so it ends, with no free link left.
  (A random permutation of the N^2 pairs would give distinct ranks, but its
  sort costs 20 ms per step at N = 256 on 2 CPU cores against 1.5 ms for the
  rounds: see docs/dynamics.md.)
  """
  n = link_NxN.shape[0]
  i = jnp.arange(n)
  pair = jnp.minimum(i[:, None], i[None, :]) * n + jnp.maximum(i[:, None], i[None, :])
  top_bits, top_pair = jnp.uint32(0xFFFFFFFF), jnp.int32(n * n)

  def round_(carry):
    matched, free = carry
    b = jnp.where(free, bits_NxN, top_bits)
    low_bits = b.min(axis=1)
    tied = free & (b == low_bits[:, None])
    low_pair = jnp.where(tied, pair, top_pair).min(axis=1)
    first = tied & (pair == low_pair[:, None])   # the first free link at row i's end
    take = first & first.T                         # ... and at column j's end
    busy = take.any(axis=1)
    return matched | take, free & ~busy[:, None] & ~busy[None, :]

  matched, _ = jax.lax.while_loop(lambda c: c[1].any(), round_,
                                  (jnp.zeros_like(link_NxN), link_NxN))
  return matched


def adjacency_at(schedule: Schedule, step) -> jax.Array:
  """[N, N] float32: the graph of training step `step` (1-based; may be traced)."""
  step = jnp.asarray(step, jnp.int32)
  graphs = schedule.graphs_GxNxN
  if schedule.kind == 'cycle':
    return graphs[((step - 1) // schedule.every) % graphs.shape[0]]
  base, n = graphs[0], graphs.shape[1]
  if schedule.kind == 'static':
    return base
  key = jax.random.fold_in(schedule.key, step)
  if schedule.kind == 'matching':
    keep = greedy_matching(links(base), pair_bits(key, n))
  elif schedule.kind == 'edge_failure':
    keep = surviving_links(key, n, schedule.failure_p)
  else:
    raise ValueError(f'unknown schedule {schedule.kind!r}; choose one of {", ".join(SCHEDULES)}.')
  return jnp.where(keep, base, 0.0)
