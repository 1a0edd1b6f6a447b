"""The training step: every client's private cross-entropy plus multi-head distillation.

Each client runs its model once on its private batch and once on the shared
public batch u; the teachers are the stop-gradient of those same public
outputs (`distill`), so distillation needs no extra model evaluations. The
private pass and the public pass have separate batch statistics, so what
client i sends (its public outputs) never depends on its private batch of
this step: either two model calls, or, with `model.fused_passes`, one call on
[x_i; u] whose BatchNorm layers keep the two segments' statistics apart
(`resnet.BatchNorm`; same outputs, same running averages).

Where the clients run (strategy, devices) is the `for_each` argument's
business (`clients.for_each_client`); which clients talk is the `Network`'s.

Teachers that lag tau >= 1 steps (`state.lag` not None; docs/dynamics.md):
the targets mix what the neighbours sent tau steps ago for this step's public
batch (`lagged_teachers`), and each client runs one more public forward, on
the batch of step t + tau, whose outputs go into the buffer. tau = 0 (no
buffer) is the step above, op for op.
"""

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from mhd_jax import models
from mhd_jax.algorithm import distill
from mhd_jax.network import lag
from mhd_jax.population import state as state_lib
from mhd_jax.wire import privacy


def client_outputs(model, params, batch_stats, x, u):
  """(private logits, public logits, public embedding, batch_stats) of one client."""
  if model.fused_passes:
    b = x.shape[0]
    logits, emb, stats = models.forward(model, params, batch_stats, jnp.concatenate([x, u]),
                                        train=True, segments=(b, u.shape[0]))
    return logits[:, :b], logits[:, b:], emb[b:], stats
  private, _, batch_stats = models.forward(model, params, batch_stats, x, train=True)
  public, emb, batch_stats = models.forward(model, params, batch_stats, u, train=True)
  return private, public, emb, batch_stats


def sent_outputs(model, params, batch_stats, u, with_emb: bool):
  """What one client sends on public batch u: `{'logits': [H, B, C]}` (and `'emb'`: [B, D]).

  Training mode, like the live public pass (u's own batch statistics), so a
  message computed ahead is what the live pass would have given with the same
  parameters. The running statistics this pass would update are discarded:
  a message is not a training step, and the state's batch_stats change only
  through the client's own training passes.
  """
  logits, emb, _ = models.forward(model, params, batch_stats, u, train=True)
  return {'logits': logits, 'emb': emb} if with_emb else {'logits': logits}


def _sent_by_groups(state, u, specs, config, for_each):
  """Each group's `sent_outputs` on public batch u with the state's (pre-step) variables."""
  return [for_each(functools.partial(sent_outputs, spec.model, with_emb=bool(config.nu_emb)),
                   in_axes=(0, 0, None))(g.params, g.batch_stats, u)
          for spec, g in zip(specs, state.groups)]


def initial_lag(state, publics_TxB, sent_S, *, specs, config, for_each):
  """The lag buffers before step 1: the initial models' outputs on the public batches of
  steps 1..tau (`publics_TxB`, [tau, B_pub, ...]), sent where `sent_S` (the real clients)."""
  tau = publics_TxB.shape[0]
  outs = [_sent_by_groups(state, publics_TxB[s], specs, config, for_each) for s in range(tau)]
  buffers = []
  for g, first in enumerate(state_lib.offsets(specs)):
    buffer = lag.empty(outs[0][g], tau)
    for s in range(tau):
      buffer = lag.push(buffer, s + 1, outs[s][g], sent_S[first:first + specs[g].num_clients])
    buffers.append(buffer)
  return tuple(buffers)


def lagged_teachers(state, public_ahead, net, specs, config, for_each):
  """(`distill.Teachers` of step t = state.step + 1, the lag buffers after it).

  Reads what each client sent for step t's public batch (computed at step
  t - tau with its parameters of then), and stores in its place each client's
  outputs now (pre-step parameters and batch statistics) on `public_ahead`,
  the batch of step t + tau, flagged sent where the client is active now.
  """
  step = state.step + 1
  ahead = _sent_by_groups(state, public_ahead, specs, config, for_each)
  reads = [lag.read_and_push(buffer, step, out, net.active_S[first:first + spec.num_clients])
           for buffer, out, spec, first in zip(state.lag, ahead, specs, state_lib.offsets(specs))]
  teachers = distill.Teachers(
      logits_SxHxBxC=jnp.concatenate([r[1]['logits'] for r in reads]),
      embs=[r[1]['emb'] for r in reads] if config.nu_emb else None,
      sent_S=jnp.concatenate([r[0] for r in reads]))
  return teachers, tuple(r[2] for r in reads)


def private_batches(batch, specs):
  """Each group's private batch (`batch['private']`: one dict over all clients, or one per group)."""
  private = batch['private']
  if isinstance(private, (tuple, list)):
    return tuple(private)
  firsts = state_lib.offsets(specs)
  return tuple(jax.tree.map(lambda x, a=a, s=s: x[a:a + s.num_clients], private)
               for a, s in zip(firsts, specs))


def _loss(params, state, private, public, net, rng, specs, config, for_each, step, teachers,
          dp=False):
  """The active clients' summed loss (without the private CE under `dp`: `private_grads`
  gives its gradient) and (metrics, batch statistics)."""
  outs = [for_each(functools.partial(client_outputs, spec.model), in_axes=(0, 0, 0, None))(
      params[g], state.groups[g].batch_stats, private[g]['image'], public)
          for g, spec in enumerate(specs)]
  metrics = distill.terms(
      jnp.concatenate([o[0] for o in outs]), jnp.concatenate([p['label'] for p in private]),
      jnp.concatenate([o[1] for o in outs]), [o[2] for o in outs],
      [s.num_clients for s in specs], net, config, rng, step, teachers)
  loss = distill.total_loss(metrics, net, config if dp else None)
  return loss, (metrics, tuple(o[3] for o in outs))


def per_example_ce(model, params, x_BxF, y_B):
  """[B] cross-entropy of head 0 on each private example (a model without batch statistics)."""
  logits_HxBxC, _, _ = models.forward(model, params, {}, x_BxF, train=True)
  logp_BxC = jax.nn.log_softmax(logits_HxBxC[0])
  return -jnp.take_along_axis(logp_BxC, y_B[:, None], axis=1)[:, 0]


def private_grads(params, private, net, rng, specs, dp_config, for_each):
  """Per group, every client's DP-SGD gradient of its private CE (`privacy.private_grad`).

  Client i's noise key is fold_in(rng', id_i), rng' a key split off the step's
  key: it depends on the client's id only, never on another client's data or
  on how many clients are stacked beside it.
  """
  dp_rng = jax.random.split(rng)[1]  # a stream apart from the target draws' fold_in(rng, id)
  keys_S = jax.vmap(lambda i: jax.random.fold_in(dp_rng, i))(net.ids_S)
  out = []
  for g, (spec, first) in enumerate(zip(specs, state_lib.offsets(specs))):
    fn = lambda p, x, y, key, model=spec.model: privacy.private_grad(
        functools.partial(per_example_ce, model), p, x, y, dp_config.clip_norm,
        dp_config.noise_multiplier, key)
    out.append(for_each(fn, in_axes=(0, 0, 0, 0))(
        params[g], private[g]['image'], private[g]['label'],
        keys_S[first:first + spec.num_clients]))
  return tuple(out)


def _update(tx, params, grads, opt_state):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _keep_inactive(new, old, active_n):
  """`new` for the active clients, `old` (bit for bit) for the others."""
  return jax.tree.map(lambda a, b: jnp.where(active_n.reshape((-1,) + (1,) * (a.ndim - 1)), a, b),
                      new, old)


def optimizer_step(spec: state_lib.GroupSpec, group: state_lib.Group, grads, batch_stats,
                   active_n) -> state_lib.Group:
  """The group after its optimizer step on `grads`, with the batch statistics of its passes;
  the clients not in `active_n` keep their state bit for bit."""
  # The optimizer is elementwise per client: vmap is the fast form on every backend.
  new_p, new_opt = jax.vmap(functools.partial(_update, spec.tx))(group.params, grads,
                                                                  group.opt_state)
  new = state_lib.Group(params=new_p, batch_stats=batch_stats, opt_state=new_opt)
  return _keep_inactive(new, group, active_n)


def train_step(state: state_lib.TrainState, batch, rng, net: distill.Network, *,
               specs: Sequence[state_lib.GroupSpec], config, for_each: Callable):
  """One step of every client: `(state, batch, rng, net) -> (state, distill.Metrics)` (pure).

  Args:
    state: the stacked population (S clients over its groups).
    batch: `{'private': {'image': [S, B, ...], 'label': [S, B]} or one such
      dict per group, 'public': {'image': [B_pub, ...]}}`, plus `'public_ahead'`
      (the public batch of step t + tau) when `state.lag` is not None.
    rng: the run's step key; the step folds in its step number.
    net: this step's `distill.Network` over the S clients. Inactive clients
      teach nobody, and their state comes back unchanged.
    specs: the groups (models, optimizers, sizes S_g).
    config: reads nu_main, nu_aux, nu_emb, temperature, target, include_self, and where
      present target_power (default 1), wire (`compression.WireSpec`) and dp (DP-SGD on the private CE: its
      gradient is `privacy.private_grad`'s, the distillation terms' is added as is).
    for_each: `(fn, in_axes) -> fn over clients` (`clients.for_each_client`).
  """
  rng = jax.random.fold_in(rng, state.step)
  private = private_batches(batch, specs)
  params = tuple(g.params for g in state.groups)
  teachers, buffers = None, None
  if state.lag is not None:
    teachers, buffers = lagged_teachers(state, batch['public_ahead']['image'], net, specs, config,
                                        for_each)
  dp = config.get('dp') is not None and bool(config.dp.enabled)
  grads, (metrics, new_stats) = jax.grad(_loss, has_aux=True)(
      params, state, private, batch['public']['image'], net, rng, specs, config, for_each,
      state.step + 1, teachers, dp)
  if dp:  # public terms' gradient + each client's DP-SGD gradient of its private CE
    grads = jax.tree.map(jnp.add, grads,
                         private_grads(params, private, net, rng, specs, config.dp, for_each))
  groups = tuple(optimizer_step(spec, state.groups[g], grads[g], new_stats[g],
                                net.active_S[first:first + spec.num_clients])
                 for g, (spec, first) in enumerate(zip(specs, state_lib.offsets(specs))))
  # Every client's buffer moves on: an inactive client's slot now holds what it did not send.
  return state_lib.TrainState(step=state.step + 1, groups=groups, lag=buffers), metrics
