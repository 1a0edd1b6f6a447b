"""A population larger than the devices: its state in host memory, streamed through them in
cohorts of K clients (`population.resident = K`; docs/scale.md, "Cohorts").

The host store is a `TrainState` whose leaves are numpy arrays over the N real
clients, group after group: exactly what a checkpoint holds, so checkpoints,
resume and `mhd_jax.load` are those of the resident layout. `Cohorts` says
which clients form each cohort (up to K clients of one group, padded to the
cohort width, a multiple of the device count, with copies of its first
client that are never active), and moves them: `take` slices a cohort out of
host arrays, `put` places it on the mesh (sharded by client, as the resident
`layout` shards a group), `stream` runs a program on every cohort with the next
cohort's transfer issued before the current one's result is waited for.

A `Cohorts` also answers what the training loop asks of a `layout.Layout`
(`init_state`, `restore_target`, `pad_state`, `unpad_state`, `place_batch`,
`replicate`, ...), for a state that lives on the host.
"""

import dataclasses
import functools
from typing import Callable, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P, SingleDeviceSharding
import numpy as np

from mhd_jax.placement import layout as layout_lib
from mhd_jax.population import state as state_lib


@dataclasses.dataclass(frozen=True)
class Cohort:
  """Up to `width` clients of one group that go through the devices together."""
  group: int
  start: int         # its first client's position within the group
  count: int         # its real clients; the rest of the width is padding
  ids_K: np.ndarray  # int32 [width] global ids; padding N, N + 1, ... (never active)


def host_device() -> jax.Device:
  """Where the host store is put to be saved: the CPU backend's device (an accelerator's
  host), or the first device where JAX was started without a CPU backend."""
  try:
    return jax.local_devices(backend='cpu')[0]
  except RuntimeError:
    return jax.local_devices()[0]


@dataclasses.dataclass(frozen=True)
class Cohorts:
  """Groups of `sizes` real clients, streamed through the `mesh` in cohorts of `width`."""
  mesh: Mesh
  sizes: tuple[int, ...]
  width: int  # clients per cohort: K rounded up to a multiple of the device count

  @classmethod
  def create(cls, sizes: Sequence[int], resident: int, mesh: Mesh) -> 'Cohorts':
    """Cohorts of `resident` = K clients (a cohort never spans two groups)."""
    d = mesh.devices.size
    sizes = tuple(int(n) for n in sizes)
    return cls(mesh, sizes, -(-min(resident, max(sizes)) // d) * d)

  @functools.cached_property
  def cohorts(self) -> tuple[Cohort, ...]:
    """Every cohort, group after group, in client order."""
    out, n, first = [], sum(self.sizes), 0
    for g, size in enumerate(self.sizes):
      for start in range(0, size, self.width):
        count = min(self.width, size - start)
        ids = np.concatenate([first + start + np.arange(count),
                              n + np.arange(self.width - count)]).astype(np.int32)
        out.append(Cohort(g, start, count, ids))
      first += size
    return tuple(out)

  def of_group(self, g: int) -> list[Cohort]:
    return [c for c in self.cohorts if c.group == g]

  @property
  def clients(self) -> NamedSharding:
    return NamedSharding(self.mesh, P(layout_lib.AXIS))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def padded(self) -> tuple[int, ...]:
    """The senders a cohort's exchange reads: every real client of each group."""
    return self.sizes

  @property
  def num_padding(self) -> int:
    """Padded places in the cohorts of one step (their work is thrown away)."""
    return sum(self.width - c.count for c in self.cohorts)

  def padded_specs(self, specs):
    """The groups' specs as one cohort sees them: `width` clients."""
    return tuple(dataclasses.replace(s, num_clients=self.width) for s in specs)

  def take(self, tree_n, cohort: Cohort):
    """A cohort's rows of host arrays [n_g, ...]: [width, ...], the padding copies its first."""
    def rows(x):
      part = np.asarray(x)[cohort.start:cohort.start + cohort.count]
      pad = self.width - cohort.count
      return np.concatenate([part, np.repeat(part[:1], pad, axis=0)]) if pad else part
    return jax.tree.map(rows, tree_n)

  def put(self, tree_k):
    """Host arrays [width, ...] on the mesh, sharded by client (the transfer is asynchronous)."""
    return jax.device_put(tree_k, self.clients)

  def replicate(self, tree):
    """Host arrays every device holds whole (the public batches), replicated on the mesh."""
    return jax.device_put(tree, self.replicated)

  # What the loop asks of a layout, for a state on the host.

  def local_client_ids(self) -> list[int]:
    return list(range(sum(self.sizes)))

  def init_state(self, specs, image_shape, rng) -> state_lib.TrainState:
    """`population.init_state` on the host, cohort by cohort on the devices (client i's
    variables from fold_in(rng, i), as in the resident layout)."""
    groups = []
    for g, spec in enumerate(self.padded_specs(specs)):
      init = jax.jit(lambda keys, spec=spec: state_lib.init_clients(spec, keys, image_shape),
                     out_shardings=self.clients)
      parts = [jax.device_get(init(state_lib.keys_of(rng, c.ids_K)))
               for c in self.of_group(g)]
      groups.append(self.join(parts, g))
    return state_lib.TrainState(step=np.zeros((), np.int32), groups=tuple(groups))

  def join(self, parts, g: int):
    """Cohort results of group g ([width, ...] each, in order) -> host arrays [n_g, ...]."""
    return jax.tree.map(lambda *xs: np.concatenate(xs)[:self.sizes[g]], *parts)

  def restore_target(self, abstract: state_lib.TrainState) -> state_lib.TrainState:
    """`abstract` (the real clients' shapes) restored onto the host."""
    host = SingleDeviceSharding(host_device())
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=host),
                        abstract)

  def pad_state(self, state: state_lib.TrainState) -> state_lib.TrainState:
    """A state of the real clients (e.g. restored) as the host store: numpy arrays."""
    return jax.tree.map(np.asarray, state)

  def unpad_state(self, state: state_lib.TrainState) -> state_lib.TrainState:
    """The host store as a checkpoint saves it: JAX arrays (on the host), as the resident
    layout's are, so that the checkpoint's format is the same."""
    return jax.device_put(state, host_device())

  def place_batch(self, batch):
    """The private batch stays on the host, one dict per group ([n_g, B, ...]); the public
    batches are replicated on the mesh."""
    private = batch['private']
    firsts = state_lib.firsts(self.sizes)
    if not isinstance(private, (tuple, list)):
      private = tuple(jax.tree.map(lambda x, a=a, n=n: np.asarray(x)[a:a + n], private)
                      for a, n in zip(firsts, self.sizes))
    shared = {k: self.replicate(batch[k]) for k in ('public', 'public_ahead') if k in batch}
    return {'private': tuple(private), **shared}


def stream(cohorts: Sequence[Cohort], load: Callable, run: Callable, keep: Callable) -> None:
  """`keep(c, run(c, load(c)))` for every cohort c, pipelined: `load` (the host-to-device
  transfer) of the next cohort is issued before `keep` waits for the current result, so
  the transfers overlap the computation (JAX dispatches both asynchronously); `run`
  should start its results' copies to the host (`to_host`) before it returns."""
  pending, loaded = None, load(cohorts[0]) if cohorts else None
  for i, cohort in enumerate(cohorts):
    out = run(cohort, loaded)
    loaded = load(cohorts[i + 1]) if i + 1 < len(cohorts) else None
    if pending is not None:
      keep(*pending)
    pending = (cohort, out)
  if pending is not None:
    keep(*pending)


def to_host(tree):
  """Starts copying every array of `tree` to the host; returns it."""
  for x in jax.tree.leaves(tree):
    x.copy_to_host_async()
  return tree


def finite_per_client(state: state_lib.TrainState) -> np.ndarray:
  """[N] True where every parameter, batch statistic and optimizer value of a host state is
  finite (`safety.make_state_check` of the resident layout)."""
  per_group = []
  for group in state.groups:
    leaves = [np.asarray(x) for x in jax.tree.leaves(group)]
    leaves = [x.reshape(x.shape[0], -1) for x in leaves if np.issubdtype(x.dtype, np.inexact)]
    per_group.append(np.all([np.isfinite(x).all(1) for x in leaves], axis=0))
  return np.concatenate(per_group)
