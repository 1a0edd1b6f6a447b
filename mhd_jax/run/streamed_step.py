"""The train step of a population streamed through the devices in cohorts (`placement.cohorts`).

`Streamed` is `programs.train_step` for a state that lives on the host
(`Cohorts.pad_state`) and a batch whose private part does (`Cohorts.place_batch`):
`(state, batch, rng, first_bad_N, dynamics) -> (state, metrics_N, first_bad_N)`.
Each step runs

  1. pass 1, `cohort_step.sent` on every cohort: its public outputs (with lag:
     what its buffer holds, and the buffer after the step, back to the host),
     gathered on every device into `distill.Teachers` of the N clients;
  2. pass 2, `cohort_step.train` on every cohort against them: its state after
     the step goes back into a fresh host store, its metrics into [N].

Each pass is one program per group, compiled once for a cohort of
`cohorts.width` clients sharded over the mesh (each device runs its own, as in
`programs`); `cohorts.stream` feeds it, the next cohort's transfer overlapping
the current one's compute. Its memory (`Streamed.memory_bytes`, XLA's analysis)
is checked against the devices' when it compiles.
"""

import functools

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np

from mhd_jax import config_base
from mhd_jax.algorithm import cohort_step
from mhd_jax.algorithm import distill
from mhd_jax.algorithm import step as step_lib
from mhd_jax.data import contract as data_contract
from mhd_jax.network import participation
from mhd_jax.placement import clients
from mhd_jax.placement import cohorts as cohorts_lib
from mhd_jax.placement import layout as layout_lib
from mhd_jax.population import state as state_lib
from mhd_jax.run import programs

FRACTION = 0.8  # of each device's memory a step plans on (the runtime and the host take the rest)


def _abstract(tree, sharding):
  """Shapes and dtypes of `tree`'s arrays (or abstract arrays), placed by `sharding`."""
  def one(x):
    dtype = x.dtype if hasattr(x, 'dtype') else jnp.asarray(x).dtype
    return jax.ShapeDtypeStruct(jnp.shape(x), dtype, sharding=sharding)
  return jax.tree.map(one, tree)


def _bytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _values_bytes(jaxpr) -> int:
  """Bytes of every value a jaxpr computes, in the jaxprs inside it too."""
  total = 0
  for eqn in jaxpr.eqns:
    total += sum(int(np.prod(v.aval.shape)) * getattr(v.aval.dtype, 'itemsize', 8)
                 for v in eqn.outvars if hasattr(v.aval, 'shape'))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if isinstance(sub, jax_core.ClosedJaxpr):
          total += _values_bytes(sub.jaxpr)
        elif isinstance(sub, jax_core.Jaxpr):
          total += _values_bytes(sub)
  return total


class Streamed:
  """The streamed train step; `lower(*args).compile()` compiles its programs, as a jitted
  step's does, and checks that a cohort fits the devices (`memory_bytes`)."""

  def __init__(self, cohorts: cohorts_lib.Cohorts, specs, config, strategy: str):
    self.cohorts, self.specs, self.config, self.strategy = cohorts, specs, config, strategy
    self.tau = data_contract.staleness(config)
    for_each = lambda fn, in_axes: clients.for_each_client(fn, strategy, cohorts.mesh, in_axes)
    c, r = cohorts.clients, cohorts.replicated
    kw = dict(config=config, for_each=for_each)
    self.sent = [jax.jit(functools.partial(_pass1, spec=s, **kw), donate_argnums=1,
                         in_shardings=(c, c, r, r, r, r, r), out_shardings=(r, r, c))
                 for s in cohorts.padded_specs(specs)]
    self.train = [jax.jit(functools.partial(_pass2, spec=s, group_index=g, **kw),
                          donate_argnums=0, in_shardings=(c, c, r, r, r, r, r, r),
                          out_shardings=(c, r))
                  for g, s in enumerate(cohorts.padded_specs(specs))]
    self.join = jax.jit(functools.partial(_join, sizes=cohorts.sizes), out_shardings=r)
    self.finish = jax.jit(functools.partial(_finish, sizes=cohorts.sizes), out_shardings=r)
    self.abstract, self.inflight, self.client_bytes = None, 0, 0

  def lower(self, state, batch, rng, first_bad_N, dynamics) -> 'Streamed':
    """Keeps the shapes of the step's arguments (the key, the dynamics, the batches': a
    cohort's state follows from the specs and the config; `state` may be None)."""
    del state, first_bad_N
    self.abstract = _abstract((rng, dynamics), self.cohorts.replicated)
    self.batch = (jnp.shape(batch['private'][0]['image'])[1:],  # [B, ...] of one client
                  jnp.shape(batch['public']['image']))          # [B_pub, ...]
    return self

  def _args(self, g: int):
    """Abstract (pass-1 arguments, pass-2 arguments) of a cohort of group g."""
    spec, k, (private_shape, public_shape) = (self.cohorts.padded_specs(self.specs)[g],
                                              self.cohorts.width, self.batch)
    c, r = self.cohorts.clients, self.cohorts.replicated
    keys = jax.ShapeDtypeStruct((k, 2), jnp.uint32)
    group = _abstract(jax.eval_shape(
        lambda keys: state_lib.init_clients(spec, keys, public_shape[1:]), keys), c)
    public = jax.ShapeDtypeStruct(public_shape, jnp.float32, sharding=r)
    buffer = None
    if self.tau:
      publics = jax.ShapeDtypeStruct((self.tau, *public_shape), jnp.float32)
      fill = functools.partial(initial_lag, spec=spec, config=self.config)
      buffer = _abstract(jax.eval_shape(fill, group, publics), c)
    rng, dynamics = self.abstract
    step, ids = (jax.ShapeDtypeStruct(s, jnp.int32, sharding=r) for s in ((), (k,)))
    sent = (group.replace(opt_state=None), buffer, public, public if self.tau else None, ids,
            step, dynamics)
    private = {'image': jax.ShapeDtypeStruct((k, *private_shape), jnp.float32, sharding=c),
               'label': jax.ShapeDtypeStruct((k, private_shape[0]), jnp.int32, sharding=c)}
    return sent, (group, private, public, None, ids, rng, step, dynamics)

  def _lowering(self):
    """Per group, the abstract arguments of its two passes (pass 2's teachers: every
    client's outputs)."""
    args = [self._args(g) for g in range(len(self.specs))]
    outs = [jax.eval_shape(self.sent[g], *a[0])[:2] for g, a in enumerate(args)]
    per_group = [[o] * len(self.cohorts.of_group(g)) for g, o in enumerate(outs)]
    teachers = _abstract(jax.eval_shape(self.join, per_group), self.cohorts.replicated)
    d = self.cohorts.mesh.devices.size
    self.inflight = max(_bytes(a[1][:2]) for a in args) // d  # the next cohort's inputs
    self.client_bytes = max(_bytes(a[1][0]) for a in args) // self.cohorts.width  # its state
    return [(a[0], (*a[1][:3], teachers, *a[1][4:])) for a in args]

  def bound_bytes(self) -> int:
    """Per device, more than a cohort needs: every value its two passes compute (traced, not
    compiled) and their arguments, all alive at once (XLA frees, reuses and fuses)."""
    total, args = 0, self._lowering()
    for fns, i in ((self.sent, 0), (self.train, 1)):
      for f, a in zip(fns, args):
        total = max(total, _bytes(a[i]) + _values_bytes(jax.make_jaxpr(f)(*a[i]).jaxpr))
    return total // self.cohorts.mesh.devices.size + self.inflight

  def compile(self, check: bool = True) -> 'Streamed':
    """Compiles every group's two passes for a cohort; with `check`, raises
    `config_base.ConfigError` (one line) when one cohort does not fit the devices' memory."""
    args = self._lowering()
    self.sent = [f.lower(*a[0]).compile() for f, a in zip(self.sent, args)]
    self.train = [f.lower(*a[1]).compile() for f, a in zip(self.train, args)]
    problem = check and self.memory_problem()
    if problem:
      raise config_base.ConfigError([problem])
    return self

  def memory_bytes(self) -> int:
    """Per device: the largest of the compiled passes' buffers (arguments, outputs,
    temporaries; XLA's memory analysis), plus the next cohort's inputs, in flight."""
    return max(layout_lib.compiled_bytes(p) for p in self.sent + self.train) + self.inflight

  def memory_problem(self) -> str | None:
    """One line when a cohort needs more than `FRACTION` of a device's memory, else None."""
    d = self.cohorts.mesh.devices.size
    need, have = self.memory_bytes(), FRACTION * layout_lib.memory_bytes(self.cohorts.mesh) / d
    if need <= have:
      return None
    width = self.cohorts.width
    fit = int(width * have / need) // d * d
    return (f'population.resident: a cohort of {width} clients ({width // d} per device) needs '
            f'{need / 2**30:.2f} GiB per device (XLA\'s memory analysis of its step) but '
            f'{have / 2**30:.2f} GiB are available ({FRACTION:.0%} of each of the {d} '
            'device(s)); ' + (f'use population.resident={fit} or less.' if fit else
                              'even one client per device does not fit: a smaller model or '
                              'batch.'))

  def pass1(self, state, batch, dynamics):
    """(every client's `distill.Teachers` of step state.step + 1, on the devices; the lag
    buffers after the step, on the host, or None)."""
    cohorts, step = self.cohorts, np.asarray(state.step + 1, np.int32)
    public, ahead = batch['public']['image'], batch.get('public_ahead', {}).get('image')
    sent, buffers = [[] for _ in self.specs], [[] for _ in self.specs]

    def run(c, x):
      out, sent_K, buffer = self.sent[c.group](*x, public, ahead, c.ids_K, step, dynamics)
      return out, sent_K, cohorts_lib.to_host(buffer)

    def keep(c, out):
      sent[c.group].append(out[:2])
      buffers[c.group].append(jax.device_get(out[2]))

    lagged = lambda g: None if state.lag is None else state.lag[g]
    cohorts_lib.stream(cohorts.cohorts, lambda c: cohorts.put(cohorts.take(
        (variables(state.groups[c.group]), lagged(c.group)), c)), run, keep)
    return self.join(sent), None if state.lag is None else tuple(
        cohorts.join(b, g) for g, b in enumerate(buffers))

  def __call__(self, state, batch, rng, first_bad_N, dynamics):
    cohorts, step = self.cohorts, np.asarray(state.step + 1, np.int32)  # t, 1-based
    teachers, lag = self.pass1(state, batch, dynamics)
    groups, metrics = [[] for _ in self.specs], [[] for _ in self.specs]

    def run(c, x):
      group, m = self.train[c.group](*x, batch['public']['image'], teachers, c.ids_K, rng,
                                     step, dynamics)
      return cohorts_lib.to_host(group), m

    def keep(c, out):
      groups[c.group].append(jax.device_get(out[0]))
      metrics[c.group].append(out[1])

    cohorts_lib.stream(cohorts.cohorts, lambda c: cohorts.put(cohorts.take(
        (state.groups[c.group], batch['private'][c.group]), c)), run, keep)
    metrics, first_bad_N = self.finish(metrics, first_bad_N, dynamics, step)
    groups = tuple(cohorts.join(p, g) for g, p in enumerate(groups))
    return state_lib.TrainState(step=step, groups=groups, lag=lag), metrics, first_bad_N


def variables(group: state_lib.Group) -> state_lib.Group:
  """What pass 1 reads of a group: its variables, not its optimizer state."""
  return group.replace(opt_state=None)


def _pass1(group, buffer, public, public_ahead, ids_K, step, dynamics, *, spec, config,
           for_each):
  active_K = participation.active_at(dynamics[1], step).at[ids_K].get(mode='fill',
                                                                      fill_value=False)
  return cohort_step.sent(group, buffer, public, public_ahead, active_K, step, spec=spec,
                          config=config, for_each=for_each)


def _pass2(group, private, public, teachers, ids_K, rng, step, dynamics, *, spec, group_index,
           config, for_each):
  net = programs.network_at(dynamics, step).cohort(ids_K)
  return cohort_step.train(group, private, public, teachers, net, rng, step, spec=spec,
                           group_index=group_index, config=config, for_each=for_each)


def initial_lag(group, publics_TxB, *, spec, config, for_each=None):
  """A cohort's lag buffer before step 1 (`step.initial_lag`), every client sending."""
  for_each = for_each or (lambda fn, in_axes: jax.vmap(fn, in_axes=in_axes))
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), groups=(group,))
  k = spec.num_clients
  return step_lib.initial_lag(state, publics_TxB, jnp.ones(k, bool), specs=(spec,),
                              config=config, for_each=for_each)[0]


def _concat(parts_by_group, sizes):
  """Per group, the cohorts' [width, ...] results joined and cut to its n_g real clients."""
  return [jax.tree.map(lambda *x, n=n: jnp.concatenate(x)[:n], *parts)
          for parts, n in zip(parts_by_group, sizes)]


def _join(sent_by_group, *, sizes) -> distill.Teachers:
  """Every client's pass-1 outputs, in id order: `distill.Teachers` of the N clients."""
  outs = _concat(sent_by_group, sizes)
  return distill.Teachers(logits_SxHxBxC=jnp.concatenate([o[0]['logits'] for o in outs]),
                          embs=[o[0]['emb'] for o in outs] if 'emb' in outs[0][0] else None,
                          sent_S=jnp.concatenate([o[1] for o in outs]))


def _finish(metrics_by_group, first_bad_N, dynamics, step, *, sizes):
  """(metrics [N], first_bad_N) as `programs.train_step` returns them."""
  metrics = jax.tree.map(lambda *x: jnp.concatenate(x), *_concat(metrics_by_group, sizes))
  first_bad_N = programs.watch_nonfinite(metrics, step, first_bad_N)
  return programs.taken_only(metrics, participation.active_at(dynamics[1], step)), first_bad_N
