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
"""

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from mhd_jax import clients
from mhd_jax import distill
from mhd_jax import models
from mhd_jax import state as state_lib


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


def private_batches(batch, specs):
  """Each group's private batch (`batch['private']`: one dict over all clients, or one per group)."""
  private = batch['private']
  if isinstance(private, (tuple, list)):
    return tuple(private)
  firsts = state_lib.offsets(specs)
  return tuple(jax.tree.map(lambda x, a=a, s=s: x[a:a + s.num_clients], private)
               for a, s in zip(firsts, specs))


def _loss(params, state, private, public, net, rng, specs, config, for_each):
  outs = [for_each(functools.partial(client_outputs, spec.model), in_axes=(0, 0, 0, None))(
      params[g], state.groups[g].batch_stats, private[g]['image'], public)
          for g, spec in enumerate(specs)]
  metrics = distill.terms(
      jnp.concatenate([o[0] for o in outs]), jnp.concatenate([p['label'] for p in private]),
      jnp.concatenate([o[1] for o in outs]), [o[2] for o in outs],
      [s.num_clients for s in specs], net, config, rng)
  return distill.total_loss(metrics, net), (metrics, tuple(o[3] for o in outs))


def _update(tx, params, grads, opt_state):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _keep_inactive(new, old, active_n):
  """`new` for the active clients, `old` (bit for bit) for the others."""
  return jax.tree.map(lambda a, b: jnp.where(active_n.reshape((-1,) + (1,) * (a.ndim - 1)), a, b),
                      new, old)


def train_step(state: state_lib.TrainState, batch, rng, net: distill.Network, *,
               specs: Sequence[state_lib.GroupSpec], config, for_each: Callable):
  """One step of every client: `(state, batch, rng, net) -> (state, distill.Metrics)` (pure).

  Args:
    state: the stacked population (S clients over its groups).
    batch: `{'private': {'image': [S, B, ...], 'label': [S, B]} or one such
      dict per group, 'public': {'image': [B_pub, ...]}}`.
    rng: the run's step key; the step folds in its step number.
    net: this step's `distill.Network` over the S clients. Inactive clients
      teach nobody, and their state comes back unchanged.
    specs: the groups (models, optimizers, sizes S_g).
    config: reads nu_main, nu_aux, nu_emb, temperature, target, include_self.
    for_each: `(fn, in_axes) -> fn over clients` (`clients.for_each_client`).
  """
  rng = jax.random.fold_in(rng, state.step)
  private = private_batches(batch, specs)
  params = tuple(g.params for g in state.groups)
  grads, (metrics, new_stats) = jax.grad(_loss, has_aux=True)(
      params, state, private, batch['public']['image'], net, rng, specs, config, for_each)
  groups = []
  for g, (spec, first) in enumerate(zip(specs, state_lib.offsets(specs))):
    # The optimizer is elementwise per client: vmap is the fast form on every backend.
    new_p, new_opt = jax.vmap(functools.partial(_update, spec.tx))(
        params[g], grads[g], state.groups[g].opt_state)
    new = state_lib.Group(params=new_p, batch_stats=new_stats[g], opt_state=new_opt)
    active_n = net.active_S[first:first + spec.num_clients]
    groups.append(_keep_inactive(new, state.groups[g], active_n))
  return state_lib.TrainState(step=state.step + 1, groups=tuple(groups)), metrics


def make_train_step(specs: Sequence[state_lib.GroupSpec], adjacency, config,
                    strategy: str = 'vmap'):
  """`train_step(state, batch, rng)` on one device over a fixed graph, every client active."""
  net = distill.Network.static(adjacency)
  for_each = lambda fn, in_axes: clients.for_each_client(fn, strategy, in_axes=in_axes)
  return lambda state, batch, rng: train_step(state, batch, rng, net, specs=specs,
                                              config=config, for_each=for_each)
