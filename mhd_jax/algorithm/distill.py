"""Multi-head distillation over the stacked clients: who teaches whom, the targets, the loss.

Loss of client i (docs/algorithm.md):

    L_i = CE(z_i^0(x_i), y_i)
        + nu_main * KD_T(t_i^0 || z_i^0(u))
        + nu_aux  * sum_{k>=1} KD_T(t_i^k || z_i^k(u))
        + nu_emb  * mean_u ||e_i(u) - sg(t_i^emb)||^2

The targets t_i^k mix the candidates' public outputs (`losses.mixing_weights`)
and are constants: the gradient of sum_i L_i with respect to client i's
parameters is the gradient of L_i alone.

Everything here is over the S stacked clients a `Network` describes: the
clients that are not active this step (unavailable, or padding that fills a
device mesh) teach nobody, and their own terms are left out of the total.
The students (the rows) are the senders themselves, or, for a population
streamed through the devices in cohorts (`Network.cohort`), K students apart
from every client's sent outputs (`Teachers` of all N clients).
"""

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from mhd_jax.algorithm import losses
from mhd_jax.network import neighbours
from mhd_jax.population import state as state_lib
from mhd_jax.wire import compression


@flax.struct.dataclass
class Network:
  """Who talks this step, over the S stacked clients; an input of the step (no recompiles).

  `weights_SxK[i, c] > 0` when client i learns from its candidate c. Dense
  (`senders_SxK` None): candidate c is client c, the weights are the adjacency
  [S, S]. Sparse: candidate c is client `senders_SxK[i, c]`, a row of a neighbour
  table (`network.neighbours`), so the exchange costs O(S K), not O(S^2).

  `by_id` (a cohort, `cohort`): the rows are some students and the senders every
  client in id order, apart from them (`Teachers` of all N clients): a dense row
  has N columns, and a candidate's index is its client id, row i's own the id ids_S[i].
  """
  weights_SxK: jax.Array  # float32, A[i, cand(i, c)]
  active_S: jax.Array     # bool: the client teaches and learns this step
  ids_S: jax.Array        # int32 client ids (padding: ids >= N); they key the random draws
  senders_SxK: jax.Array | None = None  # int32 table (padding: S); None: dense
  by_id: bool = flax.struct.field(pytree_node=False, default=False)

  @classmethod
  def static(cls, adjacency_NxN) -> 'Network':
    """The dense network of a fixed graph, every client active, ids 0..N-1."""
    n = len(adjacency_NxN)
    return cls(jnp.asarray(adjacency_NxN, jnp.float32), jnp.ones(n, bool),
               jnp.arange(n, dtype=jnp.int32))

  def cohort(self, ids_K) -> 'Network':
    """The rows of the clients `ids_K` of this network over N clients, against every client
    as a sender (`by_id`); ids >= N (padding) are inactive rows without candidates."""
    n = self.active_S.shape[0]
    take = lambda x, fill: x.at[ids_K].get(mode='fill', fill_value=fill)
    return Network(take(self.weights_SxK, 0), take(self.active_S, False), ids_K,
                   None if self.senders_SxK is None else take(self.senders_SxK, n), by_id=True)

  @property
  def rows_S(self):
    """Each row's client among the senders when they are apart (`by_id`), else None."""
    return self.ids_S if self.by_id else None

  @property
  def adjacency_SxS(self) -> jax.Array:
    """A [S, S] of a dense network."""
    if self.senders_SxK is not None:
      raise ValueError('a sparse network has no adjacency matrix: read weights_SxK on its table.')
    return self.weights_SxK


@flax.struct.dataclass
class Metrics:
  """Each client's loss terms this step, arrays [S] (or [N] once the padding is dropped)."""
  loss: jax.Array
  ce: jax.Array
  kd_main: jax.Array
  kd_aux: jax.Array
  emb: jax.Array
  train_acc: jax.Array

  def as_dict(self) -> dict:
    return {k: getattr(self, k) for k in TERMS}


TERMS = tuple(f.name for f in dataclasses.fields(Metrics))  # metrics.jsonl's names, in order


@flax.struct.dataclass
class Teachers:
  """What the neighbours sent when it is not their live public outputs (teachers that lag:
  `lag.read_and_push`; every client's, computed apart from the students: a cohort), on
  the public batch the students train on this step; over the rows, or over every client
  in id order when the network is `by_id`."""
  logits_SxHxBxC: jax.Array
  embs: Any            # per group [n_g, B, D_g]; None without embedding distillation
  sent_S: jax.Array    # bool: the sender was active when it computed them


def mixing(public_logits_SxHxBxC, net: Network, config, rng, step=1,
           teachers: Teachers | None = None):
  """(M [S, H, B, K] mixing weights over each client's candidates, P [S, H, B, C] what the
  peers receive, O [S, H, B, C] the clients' own outputs) of training step `step` (1-based,
  may be traced). P is over the senders: the rows, or all N clients when the rows are a
  cohort (`Network.by_id`, `teachers` of every client).

  P[j, k] and O[j, k] are candidate j's softmax(z_j^{src(k)} / T) for head k.
  The senders' outputs are the live public ones or, with `teachers` (teachers
  that lag), what the neighbours sent tau steps ago; P is them after
  `compression.transmit` (what a peer decodes under `config.wire`; zeros for
  heads or steps not sent, whose neighbour weights
  `compression.neighbour_weights` drops). O is always live and never crosses
  the wire: client i's own head k-1 (its own column, `include_self`) is
  weighed by its score on O[i] and mixed as O[i] (`targets`; docs/dynamics.md).
  Only active clients learn, and only from senders that were active when they
  computed what they sent and are linked to them in this step's graph.
  """
  s, h = public_logits_SxHxBxC.shape[:2]
  senders = net.senders_SxK
  live = net.active_S.astype(jnp.float32)
  sent = live if teachers is None else teachers.sent_S.astype(jnp.float32)
  m = sent.shape[0]  # the senders: the rows, or every client (`by_id`)
  w_SxK = net.weights_SxK * live[:, None] * neighbours.gather(sent, senders, s)
  self_SxK = neighbours.is_self(senders, m, net.rows_S)
  weights_SxHxK = losses.candidate_weights(w_SxK, h, config.include_self, self_SxK)
  own = losses.source_probs(jax.lax.stop_gradient(public_logits_SxHxBxC), config.temperature)
  sender_logits = jax.lax.stop_gradient(
      public_logits_SxHxBxC if teachers is None else teachers.logits_SxHxBxC)
  spec = compression.config_spec(config)
  if spec is None and teachers is None:
    got = own
  elif spec is None:
    got = losses.source_probs(sender_logits, config.temperature)
  else:
    sent = compression.transmit(jax.nn.softmax(sender_logits / config.temperature, axis=-1),
                                spec, step)
    got = sent[:, jnp.maximum(jnp.arange(h) - 1, 0)]  # receiver head k reads source src(k)
    weights_SxHxK = compression.neighbour_weights(weights_SxHxK, self_SxK, spec, step)
  power = config.get('target_power', 1.0)
  score_SxKxHxB = neighbours.gather(losses.scores(got, config.target, power), senders, s)
  score_SxHxBxK = jnp.where(self_SxK[:, None, None, :],
                            losses.scores(own, config.target, power)[..., None],
                            jnp.moveaxis(score_SxKxHxB, 1, -1))
  cand_ids = (neighbours.ids(senders, m, s) if net.by_id
              else neighbours.gather(net.ids_S, senders))
  mix = losses.candidate_mixing(score_SxHxBxK, weights_SxHxK, self_SxK, config.target, rng,
                                net.ids_S, cand_ids)
  return mix, got, own


def targets(mixing_SxHxBxK, received_MxHxBxC, own_SxHxBxC, senders_SxK=None, rows_S=None):
  """T[i, k] = sum_{c != i} M[i, k, :, c] P[c, k] + M[i, k, :, self] O[i, k]: the neighbours'
  outputs as received, the own head as it is (candidates as in `Network`; P over the M
  senders, row i's own P[rows_S[i]] when the rows are apart from them, `Network.rows_S`).

  Written as the full mixture of P plus M[i, k, :, self] (O[i, k] - P[i, k]), which is
  exactly +0 when nothing is compressed, so full precision changes no bit.
  """
  t = losses.mix_targets(mixing_SxHxBxK, received_MxHxBxC, senders_SxK)
  if received_MxHxBxC is own_SxHxBxC:
    return t
  self_SxK = neighbours.is_self(senders_SxK, received_MxHxBxC.shape[0], rows_S)
  self_SxHxB = jnp.where(self_SxK[:, None, None, :], mixing_SxHxBxK, 0.0).sum(-1)
  received_SxHxBxC = (received_MxHxBxC if rows_S is None
                      else received_MxHxBxC.at[rows_S].get(mode='fill', fill_value=0))
  return t + self_SxHxB[..., None] * (own_SxHxBxC - received_SxHxBxC)


def embedding_losses(mixing_SxHxBxK, embs, sizes, teacher_embs=None, senders_SxK=None):
  """[S] embedding terms; `embs` per group ([n_g, B, D_g]), `sizes` the groups' client counts,
  candidates as in `Network` (`senders_SxK`).

  Client i's target follows head 0's mixing, restricted to candidates whose
  embedding size matches i's (renormalised; examples whose source has another
  size carry no embedding loss). The targets mix `teacher_embs` (per group too:
  teachers that lag, or every client's when the students are a cohort, whose
  other groups then have no rows) or, by default, `embs` themselves. Head 0 has
  no own-head candidate, so every embedding target is a neighbour's.
  """
  teacher_embs = embs if teacher_embs is None else teacher_embs
  firsts, t_sizes = state_lib.firsts(sizes), [e.shape[0] for e in teacher_embs]
  t_firsts, t_dims = state_lib.firsts(t_sizes), [e.shape[-1] for e in teacher_embs]
  out = []
  for g, emb in enumerate(embs):
    if not sizes[g]:
      continue
    same = [h for h in range(len(teacher_embs)) if t_dims[h] == emb.shape[-1]]
    cols = np.concatenate([np.arange(t_firsts[h], t_firsts[h] + t_sizes[h]) for h in same])
    m_nxBxK = mixing_SxHxBxK[firsts[g]:firsts[g] + sizes[g], 0]
    rows = None  # dense: the same-size clients are the columns `cols`
    if senders_SxK is None:
      m_nxBxK = m_nxBxK[:, :, cols]
    else:  # a table: each candidate's row in the same-size teachers (len(cols): none)
      row_of = np.full(sum(t_sizes), len(cols), np.int32)
      row_of[cols] = np.arange(len(cols))
      rows = jnp.asarray(row_of).at[senders_SxK[firsts[g]:firsts[g] + sizes[g]]].get(
          mode='fill', fill_value=len(cols))
      m_nxBxK = jnp.where((rows < len(cols))[:, None, :], m_nxBxK, 0.0)
    total_nxB = m_nxBxK.sum(-1)
    m_nxBxK = m_nxBxK / jnp.maximum(total_nxB, 1e-30)[..., None]
    teachers = jax.lax.stop_gradient(jnp.concatenate([teacher_embs[h] for h in same]))
    targets = losses.mix_embeddings(m_nxBxK, teachers, rows)
    out.append(jax.vmap(losses.embedding_mse)(emb, targets, (total_nxB > 0).astype(emb.dtype)))
  return jnp.concatenate(out)


def client_terms(logits_priv_HxBxC, labels_B, logits_pub_HxBxC, targets_HxBxC, has_target_H,
                 emb_loss, config) -> Metrics:
  """The loss terms of one client given its (constant) targets and embedding term."""
  t = config.temperature
  kd_H = jnp.stack([losses.kd(targets_HxBxC[k], logits_pub_HxBxC[k], t)
                    for k in range(logits_pub_HxBxC.shape[0])]) * has_target_H
  ce = losses.cross_entropy(logits_priv_HxBxC[0], labels_B)
  loss = (ce + config.nu_main * kd_H[0] + config.nu_aux * kd_H[1:].sum()
          + config.nu_emb * emb_loss)
  return Metrics(loss=loss, ce=ce, kd_main=kd_H[0], kd_aux=kd_H[1:].sum(), emb=emb_loss,
                 train_acc=jnp.mean(jnp.argmax(logits_priv_HxBxC[0], -1) == labels_B))


def terms(private_logits, labels, public_logits, embs, sizes, net: Network, config,
          rng, step=1, teachers: Teachers | None = None) -> Metrics:
  """Every stacked client's loss terms ([S] each) from its outputs at step `step` (1-based).

  `private_logits`/`public_logits` are [S, H, B, C] over all groups, `labels`
  [S, B], `embs` the public embeddings per group, `sizes` the groups' sizes;
  the targets mix `teachers` (teachers that lag) or, by default, the live
  public outputs. The students' public outputs carry the gradient either way.
  """
  m_SxHxBxK, received, own = mixing(public_logits, net, config, rng, step, teachers)
  target_SxHxBxC = targets(m_SxHxBxK, received, own, net.senders_SxK, net.rows_S)
  has_target_SxH = m_SxHxBxK.sum(axis=(2, 3)) > 0
  teacher_embs = None if teachers is None else teachers.embs
  emb_S = (embedding_losses(m_SxHxBxK, embs, sizes, teacher_embs, net.senders_SxK)
           if config.nu_emb
           else jnp.zeros(labels.shape[0], private_logits.dtype))
  return jax.vmap(lambda *a: client_terms(*a, config=config))(
      private_logits, labels, public_logits, target_SxHxBxC, has_target_SxH, emb_S)


def total_loss(metrics: Metrics, net: Network, public_only=None):
  """The sum of the active clients' losses: what the step differentiates.

  `public_only` (a config): the distillation terms only, nu_main KD_main +
  nu_aux KD_aux + nu_emb emb, without the private CE (DP-SGD takes its
  gradient apart, `privacy.private_grad`).
  """
  loss = metrics.loss if public_only is None else (
      public_only.nu_main * metrics.kd_main + public_only.nu_aux * metrics.kd_aux
      + public_only.nu_emb * metrics.emb)
  return jnp.where(net.active_S, loss, 0.0).sum()
