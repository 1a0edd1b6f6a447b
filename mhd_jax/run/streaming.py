"""The programs of a run whose population is streamed through the devices in cohorts
(`placement.cohorts`), as `programs` has them for a resident one: the train step
(`streamed_step.Streamed`), the lag buffers' start, prediction, the state check and
weight averaging, each over a state that lives on the host.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mhd_jax.algorithm import evaluate
from mhd_jax.placement import clients
from mhd_jax.placement import cohorts as cohorts_lib
from mhd_jax.population import state as state_lib
from mhd_jax.run import programs
from mhd_jax.run import streamed_step


def train_step(cohorts, specs, config, strategy: str) -> streamed_step.Streamed:
  """The streamed train step (compile with `.lower(*args).compile()`, as `programs.train_step`)."""
  return streamed_step.Streamed(cohorts, specs, config, strategy)


def initial_lag(cohorts, specs, config, strategy: str):
  """`(state, publics_TxB) -> state` with the lag buffers of step 0 (`programs.initial_lag`),
  cohort by cohort."""
  for_each = lambda fn, in_axes: clients.for_each_client(fn, strategy, cohorts.mesh, in_axes)
  fill = [jax.jit(functools.partial(streamed_step.initial_lag, spec=s, config=config,
                                    for_each=for_each),
                  in_shardings=(cohorts.clients, cohorts.replicated),
                  out_shardings=cohorts.clients) for s in cohorts.padded_specs(specs)]

  def run(state, publics_TxB):
    buffers = [[] for _ in specs]
    cohorts_lib.stream(
        cohorts.cohorts, lambda c: cohorts.put(cohorts.take(state.groups[c.group], c)),
        lambda c, group: cohorts_lib.to_host(fill[c.group](group, publics_TxB)),
        lambda c, out: buffers[c.group].append(jax.device_get(out)))
    return state.replace(lag=tuple(cohorts.join(b, g) for g, b in enumerate(buffers)))

  return run


def predict(cohorts, specs, strategy: str):
  """`predict(state, images) -> [N, H, B]` predictions of a host state, cohort by cohort."""
  for_each = lambda fn, in_axes: clients.for_each_client(fn, strategy, cohorts.mesh, in_axes)
  fns = [jax.jit(lambda group, images, s=s: evaluate.make_predict((s,), for_each)(
      state_lib.TrainState(step=jnp.zeros((), jnp.int32), groups=(group,)), images),
                 in_shardings=(cohorts.clients, cohorts.replicated),
                 out_shardings=cohorts.replicated) for s in cohorts.padded_specs(specs)]

  def run(state, images):
    images, preds = cohorts.replicate(images), [[] for _ in specs]
    cohorts_lib.stream(
        cohorts.cohorts,
        lambda c: cohorts.put(cohorts.take(streamed_step.variables(state.groups[c.group]), c)),
        lambda c, group: cohorts_lib.to_host(fns[c.group](group, images)),
        lambda c, out: preds[c.group].append(np.asarray(out)))
    return np.concatenate([cohorts.join(p, g) for g, p in enumerate(preds)])

  return run


def state_check(cohorts):
  """`state -> [N] finite` of a host state (`safety.make_state_check` of the resident one)."""
  del cohorts
  return cohorts_lib.finite_per_client


def average(average_real):
  """`(state, dynamics, step) -> state`: FedAvg / gossip averaging of a host state over the
  real clients on the graph and participants of `step`, on the host's device (the whole
  population at once: host memory holds it)."""
  def run(state, dynamics, step):
    net = programs.network_at(dynamics, step)
    return average_real(state, net.weights_SxK, net.active_S, net.senders_SxK)

  fn, host = jax.jit(run), cohorts_lib.host_device()

  def on_host(state, dynamics, step):
    with jax.default_device(host):
      out = fn(jax.device_put(state, host), jax.device_put(dynamics, host), step)
    return jax.tree.map(np.asarray, out)

  return on_host
