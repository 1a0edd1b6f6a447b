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
are separate model calls (separate batch statistics), so what client i sends
(its public outputs) never depends on its private batch of this step.
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


def make_train_step(specs: Sequence[pop.GroupSpec], adjacency, config, strategy: str = 'vmap'):
  """Builds `train_step(state, batch, rng) -> (state, metrics)` (pure; jit it).

  Args:
    specs: the population's groups.
    adjacency: [N, N], A[i, j] > 0 when i learns from j.
    config: reads nu_main, nu_aux, nu_emb, temperature, target, include_self.
    strategy: how clients are run ('vmap' or 'loop', see `population.map_clients`).

  Metrics are per-client arrays [N] ('ce', 'kd_main', 'kd_aux', 'emb',
  'loss', 'train_acc').
  """
  num_heads = specs[0].model.num_heads
  weights_HxNxN = losses.candidate_weights(jnp.asarray(adjacency, jnp.float32), num_heads,
                                           config.include_self)
  firsts = pop.offsets(specs)

  def embedding_losses(mixing_NxHxBxN, embs):
    """[N] embedding terms. Client i's target follows head 0's source, restricted to
    candidates whose embedding size matches i's (renormalised; examples whose
    source has another size carry no embedding loss)."""
    sizes = [e.shape[-1] for e in embs]
    out = []
    for g, emb in enumerate(embs):
      same = [h for h in range(len(embs)) if sizes[h] == sizes[g]]
      cols = jnp.concatenate([jnp.arange(firsts[h], firsts[h] + specs[h].num_clients)
                              for h in same])
      m_nxBxM = mixing_NxHxBxN[firsts[g]:firsts[g] + specs[g].num_clients, 0][:, :, cols]
      total_nxB = m_nxBxM.sum(-1)
      m_nxBxM = m_nxBxM / jnp.maximum(total_nxB, 1e-30)[..., None]
      teachers = jax.lax.stop_gradient(jnp.concatenate([embs[h] for h in same]))
      targets = losses.mix_embeddings(m_nxBxM, teachers)
      out.append(jax.vmap(losses.embedding_mse)(emb, targets, (total_nxB > 0).astype(emb.dtype)))
    return jnp.concatenate(out)

  def forward(params_groups, state, batch):
    """Every client's private and public logits (concatenated over groups), embeddings per group."""
    outs = []
    for g, spec in enumerate(specs):
      sl = slice(firsts[g], firsts[g] + spec.num_clients)
      def run(params, stats, x, u, model=spec.model):
        lp, _, stats = _apply_train(model, params, stats, x)
        lu, eu, stats = _apply_train(model, params, stats, u)
        return lp, lu, eu, stats
      outs.append(pop.map_clients(run, strategy, params_groups[g], state.groups[g].batch_stats,
                                  batch['private']['image'][sl], batch['public']['image'],
                                  in_axes=(0, 0, 0, None)))
    lp, lu = (jnp.concatenate([o[i] for o in outs]) for i in range(2))
    return lp, lu, [o[2] for o in outs], tuple(o[3] for o in outs)

  def loss_fn(params_groups, state, batch, rng):
    lp_NxHxBxC, lu_NxHxBxC, embs, new_stats = forward(params_groups, state, batch)
    probs = losses.source_probs(jax.lax.stop_gradient(lu_NxHxBxC), config.temperature)
    mixing = losses.mixing_weights(probs, weights_HxNxN, config.target, rng)
    targets = losses.mix_targets(mixing, probs)
    has_target_NxH = mixing.sum(axis=(2, 3)) > 0
    emb_N = embedding_losses(mixing, embs) if config.nu_emb else jnp.zeros(len(lp_NxHxBxC))
    terms = jax.vmap(functools.partial(client_losses, config=config))(
        lp_NxHxBxC, batch['private']['label'], lu_NxHxBxC, targets, has_target_NxH, emb_N)
    return terms['loss'].sum(), (terms, new_stats)

  def train_step(state: pop.TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    params = tuple(g.params for g in state.groups)
    grads, (terms, new_stats) = jax.grad(loss_fn, has_aux=True)(params, state, batch, rng)
    groups = []
    for g, spec in enumerate(specs):
      def update(p, gr, opt, tx=spec.tx):
        upd, opt = tx.update(gr, opt, p)
        return optax.apply_updates(p, upd), opt
      new_p, new_opt = pop.map_clients(update, strategy, params[g], grads[g],
                                       state.groups[g].opt_state)
      groups.append(pop.Group(params=new_p, batch_stats=new_stats[g], opt_state=new_opt))
    return pop.TrainState(step=state.step + 1, groups=tuple(groups)), terms

  return train_step
