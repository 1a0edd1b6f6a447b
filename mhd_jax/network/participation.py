"""Which clients take part in each step: `active_at(participation, step)`.

An active client teaches and learns at that step; an inactive one keeps its
state bit-identical and is no candidate for anyone's target. Like
`graph_schedule`, a `Participation` is built once on the host (`build`) and
`active_at` is pure and jittable with a traced step (1-based, as in the loop;
inside the step `state.step + 1`): it depends only on (seed, step) and the
trace, so a resume is exact and nothing recompiles from step to step.

Modes (`MODES`, config.dynamics.participation):
- all: every client at every step (the paper).
- bernoulli: each client independently with probability `availability`, drawn
  from (seed, step).
- trace: read from `trace_file`, a matrix of 0/1 with one row per client and
  one column per step (column s - 1 is step s; more columns than steps are
  allowed and ignored). Either a `.npy` array (bool or integer) or a text file
  (`.csv`, `.txt`, anything else) of 0/1 separated by commas or spaces, one
  line per client.
- stragglers: round(straggler_fraction * N) clients, drawn from the seed
  (`stragglers`), take part every `straggler_every` steps, the others at every
  step. Their phases are staggered so that they do not all arrive at once: the
  i-th straggler in client order takes part at the steps s with
  (s - 1) % straggler_every == i % straggler_every.
"""

import os

import flax
import jax
import jax.numpy as jnp
import numpy as np

from mhd_jax.network import graph_schedule

MODES = ('all', 'bernoulli', 'trace', 'stragglers')
_STREAM = 3  # graph_schedule draws from stream 2


@flax.struct.dataclass
class Participation:
  """What `active_at` needs; `mode` is static, the arrays are traced."""
  mode: str = flax.struct.field(pytree_node=False)
  key: jax.Array            # graph_schedule.stream_key(seed, 3)
  availability: jax.Array   # float32 scalar
  trace_NxT: jax.Array      # bool; [N, 1] of ones unless mode = 'trace'
  every_N: jax.Array        # int32: take part every every_N[i] steps (1 = always)
  phase_N: jax.Array        # int32: at the steps s with (s - 1) % every_N == phase_N


def load_trace(path: str, num_clients: int, num_steps: int) -> np.ndarray:
  """[N, T] bool from `path` (see the module docstring); ValueError (one line) on bad input."""
  if not path:
    raise ValueError("dynamics.participation='trace' needs dynamics.trace_file (a .npy or a "
                     'csv of 0/1, one row per client, one column per step).')
  if not os.path.isfile(path):
    raise ValueError(f'dynamics.trace_file {path!r} does not exist or is not a file.')
  try:
    if path.endswith('.npy'):
      trace = np.load(path, allow_pickle=False)
    else:
      with open(path) as f:
        rows = [line.replace(',', ' ').split() for line in f if line.strip()]
      if any(len(r) != len(rows[0]) for r in rows):
        raise ValueError('its rows have different lengths')
      trace = np.array(rows, dtype=np.float64)
  except (ValueError, OSError) as e:
    raise ValueError(f'dynamics.trace_file {path!r} cannot be read as a 0/1 matrix '
                     f'({str(e).splitlines()[0] if str(e) else type(e).__name__}).') from None
  if trace.ndim != 2 or trace.shape[0] != num_clients or trace.shape[1] < num_steps:
    raise ValueError(f'dynamics.trace_file {path!r} has shape {trace.shape}; it needs '
                     f'num_clients={num_clients} rows and at least num_steps={num_steps} columns '
                     '(column s - 1 is step s).')
  if trace.dtype != bool and not np.isin(trace, (0, 1)).all():
    i, s = np.argwhere(~np.isin(trace, (0, 1)))[0]
    raise ValueError(f'dynamics.trace_file {path!r} holds {trace[i, s].item():g} for client {i} '
                     f'at column {s} (step {s + 1}); every entry must be 0 or 1.')
  return trace.astype(bool)


def stragglers(num_clients: int, fraction: float, seed: int) -> np.ndarray:
  """The ids of the straggling clients, sorted: round(fraction * N) of them drawn from seed."""
  count = int(round(fraction * num_clients))
  rng = np.random.default_rng([seed % 2**32, _STREAM])  # numpy takes no negative seed
  return np.sort(rng.choice(num_clients, count, replace=False))


def build(config) -> Participation:
  """The participation a config asks for; raises ValueError (one line) on a bad one."""
  d, n = config.dynamics, config.num_clients
  if d.participation not in MODES:
    raise ValueError(f'unknown participation {d.participation!r}: config.dynamics.participation '
                     f'must be one of {", ".join(MODES)}.')
  trace = np.ones((n, 1), bool)
  if d.participation == 'trace':
    trace = load_trace(d.trace_file, n, config.num_steps)
  every, phase = np.ones(n, np.int32), np.zeros(n, np.int32)
  if d.participation == 'stragglers':
    ids = stragglers(n, d.straggler_fraction, config.seed)
    every[ids] = d.straggler_every
    phase[ids] = np.arange(len(ids)) % d.straggler_every
  return Participation(mode=d.participation, key=graph_schedule.stream_key(config.seed, _STREAM),
                       availability=jnp.asarray(d.availability, jnp.float32),
                       trace_NxT=jnp.asarray(trace), every_N=jnp.asarray(every),
                       phase_N=jnp.asarray(phase))


def active_at(participation: Participation, step) -> jax.Array:
  """[N] bool: the clients that take part in training step `step` (1-based; may be traced)."""
  step = jnp.asarray(step, jnp.int32)
  p, n = participation, participation.every_N.shape[0]
  if p.mode == 'all':
    return jnp.ones(n, bool)
  if p.mode == 'bernoulli':
    return jax.random.uniform(jax.random.fold_in(p.key, step), (n,)) < p.availability
  if p.mode == 'trace':
    return jax.lax.dynamic_index_in_dim(p.trace_NxT, step - 1, axis=1, keepdims=False)
  if p.mode == 'stragglers':
    return (step - 1) % p.every_N == p.phase_N
  raise ValueError(f'unknown participation {p.mode!r}; choose one of {", ".join(MODES)}.')


def steps_taken(participation: Participation, first_step: int, last_step: int) -> np.ndarray:
  """[N] int: how many of the steps first_step .. last_step each client took part in.

  A pure function of the participation, so the end-of-run report needs no
  counter in the checkpoint (a resumed run counts what the whole run did).
  """
  steps = jnp.arange(first_step, last_step + 1, dtype=jnp.int32)
  return np.asarray(_count_active(participation, steps))


@jax.jit
def _count_active(participation: Participation, steps_T) -> jax.Array:
  """[N] int32: the steps of `steps_T` each client takes part in. Jitted once here (not per
  call), so the training loop's count at every log step compiles once per window length."""
  active_TxN = jax.vmap(active_at, in_axes=(None, 0))(participation, steps_T)
  return active_TxN.sum(axis=0, dtype=jnp.int32)
