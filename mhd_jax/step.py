"""The training step: private cross-entropy plus multi-head distillation, all clients at once.

Loss of client i (DESIGN §2):

    L_i = CE(z_i^0(x_i), y_i)
        + nu_main * KD_T(t_i^0 || z_i^0(u))
        + nu_aux  * sum_{k>=1} KD_T(t_i^k || z_i^k(u))
        + nu_emb  * mean_u ||e_i(u) - sg(t_i^emb)||^2

Each client runs its model once on its private batch and once on the shared
public batch u. The teachers are the stop-gradient of those same public
outputs, so distillation needs no extra model evaluations, and since every
target is a constant, the gradient of sum_i L_i with respect to client i's
parameters is the gradient of L_i alone. The private pass and the public pass
have separate batch statistics, so what client i sends (its public outputs)
never depends on its private batch of this step: either two model calls, or,
with `model.fused_passes`, one call on [x_i; u] whose BatchNorm layers keep
the two segments' statistics apart (`resnet.BatchNorm`; same outputs, same
running averages, one larger batch per convolution).
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from mhd_jax import losses
from mhd_jax import population as pop


def _apply_train(model, params, batch_stats, x):
  """Train-mode forward; returns (logits_HxBxC, embedding_BxD, new batch_stats)."""
  (logits, inter), upd = model.apply({'params': params, 'batch_stats': batch_stats}, x,
                                     train=True, mutable=['batch_stats'])
  return logits, inter['embedding'], upd.get('batch_stats', batch_stats)


def _apply_train_fused(model, params, batch_stats, x, u):
  """`_apply_train` on x, then on u, as one call on [x; u] with per-segment batch statistics.

  Returns (private logits_HxBxC, public logits_HxBpxC, public embedding_BpxD,
  new batch_stats): running averages updated by the private segment, then by
  the public one, as the two calls do.
  """
  b = x.shape[0]
  (logits, inter), upd = model.apply({'params': params, 'batch_stats': batch_stats},
                                     jnp.concatenate([x, u]), train=True,
                                     segments=(b, u.shape[0]), mutable=['batch_stats'])
  return logits[:, :b], logits[:, b:], inter['embedding'][b:], upd.get('batch_stats',
                                                                       batch_stats)


def client_losses(logits_priv_HxBxC, labels_B, logits_pub_HxBxC, targets_HxBxC, has_target_H,
                  emb_loss, config):
  """The loss terms of one client given its (constant) targets; returns a dict of scalars.

  `emb_loss` is the client's embedding-distillation term, computed per group
  (embedding sizes differ between groups).
  """
  t = config.temperature
  kd_H = jnp.stack([losses.kd(targets_HxBxC[k], logits_pub_HxBxC[k], t)
                    for k in range(logits_pub_HxBxC.shape[0])]) * has_target_H
  terms = {
      'ce': losses.cross_entropy(logits_priv_HxBxC[0], labels_B),
      'kd_main': kd_H[0],
      'kd_aux': kd_H[1:].sum(),
      'emb': emb_loss,
  }
  terms['loss'] = (terms['ce'] + config.nu_main * terms['kd_main']
                   + config.nu_aux * terms['kd_aux'] + config.nu_emb * terms['emb'])
  terms['train_acc'] = jnp.mean(jnp.argmax(logits_priv_HxBxC[0], -1) == labels_B)
  return terms


def _private_batches(batch, specs):
  """Each group's private batch: `batch['private']` is one dict over all clients or a tuple per group."""
  private = batch['private']
  if isinstance(private, (tuple, list)):
    return tuple(private)
  firsts = pop.offsets(specs)
  return tuple(jax.tree.map(lambda x, a=a, s=s: x[a:a + s.num_clients], private)
               for a, s in zip(firsts, specs))


def make_train_step(specs: Sequence[pop.GroupSpec], adjacency, config, strategy: str = 'vmap',
                    mesh=None, real_clients=None):
  """Builds `train_step(state, batch, rng) -> (state, metrics)` (pure; jit it).

  Args:
    specs: the population's groups.
    adjacency: [N, N] over the real clients, A[i, j] > 0 when i learns from j.
    config: reads nu_main, nu_aux, nu_emb, temperature, target, include_self.
    strategy: how clients are run (see `population.map_clients`).
    mesh: a `jax.sharding.Mesh` with a 'clients' axis, or None. With a mesh,
      each device runs the model on its own clients only (`shard_map` over the
      client axis of every group); the targets are built from all clients'
      public outputs in the global view, so XLA gathers those across devices.
    real_clients: positions, among the stacked clients, of the N real ones
      when the groups are padded to fill the mesh (`sharding.Layout`); None
      when every stacked client is real. Padded clients neither teach nor
      learn: they get no target, no loss, and their state is left unchanged.

  `batch['private']` is `{'image': [N, B, ...], 'label': [N, B]}` over all
  clients, or a tuple of such dicts, one per group. Metrics are per real
  client, arrays [N] ('ce', 'kd_main', 'kd_aux', 'emb', 'loss', 'train_acc').
  """
  num_heads = specs[0].model.num_heads
  weights_HxNxN = losses.candidate_weights(jnp.asarray(adjacency, jnp.float32), num_heads,
                                           config.include_self)
  n_stacked = sum(s.num_clients for s in specs)
  firsts = pop.offsets(specs)  # stacked positions of each group's first client
  real = None if real_clients is None else jnp.asarray(real_clients, jnp.int32)
  if real is not None and real.shape[0] == n_stacked:
    real = None
  mask_N = (jnp.ones(n_stacked, bool) if real is None
            else jnp.zeros(n_stacked, bool).at[real].set(True))

  def run_clients(model, params, stats, x, u):
    def run(params, stats, x, u):
      if model.fused_passes:
        return _apply_train_fused(model, params, stats, x, u)
      lp, _, stats = _apply_train(model, params, stats, x)
      lu, eu, stats = _apply_train(model, params, stats, u)
      return lp, lu, eu, stats
    return pop.map_clients(run, strategy, params, stats, x, u, in_axes=(0, 0, 0, None))

  if mesh is not None:
    from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
    clients = P('clients')
    run_clients_fn = run_clients
    def run_clients(model, params, stats, x, u):  # pylint: disable=function-redefined
      return jax.shard_map(functools.partial(run_clients_fn, model), mesh=mesh,
                           in_specs=(clients, clients, clients, P()), out_specs=clients)(
                               params, stats, x, u)

  def forward(params_groups, state, private, public):
    """Every client's private and public logits (concatenated over groups), embeddings per group."""
    outs = [run_clients(spec.model, params_groups[g], state.groups[g].batch_stats,
                        private[g]['image'], public)
            for g, spec in enumerate(specs)]
    lp, lu = (jnp.concatenate([o[i] for o in outs]) for i in range(2))
    return lp, lu, [o[2] for o in outs], tuple(o[3] for o in outs)

  def scatter(x_real, fill=0):
    """[N, ...] over the real clients -> [stacked, ...] with `fill` at padded positions."""
    if real is None:
      return x_real
    return jnp.full((n_stacked, *x_real.shape[1:]), fill, x_real.dtype).at[real].set(x_real)

  def gather(x):
    return x if real is None else x[real]

  def embedding_losses(mixing_NxHxBxN, embs):
    """[stacked] embedding terms. Client i's target follows head 0's source, restricted to
    candidates whose embedding size matches i's (renormalised; examples whose
    source has another size carry no embedding loss)."""
    m_SxHxBxN = scatter(mixing_NxHxBxN)  # rows, then columns, to stacked positions
    if real is not None:
      m_SxHxBxN = jnp.zeros((*m_SxHxBxN.shape[:3], n_stacked), m_SxHxBxN.dtype
                            ).at[..., real].set(m_SxHxBxN)
    sizes = [e.shape[-1] for e in embs]
    out = []
    for g, emb in enumerate(embs):
      same = [h for h in range(len(embs)) if sizes[h] == sizes[g]]
      cols = jnp.concatenate([jnp.arange(firsts[h], firsts[h] + specs[h].num_clients)
                              for h in same])
      m_nxBxM = m_SxHxBxN[firsts[g]:firsts[g] + specs[g].num_clients, 0][:, :, cols]
      total_nxB = m_nxBxM.sum(-1)
      m_nxBxM = m_nxBxM / jnp.maximum(total_nxB, 1e-30)[..., None]
      teachers = jax.lax.stop_gradient(jnp.concatenate([embs[h] for h in same]))
      targets = losses.mix_embeddings(m_nxBxM, teachers)
      out.append(jax.vmap(losses.embedding_mse)(emb, targets, (total_nxB > 0).astype(emb.dtype)))
    return jnp.concatenate(out)

  def loss_fn(params_groups, state, private, public, rng):
    lp_NxHxBxC, lu_NxHxBxC, embs, new_stats = forward(params_groups, state, private, public)
    # Targets are built over the real clients only, so padding changes no draw.
    probs = losses.source_probs(jax.lax.stop_gradient(gather(lu_NxHxBxC)), config.temperature)
    mixing = losses.mixing_weights(probs, weights_HxNxN, config.target, rng)
    targets = scatter(losses.mix_targets(mixing, probs))
    has_target_NxH = scatter(mixing.sum(axis=(2, 3)) > 0, False)
    emb_N = (embedding_losses(mixing, embs) if config.nu_emb
             else jnp.zeros(n_stacked, lp_NxHxBxC.dtype))
    labels = jnp.concatenate([p['label'] for p in private])
    terms = jax.vmap(functools.partial(client_losses, config=config))(
        lp_NxHxBxC, labels, lu_NxHxBxC, targets, has_target_NxH, emb_N)
    return jnp.where(mask_N, terms['loss'], 0.0).sum(), (terms, new_stats)

  def keep_padded(new, old, first):
    """Leaves padded clients' state as it was (their gradients are zero, but not their decay)."""
    if real is None:
      return new
    m = jax.lax.dynamic_slice_in_dim(mask_N, first, jax.tree.leaves(new)[0].shape[0])
    return jax.tree.map(lambda a, b: jnp.where(m.reshape((-1,) + (1,) * (a.ndim - 1)), a, b),
                        new, old)

  def train_step(state: pop.TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    private = _private_batches(batch, specs)
    params = tuple(g.params for g in state.groups)
    grads, (terms, new_stats) = jax.grad(loss_fn, has_aux=True)(
        params, state, private, batch['public']['image'], rng)
    groups = []
    for g, (spec, first) in enumerate(zip(specs, pop.offsets(specs))):
      def update(p, gr, opt, tx=spec.tx):
        upd, opt = tx.update(gr, opt, p)
        return optax.apply_updates(p, upd), opt
      # The optimizer is elementwise per client: vmap is the fast form on every backend.
      new_p, new_opt = jax.vmap(update)(params[g], grads[g], state.groups[g].opt_state)
      old = state.groups[g]
      groups.append(keep_padded(
          pop.Group(params=new_p, batch_stats=new_stats[g], opt_state=new_opt), old, first))
    return (pop.TrainState(step=state.step + 1, groups=tuple(groups)),
            jax.tree.map(gather, terms))

  return train_step
