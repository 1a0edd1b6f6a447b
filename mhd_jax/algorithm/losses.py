"""Loss terms and distillation-target selection (docs/algorithm.md, "Loss" and "Targets").

Shapes: N clients, H heads, B examples, C classes, D embedding units. Targets
are always wrapped in `stop_gradient` by the caller's construction: they are
computed from `jax.lax.stop_gradient` of the teachers' outputs.
"""

import jax
import jax.numpy as jnp

TARGET_RULES = ('most_confident', 'mean', 'random', 'confidence_weighted', 'neighbours_first',
                'neighbour_and_self', 'relative_confidence', 'certainty_weighted',
                'exp_entropy_weighted', 'class_relative')
_HIGHEST = jax.lax.Precision.HIGHEST  # targets are mixtures of probabilities: keep f32 on TPU


def cross_entropy(logits_BxC, labels_B):
  """CE = mean_b -log softmax(z_b)[y_b]."""
  logp_BxC = jax.nn.log_softmax(logits_BxC)
  return -jnp.mean(jnp.take_along_axis(logp_BxC, labels_B[:, None], axis=1))


def kd(target_probs_BxC, student_logits_BxC, temperature):
  """KD_T(t || s) = T^2 * mean_b KL(t_b || softmax(s_b / T)).

  `target_probs` is already a distribution (the teacher's softmax at
  temperature T, or a mixture of them); 0 * log 0 counts as 0.
  """
  t = jax.lax.stop_gradient(target_probs_BxC)
  log_s = jax.nn.log_softmax(student_logits_BxC / temperature)
  kl_B = jnp.sum(jax.scipy.special.xlogy(t, t) - t * log_s, axis=-1)
  return temperature**2 * jnp.mean(kl_B)


def embedding_mse(emb_BxD, target_BxD, weights_B=None):
  """mean_b w_b ||e_b - sg(t_b)||^2 (w_b = 1 by default; 0 drops example b)."""
  diff = emb_BxD - jax.lax.stop_gradient(target_BxD)
  sq_B = jnp.sum(diff * diff, axis=-1)
  return jnp.mean(sq_B if weights_B is None else weights_B * sq_B)


def candidate_weights(w_SxK, num_heads: int, include_self: bool, self_SxK=None):
  """W[i, k, c]: weight of candidate c as a source for client i's head k, [S, H, K].

  Candidates are columns: every client (dense, K = S, `self_SxK` the diagonal by
  default) or a neighbour table's (`network.neighbours`). Head 0 learns from the
  neighbours (w); heads k >= 1 also from the client's own head k-1 (its own
  column, `self_SxK`) when `include_self` is set.
  """
  if self_SxK is None:
    self_SxK = jnp.eye(w_SxK.shape[0], dtype=bool)
  own = self_SxK.astype(w_SxK.dtype)
  return jnp.stack([w_SxK + (include_self and k > 0) * own for k in range(num_heads)], axis=1)


def source_probs(teacher_logits_NxHxBxC, temperature):
  """P[j, k]: softmax(z_j^{src(k)} / T), where src(0) = 0 and src(k) = k - 1."""
  h = teacher_logits_NxHxBxC.shape[1]
  src = jnp.maximum(jnp.arange(h) - 1, 0)
  return jax.nn.softmax(teacher_logits_NxHxBxC[:, src] / temperature, axis=-1)


# --------------------------------------------------------- sender scores
# Each score is a pure function of one sender's own outputs on the public batch: [S, H, B] from
# P [S, H, B, C], so every receiver weighs a sender alike, whatever form the candidates take.


def confidence(probs_SxHxBxC):
  """conf[j, k, b] = max_c P[j, k, b, c]."""
  return probs_SxHxBxC.max(-1)


def relative_confidence(probs_SxHxBxC):
  """conf[j, k, b] / mean_b' conf[j, k, b']: a sender's confidence against its own level."""
  conf_SxHxB = confidence(probs_SxHxBxC)
  return conf_SxHxB / jnp.maximum(conf_SxHxB.mean(-1, keepdims=True), 1e-30)


def _entropy(probs_SxHxBxC):
  return -jnp.sum(jax.scipy.special.xlogy(probs_SxHxBxC, probs_SxHxBxC), axis=-1)


def certainty(probs_SxHxBxC):
  """1 - H(P[j, k, b]) / log C: 0 for the uniform distribution, 1 for a one-hot."""
  log_c = jnp.log(probs_SxHxBxC.shape[-1])
  return jnp.maximum(1.0 - _entropy(probs_SxHxBxC) / log_c, 0.0)


def exp_entropy(probs_SxHxBxC):
  """exp(-H(P[j, k, b])): 1/C for the uniform distribution, 1 for a one-hot."""
  return jnp.exp(-_entropy(probs_SxHxBxC))


def class_relative(probs_SxHxBxC):
  """P[j, k, b, c_b] / mean_b' P[j, k, b', c_b], c_b = argmax_c P[j, k, b, c].

  The sender's probability of the class it predicts, against the mean
  probability it gives that class over the public batch: about 1 for a sender
  that calls every example c (or says nothing), up to ~C for one that names c
  only on the examples of c (a balanced batch), B at most.
  """
  c_SxHxB = probs_SxHxBxC.argmax(-1)
  p_SxHxB = jnp.take_along_axis(probs_SxHxBxC, c_SxHxB[..., None], -1)[..., 0]
  prior_SxHxB = jnp.take_along_axis(probs_SxHxBxC.mean(-2), c_SxHxB, -1)
  return p_SxHxB / jnp.maximum(prior_SxHxB, 1e-30)


# The score rules: a candidate's weight in a target is its edge weight x its score^power.
SCORES = {'confidence_weighted': confidence, 'relative_confidence': relative_confidence,
          'certainty_weighted': certainty, 'exp_entropy_weighted': exp_entropy,
          'class_relative': class_relative}


def scores(probs_SxHxBxC, rule: str, power: float = 1.0):
  """[S, H, B]: what a sender's output weighs in `rule`: SCORES[rule](P)^power for a score
  rule, else its confidence max_c P[j, k, b, c] (the one-hot rules pick by it)."""
  if rule not in SCORES:
    return confidence(probs_SxHxBxC)
  score_SxHxB = SCORES[rule](probs_SxHxBxC)
  return score_SxHxB if power == 1 else score_SxHxB ** power  # power 1 keeps the bits


def _best(score_SxHxBxK, allowed_SxHxBxK):
  """One-hot on the allowed candidate of largest score (all-zero where none is allowed)."""
  k = score_SxHxBxK.shape[-1]
  choice = jnp.argmax(jnp.where(allowed_SxHxBxK, score_SxHxBxK, -jnp.inf), axis=-1)
  return jax.nn.one_hot(choice, k) * allowed_SxHxBxK.any(-1, keepdims=True)


def _random_choice(logw_SxHxK, rng, ids_S, cand_ids_SxK):
  """Per (client, head) a candidate drawn with probability softmax(logw) (Gumbel-max).

  The noise of candidate j for client i comes from fold_in(fold_in(rng, id_i),
  id_j): a draw depends on the two clients' ids, not on their positions, on the
  form of the candidates (dense or a neighbour table) or on how many other
  (e.g. padded) clients are stacked beside them.
  """
  def row(id_i, cand_K):
    key = jax.random.fold_in(rng, id_i)
    return jax.vmap(lambda id_j: jax.random.gumbel(jax.random.fold_in(key, id_j),
                                                   (logw_SxHxK.shape[1],)), out_axes=1)(cand_K)
  return jnp.argmax(logw_SxHxK + jax.vmap(row)(ids_S, cand_ids_SxK), axis=-1)


def candidate_mixing(score_SxHxBxK, weights_SxHxK, self_SxK, rule: str, rng, ids_S,
                     cand_ids_SxK):
  """M[i, k, b, c]: how much candidate c contributes to client i's head-k target on example b.

  Candidates are the columns of `weights_SxHxK` (`candidate_weights`): a
  candidate c of client i is allowed for head k where W[i, k, c] > 0; the
  client's own head k-1 is its column `self_SxK` (under `include_self`), the
  others are its neighbours. `score_SxHxBxK` is each candidate's score
  (`scores`, the own column from the client's own, undecoded outputs),
  `ids_S`/`cand_ids_SxK` the clients' and candidates' ids (the random draws).

  Rows sum to 1 where client i has a candidate for head k, else to 0. With
  conf[i, k, b, c] the candidate's confidence on example b:
    most_confident: one-hot on the candidate of largest conf on example b;
    mean: the normalised weights W[i, k, :], the same for every example;
    random: one-hot on a candidate drawn with probability proportional to
      W[i, k, c], one draw per (client, head) per step, keyed by the clients'
      ids (see `_random_choice`);
    confidence_weighted: W[i, k, c] conf[c] / sum_c' W[i, k, c'] conf[c'],
      a mixture in which no single over-confident source wins outright;
    the other score rules (`SCORES`): the same mixture with conf[c] replaced by
      the candidate's score s[c] (raised to `target_power`; with p = P[c, k, b],
      p_bar its mean over the public batch, c_b = argmax p):
      relative_confidence: conf[c] / mean_b' conf[c] (over the examples b');
      certainty_weighted: 1 - H(p) / log C;
      exp_entropy_weighted: exp(-H(p));
      class_relative: p[c_b] / p_bar[c_b];
    neighbours_first: one-hot on the most confident neighbour; the own head
      only where client i has no neighbour candidate for head k;
    neighbour_and_self: 1/2 the most confident neighbour + 1/2 the own head
      k-1 (whichever of the two exists gets weight 1): the own head keeps what
      walks shorter than k brought, the neighbour adds one more hop, and an
      own head sure of its own class (skew 1) cannot crowd the neighbour out.
  """
  s, h, b, k = score_SxHxBxK.shape
  has_SxH = weights_SxHxK.sum(-1) > 0
  cand_SxHxBxK = jnp.broadcast_to((weights_SxHxK > 0)[:, :, None, :], (s, h, b, k))
  own_SxHxBxK = self_SxK[:, None, None, :]
  neighbour_SxHxBxK = cand_SxHxBxK & ~own_SxHxBxK
  self_SxHxBxK = cand_SxHxBxK & own_SxHxBxK
  if rule == 'mean':
    m = weights_SxHxK / jnp.maximum(weights_SxHxK.sum(-1, keepdims=True), 1e-30)
    return jnp.broadcast_to(m[:, :, None, :], (s, h, b, k))
  if rule == 'most_confident':
    return _best(score_SxHxBxK, cand_SxHxBxK)
  if rule == 'random':
    logw = jnp.where(weights_SxHxK > 0, jnp.log(jnp.maximum(weights_SxHxK, 1e-30)), -jnp.inf)
    choice_SxHxB = jnp.broadcast_to(_random_choice(logw, rng, ids_S, cand_ids_SxK)[:, :, None],
                                    (s, h, b))
    return jax.nn.one_hot(choice_SxHxB, k) * has_SxH[:, :, None, None]
  if rule in SCORES:
    w = jnp.where(cand_SxHxBxK, weights_SxHxK[:, :, None, :] * score_SxHxBxK, 0.0)
    return w / jnp.maximum(w.sum(-1, keepdims=True), 1e-30)
  if rule == 'neighbours_first':
    has_neighbour = neighbour_SxHxBxK.any(-1, keepdims=True)
    return _best(score_SxHxBxK, jnp.where(has_neighbour, neighbour_SxHxBxK, self_SxHxBxK))
  if rule == 'neighbour_and_self':
    w = _best(score_SxHxBxK, neighbour_SxHxBxK) + self_SxHxBxK
    return w / jnp.maximum(w.sum(-1, keepdims=True), 1e-30)
  raise ValueError(f'unknown target rule {rule!r}; choose one of {", ".join(TARGET_RULES)}.')


def mixing_weights(probs_NxHxBxC, weights_NxHxN, rule: str, rng, ids_N=None,
                   own_NxHxBxC=None, power: float = 1.0):
  """`candidate_mixing` in the dense form, every client a candidate: M [N, H, B, N].

  `own_NxHxBxC` (default `probs_NxHxBxC`): what client i holds of its own head
  k-1, the candidate j = i; it differs from P[i] when P is what the peers
  receive after compression (`compression.transmit`), which never carries a
  client's outputs to itself. `ids_N` default 0..N-1; `power` the score rules' power.
  """
  n = probs_NxHxBxC.shape[0]
  eye = jnp.eye(n, dtype=bool)
  conf_NxHxB = scores(probs_NxHxBxC, rule, power)
  own = conf_NxHxB if own_NxHxBxC is None else scores(own_NxHxBxC, rule, power)
  score = jnp.where(eye[:, None, None, :], own[..., None],
                    jnp.transpose(conf_NxHxB, (1, 2, 0))[None])
  ids = jnp.arange(n) if ids_N is None else ids_N
  return candidate_mixing(score, weights_NxHxN, eye, rule, rng, ids,
                          jnp.broadcast_to(ids[None], (n, n)))


def _candidates(x_S, senders_SxK):
  """x[senders]: each row's candidates [S, K, ...] (padding, ids out of range, reads 0)."""
  return x_S.at[senders_SxK].get(mode='fill', fill_value=0)


def mix_targets(mixing_SxHxBxK, probs_SxHxBxC, senders_SxK=None):
  """Target distributions T[i, k, b] = sum_c M[i, k, b, c] P[cand(i, c), k, b] (with own
  heads that differ from P: `distill.targets`).

  Dense (`senders_SxK` None): candidate c is client c, one contraction over the S
  clients. On a neighbour table: candidate c of row i is client senders[i, c],
  gathered, so the cost is O(S K) instead of O(S^2).
  """
  if senders_SxK is None:
    return jnp.einsum('ikbj,jkbc->ikbc', mixing_SxHxBxK, probs_SxHxBxC, precision=_HIGHEST)
  return jnp.einsum('ikbd,idkbc->ikbc', mixing_SxHxBxK, _candidates(probs_SxHxBxC, senders_SxK),
                    precision=_HIGHEST)


def mix_embeddings(mixing_NxBxK, emb_MxBxD, senders_NxK=None):
  """Embedding targets from the head-0 mixing weights: sum_c M[i, b, c] e_{cand(i, c)}(u_b);
  candidates as in `mix_targets` (a table's senders index the rows of `emb_MxBxD`)."""
  if senders_NxK is None:
    return jnp.einsum('ibj,jbd->ibd', mixing_NxBxK, emb_MxBxD, precision=_HIGHEST)
  return jnp.einsum('ibd,idbe->ibe', mixing_NxBxK, _candidates(emb_MxBxD, senders_NxK),
                    precision=_HIGHEST)
