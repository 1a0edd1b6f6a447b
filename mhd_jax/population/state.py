"""All clients' state in one pytree, stacked on a leading client axis, and its initialisation.

A population is a tuple of groups, one per architecture; clients are numbered
group after group (group 0 holds clients 0..n_0-1, and so on). Groups meet only
through their outputs on the public batch.
"""

import dataclasses
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mhd_jax import models


@flax.struct.dataclass
class Group:
  """Stacked state of one group's clients: every leaf has a leading [n_clients] axis."""
  params: Any
  batch_stats: Any
  opt_state: Any


@flax.struct.dataclass
class TrainState:
  """The population: the step counter, each group's clients, and (teachers that lag tau >= 1
  steps) each group's `lag.LagBuffer` of the public outputs its clients sent; None when
  tau = 0, so such a state (and its checkpoints) is what it was before lag existed."""
  step: jax.Array
  groups: tuple[Group, ...]
  lag: Any = None  # tuple[lag.LagBuffer, ...] (one per group, leaves [n_g, tau, ...]) or None


@dataclasses.dataclass(frozen=True)
class GroupSpec:
  """What is static about a group: its model, its optimizer, its size."""
  model: models.MultiHeadClassifier
  tx: optax.GradientTransformation
  num_clients: int


def firsts(sizes: Sequence[int]) -> list[int]:
  """Position of each group's first client, for groups of `sizes` clients in order."""
  return [int(x) for x in np.cumsum([0, *sizes])[:-1]]


def offsets(specs: Sequence[GroupSpec]) -> list[int]:
  """Global id of each group's first client."""
  return firsts([s.num_clients for s in specs])


def client_keys(rng, first_client: int, num_clients: int) -> jax.Array:
  """[n] keys: fold_in(rng, first_client + i) for i in 0..n-1."""
  return keys_of(rng, first_client + jnp.arange(num_clients, dtype=jnp.int32))


def keys_of(rng, ids) -> jax.Array:
  """[K] keys: client i's is `fold_in(rng, i)` (i global, any ids: a cohort's), one vmapped
  fold_in."""
  ids = jnp.asarray(ids, dtype=jnp.int32)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, ids)


def init_clients(spec: GroupSpec, keys_K, image_shape) -> Group:
  """The variables and optimizer states of K clients of a group, from their keys (traceable)."""
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  variables = jax.vmap(lambda k: spec.model.init(k, dummy, train=False))(keys_K)
  params = variables['params']
  return Group(params=params, batch_stats=variables.get('batch_stats', {}),
               opt_state=jax.vmap(spec.tx.init)(params))


def init_group(spec: GroupSpec, first_client: int, image_shape, rng) -> Group:
  """Client i's variables come from `fold_in(rng, i)` (i global), whatever N is.

  The keys are one vmapped fold_in: a Python loop would write N fold_ins into the program
  (its compile took 4 minutes at N = 1,000 on 2 CPU cores).
  """
  keys = client_keys(rng, first_client, spec.num_clients)
  return jax.jit(lambda keys: init_clients(spec, keys, image_shape))(keys)


def init_state(specs: Sequence[GroupSpec], image_shape, rng) -> TrainState:
  groups = tuple(init_group(s, off, image_shape, rng) for s, off in zip(specs, offsets(specs)))
  return TrainState(step=jnp.zeros((), jnp.int32), groups=groups)


def client_slice(state: TrainState, specs: Sequence[GroupSpec], client: int):
  """(group index, Group of one client without the client axis) for a global client id."""
  for g, (spec, off) in enumerate(zip(specs, offsets(specs))):
    if off <= client < off + spec.num_clients:
      return g, jax.tree.map(lambda x: x[client - off], state.groups[g])
  raise IndexError(f'client {client} out of range.')


