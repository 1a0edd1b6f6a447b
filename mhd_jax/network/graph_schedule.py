"""Communication graphs that change with the step: `weights_at(schedule, step)`.

A `Schedule` is built once on the host from the config (`build`); `weights_at`
is pure and jittable with `step` a traced int32, so a graph that changes every
step compiles once, and the graph of step s depends only on (seed, s), so a
resume is exact. Steps are numbered as in the training loop, 1 .. num_steps
(inside the step: `state.step + 1`). The graph is over the real clients,
`A[i, j] > 0` when i learns from j (`topology.build`), held as a dense
[N, N] matrix or as its weights [N, K] on a neighbour table (`neighbours`, the
sparse exchange). Every random draw is keyed by the pair of clients a link
joins, never by a position in either form, so both forms draw the same graphs.

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

from mhd_jax.network import neighbours
from mhd_jax.network import topology

SCHEDULES = ('static', 'matching', 'edge_failure', 'cycle')
_STREAM = 2  # fold_in(PRNGKey(seed), 0) initialises the clients and 1 drives the step
# Fields a cycle entry may override (`cycle_configs`): the topology builders' parameters.
CYCLE_FIELDS = ('num_islands', 'degree', 'adjacency', 'edge_prob', 'rewire_prob', 'grid_rows',
                'radius', 'seed')


@flax.struct.dataclass
class Schedule:
  """What `weights_at` needs; `kind` is static, the arrays are traced.

  The graphs are weights on a neighbour table (`neighbours.Table`, the sparse
  exchange) or, with `table` None, dense [N, N] matrices.
  """
  kind: str = flax.struct.field(pytree_node=False)
  graphs_GxNxK: jax.Array  # the base graph (G = 1), or the cycle's graphs in order
  key: jax.Array           # stream_key(seed, 2): the step's draws fold the step in
  failure_p: jax.Array     # float32 scalar
  every: jax.Array         # int32 scalar, steps per graph of a cycle
  table: neighbours.Table | None = None  # None: dense, column k = client k


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


def base_graphs(config) -> list:
  """The graphs a schedule draws from, each validated: [N, N] float32 scipy.sparse matrices
  (host only)."""
  kind = config.dynamics.schedule
  if kind not in SCHEDULES:
    raise ValueError(f'unknown schedule {kind!r}: config.dynamics.schedule must be one of '
                     f'{", ".join(SCHEDULES)}.')
  if kind != 'cycle':
    return [topology.build(config)]
  graphs = []
  for i, c in enumerate(cycle_configs(config)):
    try:
      graphs.append(topology.build(c))
    except ValueError as e:
      raise ValueError(f'dynamics.cycle_graphs, graph {i} ({c.topology}): {e}') from None
  return graphs


def build(config, exchange: str | None = None) -> Schedule:
  """The schedule a config asks for, dense or on a neighbour table as `exchange` (default
  `config.exchange`) chooses (`neighbours.choose`); raises ValueError (one line) on a bad
  one."""
  graphs = base_graphs(config)
  table, weights = neighbours.build(graphs)
  neighbours.validate(table, weights)
  n = config.num_clients
  if not neighbours.choose(exchange or config.get('exchange', 'auto'), n, table.width):
    table, weights = None, np.stack([g.toarray() for g in graphs])
  return Schedule(kind=config.dynamics.schedule, graphs_GxNxK=jnp.asarray(weights),
                  key=stream_key(config.seed, _STREAM),
                  failure_p=jnp.asarray(config.dynamics.failure_p, jnp.float32),
                  every=jnp.asarray(config.dynamics.cycle_every, jnp.int32), table=table)


def stream_key(seed: int, stream: int) -> jax.Array:
  """fold_in(PRNGKey(seed), stream), made on the host once; a step's draws fold in the step."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), stream)


def _senders(table):
  return None if table is None else table.senders_NxK


def links(w_NxK: jax.Array, table: neighbours.Table | None = None) -> jax.Array:
  """[N, K] bool, symmetric: i and j are linked when either learns from the other (i itself
  and padding are not links)."""
  n = w_NxK.shape[0]
  return (((w_NxK > 0) | (neighbours.reverse(w_NxK, table) > 0))
          & ~neighbours.is_self(_senders(table), n))


def _pair_draw(key: jax.Array, draw, n: int, table) -> jax.Array:
  """[N, K]: `draw(k)` with the key fold_in(fold_in(key, min(i, j)), max(i, j)) of each
  entry's pair {i, j}: the two ends of a link see one draw, whatever the table's form."""
  i = jnp.arange(n, dtype=jnp.int32)[:, None]
  j = neighbours.ids(_senders(table), n)
  fold = lambda a, b: draw(jax.random.fold_in(jax.random.fold_in(key, a), b))
  return jax.vmap(jax.vmap(fold))(jnp.broadcast_to(jnp.minimum(i, j), j.shape),
                                  jnp.maximum(i, j))


def surviving_links(key: jax.Array, n: int, failure_p, table=None) -> jax.Array:
  """[N, K] bool, symmetric: each unordered pair survives with probability 1 - failure_p."""
  return _pair_draw(key, jax.random.uniform, n, table) >= failure_p


def pair_bits(key: jax.Array, n: int, table=None) -> jax.Array:
  """[N, K] uint32, symmetric: random bits per unordered pair, the order greedy matching uses."""
  return _pair_draw(key, lambda k: jax.random.bits(k, dtype=jnp.uint32), n, table)


def greedy_matching(link_NxK: jax.Array, bits_NxK: jax.Array, table=None) -> jax.Array:
  """[N, K] bool, symmetric: the maximal matching greedy picks in increasing (bits, pair) order.

  Ties of the random bits (about E^2 / 2^33 pairs per step for E links) are
  broken by the pair (min(i, j), max(i, j)) in lexicographic order, so the
  order is total. Computed in parallel rather than link by link: each round
  takes every free link that is the first free link at both its ends (these
  share no client, and greedy would take each of them), then drops the links
  of matched clients; the first free link is always taken, so it ends, with
  no free link left. Each round costs O(N K): on a neighbour table, O(N d).
  (A random permutation of the N^2 pairs would give distinct ranks, but its
  sort costs 20 ms per step at N = 256 on 2 CPU cores against 1.5 ms for the
  rounds: see docs/dynamics.md.)
  """
  n = link_NxK.shape[0]
  i = jnp.arange(n, dtype=jnp.int32)[:, None]
  j = neighbours.ids(_senders(table), n)
  lo, hi = jnp.minimum(i, j), jnp.maximum(i, j)

  def lowest(among, key):
    top = jnp.array(jnp.iinfo(key.dtype).max, key.dtype)
    low = jnp.where(among, key, top).min(axis=1, keepdims=True)
    return among & (key == low)

  def round_(carry):
    matched, free = carry
    first = lowest(lowest(lowest(free, bits_NxK), lo), hi)  # the first free link at row i's end
    take = first & neighbours.reverse(first, table)        # ... and at the other end
    busy = take.any(axis=1)
    return matched | take, free & ~busy[:, None] & ~neighbours.gather(busy, _senders(table))

  matched, _ = jax.lax.while_loop(lambda c: c[1].any(), round_,
                                  (jnp.zeros_like(link_NxK), link_NxK))
  return matched


def weights_at(schedule: Schedule, step) -> jax.Array:
  """[N, K] float32: the graph of training step `step` (1-based; may be traced), on the
  schedule's table (dense: the [N, N] adjacency)."""
  step = jnp.asarray(step, jnp.int32)
  graphs = schedule.graphs_GxNxK
  if schedule.kind == 'cycle':
    return graphs[((step - 1) // schedule.every) % graphs.shape[0]]
  base, n = graphs[0], graphs.shape[1]
  if schedule.kind == 'static':
    return base
  key = jax.random.fold_in(schedule.key, step)
  if schedule.kind == 'matching':
    keep = greedy_matching(links(base, schedule.table), pair_bits(key, n, schedule.table),
                           schedule.table)
  elif schedule.kind == 'edge_failure':
    keep = surviving_links(key, n, schedule.failure_p, schedule.table)
  else:
    raise ValueError(f'unknown schedule {schedule.kind!r}; choose one of {", ".join(SCHEDULES)}.')
  return jnp.where(keep, base, 0.0)
