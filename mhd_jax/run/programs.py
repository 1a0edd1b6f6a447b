"""The run's compiled programs: the training step and prediction, placed on a `layout.Layout`.

Each is jitted once here, with the layout's shardings: the state is sharded by
client and donated, the public batch and the network replicated. Their
inputs and outputs speak of the N real clients (the layout pads and unpads
inside the program); metrics and predictions come back replicated.
"""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import sparse as scipy_sparse

from mhd_jax.algorithm import distill
from mhd_jax.algorithm import evaluate
from mhd_jax.algorithm import step as step_lib
from mhd_jax.data import contract as data_contract
from mhd_jax.network import graph_schedule
from mhd_jax.network import neighbours
from mhd_jax.network import participation
from mhd_jax.placement import clients
from mhd_jax.placement import layout as layout_lib


def static_dynamics(adjacency_NxN, sparse: bool = False):
  """The dynamics of a fixed graph where every client takes part every step (the paper's),
  dense or on a neighbour table (`sparse`)."""
  n = np.shape(adjacency_NxN)[0]  # dense, or scipy.sparse as `topology.build` gives it
  key = jax.random.PRNGKey(0)  # drawn from by neither
  if sparse:
    table, graphs = neighbours.build([adjacency_NxN])
  else:
    dense = adjacency_NxN.toarray() if scipy_sparse.issparse(adjacency_NxN) else adjacency_NxN
    table, graphs = None, np.asarray(dense, np.float32)[None]
  schedule = graph_schedule.Schedule(
      kind='static', graphs_GxNxK=jnp.asarray(graphs), key=key,
      failure_p=jnp.zeros((), jnp.float32), every=jnp.ones((), jnp.int32), table=table)
  part = participation.Participation(
      mode='all', key=key, availability=jnp.ones((), jnp.float32), trace_NxT=jnp.ones((n, 1), bool),
      every_N=jnp.ones(n, jnp.int32), phase_N=jnp.zeros(n, jnp.int32))
  return schedule, part


def network_at(dynamics, step) -> distill.Network:
  """The `distill.Network` of training step `step` (1-based, traced) over the real clients.

  `dynamics` is `(graph_schedule.Schedule, participation.Participation)`: the
  graph and who takes part are drawn from (seed, step) inside the program, so
  a graph that changes every step compiles once and a resume is exact.
  """
  schedule, part = dynamics
  active_N = participation.active_at(part, step)
  table = schedule.table
  return distill.Network(graph_schedule.weights_at(schedule, step), active_N,
                         jnp.arange(active_N.shape[0], dtype=jnp.int32),
                         None if table is None else table.senders_NxK)


def watch_nonfinite(metrics: distill.Metrics, step, first_bad_N):
  """Per client, the first step whose loss terms were not all finite (0: none so far).

  Computed on device in the step's program, so checking it costs one small
  transfer where the loop syncs anyway. The loss is that of the state before
  the update; `safety.make_state_check` checks the state after it.
  """
  finite_N = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.as_dict().values()]), axis=0)
  return jnp.where((first_bad_N == 0) & ~finite_N, step, first_bad_N)


def taken_only(metrics: distill.Metrics, active_N) -> distill.Metrics:
  """The metrics of the clients that took part in the step; 0 for the others, so that a log
  window's sums divided by each client's `participation.steps_taken` over the window are
  means over the steps it took part in (docs/dynamics.md)."""
  return jax.tree.map(lambda v: jnp.where(active_N, v, jnp.zeros_like(v)), metrics)


def train_step(layout: layout_lib.Layout, specs, config, strategy: str):
  """Jitted `(state, batch, rng, first_bad_N, dynamics) -> (state, metrics_N, first_bad_N)`.

  `state` comes from `layout.pad_state`, `batch` from `layout.place_batch`;
  `dynamics` gives each step's network (`network_at`). `metrics_N` are 0 for the
  clients that sat the step out (`taken_only`); `first_bad_N` watches them all.
  """
  padded = layout.padded_specs(specs)
  for_each = lambda fn, in_axes: clients.for_each_client(fn, strategy, layout.mesh, in_axes)

  tau = data_contract.staleness(config)

  def run(state, batch, rng, first_bad_N, dynamics):
    if (state.lag is None) != (tau == 0):  # at trace time: a state built for another staleness
      raise ValueError(f'dynamics.staleness={tau} but the state {"lacks" if tau else "has"} lag '
                       'buffers (programs.initial_lag fills them before step 1).')
    real_net = network_at(dynamics, state.step + 1)
    net = layout.network(real_net)
    state, metrics = step_lib.train_step(state, batch, rng, net, specs=padded, config=config,
                                         for_each=for_each)
    metrics = layout.real(metrics)
    first_bad_N = watch_nonfinite(metrics, state.step, first_bad_N)
    return state, taken_only(metrics, real_net.active_S), first_bad_N

  r = layout.replicated
  batch = layout.batch_shardings(tau)
  return jax.jit(run, in_shardings=(layout.state_shardings(), batch, r, r, r),
                 out_shardings=(layout.state_shardings(), r, r), donate_argnums=(0, 3))


def initial_lag(layout: layout_lib.Layout, specs, config, strategy: str):
  """Jitted `(state, publics_TxB) -> state` with the lag buffers of step 0 (teachers that lag):
  the initial models' outputs on the public batches of steps 1..tau, sent by every real
  client (`step.initial_lag`)."""
  padded = layout.padded_specs(specs)
  for_each = lambda fn, in_axes: clients.for_each_client(fn, strategy, layout.mesh, in_axes)
  real_S = layout.network(distill.Network.static(jnp.zeros((sum(layout.sizes),) * 2))).active_S

  def run(state, publics_TxB):
    return state.replace(lag=step_lib.initial_lag(state, publics_TxB, real_S, specs=padded,
                                                  config=config, for_each=for_each))

  return jax.jit(run, in_shardings=(layout.state_shardings(), layout.replicated),
                 out_shardings=layout.state_shardings(), donate_argnums=0)


def predict(layout: layout_lib.Layout, specs, strategy: str):
  """Jitted `predict(state, images) -> [N, H, B]` predictions, each device on its clients."""
  for_each = lambda fn, in_axes: clients.for_each_client(fn, strategy, layout.mesh, in_axes)
  fn = evaluate.make_predict(layout.padded_specs(specs), for_each)
  return jax.jit(lambda state, images: layout.real(fn(state, images)),
                 in_shardings=(layout.state_shardings(), layout.replicated),
                 out_shardings=layout.replicated)


def make_train_step(specs, adjacency, config, strategy: str = 'vmap'):
  """`train_step(state, batch, rng)` on one device over a fixed graph, every client active
  (unjitted: the tests' and benchmarks' plain form of `step.train_step`)."""
  net = distill.Network.static(adjacency)
  for_each = lambda fn, in_axes: clients.for_each_client(fn, strategy, in_axes=in_axes)
  return lambda state, batch, rng: step_lib.train_step(state, batch, rng, net, specs=specs,
                                                       config=config, for_each=for_each)
