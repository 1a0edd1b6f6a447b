"""Where the clients live: the mesh, the padding that fills it, shardings and batch placement.

Every leaf of every group's state has a leading client axis; it is sharded
over the mesh axis 'clients' (`NamedSharding(mesh, P('clients'))`), so each
device holds, and computes, only its own clients. The public batch is
replicated. Inside the step each device runs the model on its clients
(`clients.for_each_client` with the mesh); the distillation targets are built
in the global view from all clients' public outputs, and XLA moves those
outputs between devices with the collectives the shardings call for (an
all-gather of [N, H, B_pub, C] logits: the only cross-client traffic, as in
the algorithm).

A group whose size the device count does not divide is padded at its end with
clients that are never active (copies of its client 0 fed zero images):
`network` marks them inactive, so the step gives them no target and no loss
and leaves their state unchanged. This module is the one place that converts
between the real clients and the stacked (padded) ones: `network`,
`pad_state`/`unpad_state`, `place_batch`, `real`.

Multi-host: `initialize_distributed` starts `jax.distributed` when the config
asks; each process then feeds only the clients its devices hold
(`Layout.local_client_ids`, to pass to `data.get_data`), and
`Layout.place_batch` assembles the global batch from the processes' parts.
"""

import dataclasses
import os
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from mhd_jax.algorithm import distill
from mhd_jax.population import state as state_lib

AXIS = 'clients'


def initialize_distributed(config) -> bool:
  """Starts `jax.distributed` if `config.distributed.initialize`; returns whether it did.

  Call it before anything touches the devices. With no address given, JAX
  finds the cluster itself (Cloud TPU pods, SLURM, ...); otherwise
  `coordinator_address`, `num_processes` and `process_id` are passed on.
  """
  dist = config.get('distributed')
  if dist is None or not dist.initialize:
    return False
  kwargs = {}
  if dist.coordinator_address:
    kwargs = {'coordinator_address': dist.coordinator_address,
              'num_processes': dist.num_processes, 'process_id': dist.process_id}
  jax.distributed.initialize(**kwargs)
  return True


def make_mesh(num_devices: int = 0) -> Mesh:
  """A one-axis ('clients') mesh over the first `num_devices` devices (0: all of them)."""
  available = jax.device_count()
  n = num_devices or available
  if not 1 <= n <= available:
    raise ValueError(f'num_devices={num_devices} but {available} device(s) are available '
                     f'({jax.devices()[0].platform}); use 0 for all of them.')
  if n != available and jax.process_count() > 1:
    raise ValueError(f'num_devices={num_devices}: on several hosts the mesh must span all '
                     f'{available} devices; use 0.')
  devices = jax.devices()[:n]
  return jax.make_mesh((n,), (AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def memory_bytes(mesh: Mesh) -> int:
  """Memory the mesh's devices hold together: the allocator limit of this process's devices
  times the mesh size, or on CPU the host's physical memory once per process (a process's
  devices share it). Only this process's devices report their memory; on several hosts the
  others are taken to be alike, so every host makes the same choice on a uniform pod."""
  local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  stats = [d.memory_stats() or {} for d in local]
  if stats and all('bytes_limit' in s for s in stats):
    return int(min(s['bytes_limit'] for s in stats) * mesh.devices.size)
  processes = len({d.process_index for d in mesh.devices.flat})
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') * processes


def compiled_bytes(compiled) -> int:
  """A compiled program's buffers per device (XLA's memory analysis: arguments, outputs and
  temporaries, less what the outputs alias)."""
  m = compiled.memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where the clients live: each group's clients, padded to a multiple of the mesh size.

  Stacked positions run group after group (group g occupies `padded[g]`
  positions, its real clients first); real client ids run group after group
  too, as in `population`.
  """
  mesh: Mesh
  sizes: tuple[int, ...]   # real clients per group
  padded: tuple[int, ...]  # stacked clients per group

  @classmethod
  def create(cls, sizes: Sequence[int], mesh: Mesh, allow_padding: bool = True):
    """Layout of groups of `sizes` clients; padding or, if not allowed, a clear refusal."""
    d = mesh.devices.size
    sizes = tuple(int(n) for n in sizes)
    padded = tuple(-(-n // d) * d for n in sizes)
    if padded != sizes and not allow_padding:
      raise ValueError(f'group sizes {list(sizes)} are not multiples of the {d} devices of the '
                       f'mesh; change num_clients, set num_devices to a divisor, or allow '
                       f'padding with masked clients.')
    return cls(mesh, sizes, padded)

  @property
  def clients(self) -> NamedSharding:
    return NamedSharding(self.mesh, P(AXIS))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def num_padding(self) -> int:
    return sum(self.padded) - sum(self.sizes)

  def padded_specs(self, specs):
    return tuple(dataclasses.replace(s, num_clients=p) for s, p in zip(specs, self.padded))

  def real_clients(self) -> np.ndarray:
    """[N] stacked position of each real client."""
    return np.concatenate([f + np.arange(n)
                           for f, n in zip(state_lib.firsts(self.padded), self.sizes)])

  def state_shardings(self):
    """Sharding prefix of a TrainState: the step counter replicated, every group leaf and
    every lag buffer leaf (when there is one) by client."""
    return state_lib.TrainState(step=self.replicated, groups=self.clients, lag=self.clients)

  def batch_shardings(self, staleness: int = 0):
    """Shardings of a `place_batch` result; `public_ahead` only with teachers that lag."""
    out = {'private': self.clients, 'public': self.replicated}
    return {**out, 'public_ahead': self.replicated} if staleness else out

  def _per_group(self, state: state_lib.TrainState, fn) -> state_lib.TrainState:
    """`fn(leaf, real clients, stacked clients, g)` on every leaf of each group and of its lag
    buffer: both have the client axis first and the group's clients."""
    each = lambda trees: tuple(jax.tree.map(lambda x, g=g: fn(x, n, p, g), t) for g, (t, n, p)
                               in enumerate(zip(trees, self.sizes, self.padded)))
    return state.replace(groups=each(state.groups),
                         lag=None if state.lag is None else each(state.lag))

  def _pad(self, state: state_lib.TrainState) -> state_lib.TrainState:
    def pad(x, n, p, g):
      return jnp.concatenate([x, jnp.repeat(x[:1], p - n, axis=0)]) if p > n else x
    return self._per_group(state, pad)

  def pad_state(self, state: state_lib.TrainState) -> state_lib.TrainState:
    """Pads every group with copies of its client 0 and places the state on the mesh."""
    return jax.jit(self._pad, out_shardings=self.state_shardings())(state)

  def init_state(self, specs, image_shape, rng) -> state_lib.TrainState:
    """`population.init_state`, padded, created already sharded: each device builds its clients."""
    return jax.jit(lambda rng: self._pad(state_lib.init_state(specs, image_shape, rng)),
                   out_shardings=self.state_shardings())(rng)

  def restore_target(self, abstract: state_lib.TrainState) -> state_lib.TrainState:
    """`abstract` (the real clients' shapes) with the shardings to restore a checkpoint into.

    A group whose size the device count divides is restored by client (each
    process reads its own clients); any other group is replicated (every
    process reads all of it, and every device holds all of it until
    `pad_state` has kept each device's part): on accelerators, a large group
    resumes in less memory with a client count the device count divides.
    """
    d = self.mesh.devices.size
    def target(x, sharding):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    state = self._per_group(abstract, lambda x, n, p, g: target(
        x, self.clients if n % d == 0 else self.replicated))
    return state.replace(step=target(abstract.step, self.replicated))

  def unpad_state(self, state: state_lib.TrainState) -> state_lib.TrainState:
    """The real clients' state (e.g. for a checkpoint that any device count can restore)."""
    return self._per_group(state, lambda x, n, p, g: x[:n])

  def _local_positions(self, g: int) -> np.ndarray:
    """Stacked positions (within group g) held by this process's devices, in order."""
    index_map = self.clients.addressable_devices_indices_map((self.padded[g],))
    return np.unique(np.concatenate([np.arange(self.padded[g])[idx[0]]
                                     for idx in index_map.values()]))

  def local_client_ids(self) -> list[int]:
    """Global ids of the real clients whose private batches this process must feed."""
    ids, first = [], 0
    for g, n in enumerate(self.sizes):
      ids += [first + int(p) for p in self._local_positions(g) if p < n]
      first += n
    return ids

  def place_batch(self, batch):
    """Global batch from this process's part: the private arrays hold `local_client_ids()`.

    Returns `{'private': (per-group dicts of [padded, B, ...] arrays), 'public':
    {'image': replicated}}` (and `public_ahead`, replicated, when the batch has
    it: teachers that lag); padded clients get zeros.
    """
    private, row, groups = batch['private'], 0, []
    for g, n in enumerate(self.sizes):
      pos = self._local_positions(g)
      real = pos[pos < n]
      def block(x, real=real, pos=pos, row=row, g=g):
        x = np.asarray(x)
        out = np.zeros((len(pos), *x.shape[1:]), x.dtype)
        out[:len(real)] = x[row:row + len(real)]
        return jax.make_array_from_process_local_data(self.clients, out,
                                                      (self.padded[g], *x.shape[1:]))
      groups.append(jax.tree.map(block, private))
      row += len(real)
    shared = {k: self.replicate(batch[k]) for k in ('public', 'public_ahead') if k in batch}
    return {'private': tuple(groups), **shared}

  def replicate(self, tree):
    """Host arrays that every process holds whole (the public batches), replicated on the mesh."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x)), tree)

  def network(self, net: distill.Network) -> distill.Network:
    """A network over the real clients, over the stacked ones: padding is inactive, teaches
    nobody, and gets ids N, N+1, ... (jittable: `net` may be traced). A table's rows move to
    the stacked positions, its senders become stacked positions (padding: S)."""
    real = self.real_clients()
    if len(real) == sum(self.padded):
      return net
    s, n = sum(self.padded), len(real)
    pad_ids = np.setdiff1d(np.arange(s), real)
    ids = np.zeros(s, np.int32)
    ids[pad_ids] = n + np.arange(len(pad_ids))
    active = jnp.zeros(s, bool).at[real].set(net.active_S)
    ids = jnp.asarray(ids).at[real].set(net.ids_S)
    if net.senders_SxK is None:
      weights = jnp.zeros((s, s), jnp.float32).at[np.ix_(real, real)].set(net.weights_SxK)
      return distill.Network(weights, active, ids)
    k = net.senders_SxK.shape[1]
    position = jnp.asarray(np.append(real, s), jnp.int32)  # real id -> stacked; N (padding) -> S
    senders = jnp.asarray(np.where(np.arange(k) == 0, np.arange(s)[:, None], s), jnp.int32)
    return distill.Network(jnp.zeros((s, k), jnp.float32).at[real].set(net.weights_SxK),
                           active, ids, senders.at[real].set(position[net.senders_SxK]))

  def real(self, tree):
    """[S, ...] leaves over the stacked clients -> [N, ...] over the real ones."""
    real = self.real_clients()
    if len(real) == sum(self.padded):
      return tree
    return jax.tree.map(lambda x: x[real], tree)

  def state_specs(self):
    return state_lib.TrainState(step=P(), groups=P(AXIS), lag=P(AXIS))
