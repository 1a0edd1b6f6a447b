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


def candidate_weights(adjacency_NxN, num_heads: int, include_self: bool):
  """W[k, i, j]: weight of client j as a source for client i's head k.

  Head 0 learns from the neighbours (A); heads k >= 1 also from the client's
  own head k-1 when `include_self` is set.
  """
  n = adjacency_NxN.shape[0]
  eye = jnp.eye(n, dtype=adjacency_NxN.dtype)
  return jnp.stack([adjacency_NxN + (include_self and k > 0) * eye
                    for k in range(num_heads)])


def source_probs(teacher_logits_NxHxBxC, temperature):
  """P[j, k]: softmax(z_j^{src(k)} / T), where src(0) = 0 and src(k) = k - 1."""
  h = teacher_logits_NxHxBxC.shape[1]
  src = jnp.maximum(jnp.arange(h) - 1, 0)
  return jax.nn.softmax(teacher_logits_NxHxBxC[:, src] / temperature, axis=-1)


# --------------------------------------------------------- sender scores
# A score rule weighs candidate j in client i's target on example b by W[k, i, j] s_j[k, b]^power.
# Each score s_j is a pure function of sender j's own outputs on the public batch, [S, H, B]
# from P [S, H, B, C], so every receiver weighs a sender alike.


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


SCORES = {'confidence_weighted': confidence, 'relative_confidence': relative_confidence,
          'certainty_weighted': certainty, 'exp_entropy_weighted': exp_entropy,
          'class_relative': class_relative}


def _by_candidate(score_fn, probs_NxHxBxC, own_NxHxBxC=None):
  """score[i, k, b, j] = score_fn(P)[j, k, b], the diagonal j = i from O = `own_NxHxBxC`."""
  n, h, b, _ = probs_NxHxBxC.shape
  score_NxHxBxN = jnp.broadcast_to(
      jnp.transpose(score_fn(probs_NxHxBxC), (1, 2, 0))[None], (n, h, b, n))
  if own_NxHxBxC is None:
    return score_NxHxBxN
  return jnp.where(jnp.eye(n, dtype=bool)[:, None, None, :], score_fn(own_NxHxBxC)[..., None],
                   score_NxHxBxN)


def _best(score_NxHxBxN, allowed_NxHxBxN):
  """One-hot on the allowed candidate of largest score (all-zero where none is allowed)."""
  n = score_NxHxBxN.shape[-1]
  choice = jnp.argmax(jnp.where(allowed_NxHxBxN, score_NxHxBxN, -jnp.inf), axis=-1)
  return jax.nn.one_hot(choice, n) * allowed_NxHxBxN.any(-1, keepdims=True)


def _random_choice(logw_NxHxN, rng, ids_N):
  """Per (client, head) a candidate drawn with probability softmax(logw) (Gumbel-max).

  The noise of candidate j for client i comes from fold_in(fold_in(rng, id_i),
  id_j): a draw depends on the two clients' ids, not on their positions or on
  how many other (e.g. padded) clients are stacked beside them.
  """
  def row(id_i):
    key = jax.random.fold_in(rng, id_i)
    return jax.vmap(lambda id_j: jax.random.gumbel(jax.random.fold_in(key, id_j),
                                                   (logw_NxHxN.shape[1],)), out_axes=1)(ids_N)
  return jnp.argmax(logw_NxHxN + jax.vmap(row)(ids_N), axis=-1)


def mixing_weights(probs_NxHxBxC, weights_HxNxN, rule: str, rng, ids_N=None,
                   own_NxHxBxC=None, power: float = 1.0):
  """M[i, k, b, j]: how much candidate j contributes to client i's head-k target on example b.

  `own_NxHxBxC` (default `probs_NxHxBxC`): what client i holds of its own head
  k-1, the candidate j = i; it differs from P[i] when P is what the peers
  receive after compression (`compression.transmit`), which never carries a
  client's outputs to itself.

  Rows sum to 1 where client i has a candidate for head k, else to 0. With
  conf[j, k, b] = max_c P[j, k, b, c] and "neighbours" the candidates j != i
  (the candidate j = i is the client's own head k-1, under `include_self`):
    most_confident: one-hot on the candidate of largest conf on example b;
    mean: the normalised weights W[k, i, :], the same for every example;
    random: one-hot on a candidate drawn with probability proportional to
      W[k, i, j], one draw per (client, head) per step, keyed by the clients'
      `ids_N` (default 0..N-1: see `_random_choice`);
    confidence_weighted: W[k, i, j] conf[j, k, b] / sum_j' W[k, i, j'] conf[j', k, b],
      a mixture in which no single over-confident source wins outright;
    the other score rules: the same mixture with conf replaced by the sender's
      score s[j, k, b] (`SCORES`; P[j, k, b] written p, its batch mean
      p_bar[j, k] = mean_b' P[j, k, b'], c_b = argmax_c p):
      relative_confidence: conf[j, k, b] / mean_b' conf[j, k, b'];
      certainty_weighted: 1 - H(p) / log C;
      exp_entropy_weighted: exp(-H(p));
      class_relative: p[c_b] / p_bar[j, k, c_b];
    and every score rule raises its score to `power` (1: the score itself;
      larger: closer to most_confident);
    neighbours_first: one-hot on the most confident neighbour; the own head
      only where client i has no neighbour candidate for head k;
    neighbour_and_self: 1/2 the most confident neighbour + 1/2 the own head
      k-1 (whichever of the two exists gets weight 1): the own head keeps what
      walks shorter than k brought, the neighbour adds one more hop, and an
      own head sure of its own class (skew 1) cannot crowd the neighbour out.
  (It also differs under teachers that lag: the neighbours' outputs are old, a
  client's own are live; see `distill.targets`.)
  """
  n, h, b, _ = probs_NxHxBxC.shape
  w_NxHxN = jnp.transpose(weights_HxNxN, (1, 0, 2))
  has_NxH = w_NxHxN.sum(-1) > 0
  cand_NxHxBxN = jnp.broadcast_to((w_NxHxN > 0)[:, :, None, :], (n, h, b, n))
  # The diagonal (the own head k-1) is scored on the client's own, undecoded outputs.
  conf_NxHxBxN = _by_candidate(confidence, probs_NxHxBxC, own_NxHxBxC)
  neighbour_NxHxBxN = cand_NxHxBxN & ~jnp.eye(n, dtype=bool)[:, None, None, :]
  self_NxHxBxN = cand_NxHxBxN & jnp.eye(n, dtype=bool)[:, None, None, :]
  if rule == 'mean':
    m = w_NxHxN / jnp.maximum(w_NxHxN.sum(-1, keepdims=True), 1e-30)
    return jnp.broadcast_to(m[:, :, None, :], (n, h, b, n))
  if rule == 'most_confident':
    return _best(conf_NxHxBxN, cand_NxHxBxN)
  if rule == 'random':
    logw = jnp.where(w_NxHxN > 0, jnp.log(jnp.maximum(w_NxHxN, 1e-30)), -jnp.inf)
    ids = jnp.arange(n) if ids_N is None else ids_N
    choice_NxHxB = jnp.broadcast_to(_random_choice(logw, rng, ids)[:, :, None], (n, h, b))
    return jax.nn.one_hot(choice_NxHxB, n) * has_NxH[:, :, None, None]
  if rule in SCORES:
    score_NxHxBxN = _by_candidate(SCORES[rule], probs_NxHxBxC, own_NxHxBxC)
    if power != 1:  # (power 1 leaves the score's bits as they are)
      score_NxHxBxN = score_NxHxBxN ** power
    s = jnp.where(cand_NxHxBxN, w_NxHxN[:, :, None, :] * score_NxHxBxN, 0.0)
    return s / jnp.maximum(s.sum(-1, keepdims=True), 1e-30)
  if rule == 'neighbours_first':
    has_neighbour = neighbour_NxHxBxN.any(-1, keepdims=True)
    return _best(conf_NxHxBxN, jnp.where(has_neighbour, neighbour_NxHxBxN, self_NxHxBxN))
  if rule == 'neighbour_and_self':
    s = _best(conf_NxHxBxN, neighbour_NxHxBxN) + self_NxHxBxN
    return s / jnp.maximum(s.sum(-1, keepdims=True), 1e-30)
  raise ValueError(f'unknown target rule {rule!r}; choose one of {", ".join(TARGET_RULES)}.')


def mix_targets(mixing_NxHxBxN, probs_NxHxBxC):
  """Target distributions T[i, k, b] = sum_j M[i, k, b, j] P[j, k, b] (with own heads that
  differ from P: `distill.targets`)."""
  return jnp.einsum('ikbj,jkbc->ikbc', mixing_NxHxBxN, probs_NxHxBxC, precision=_HIGHEST)


def mix_embeddings(mixing_NxBxN, emb_NxBxD):
  """Embedding targets from the head-0 mixing weights: sum_j M[i, b, j] e_j(u_b)."""
  return jnp.einsum('ibj,jbd->ibd', mixing_NxBxN, emb_NxBxD, precision=_HIGHEST)
