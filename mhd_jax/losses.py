"""Loss terms and distillation-target selection (DESIGN §2).

Shapes: N clients, H heads, B examples, C classes, D embedding units. Targets
are always wrapped in `stop_gradient` by the caller's construction: they are
computed from `jax.lax.stop_gradient` of the teachers' outputs.
"""

import jax
import jax.numpy as jnp

TARGET_RULES = ('most_confident', 'mean', 'random')
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


def mixing_weights(probs_NxHxBxC, weights_HxNxN, rule: str, rng):
  """M[i, k, b, j]: how much candidate j contributes to client i's head-k target on example b.

  Rows sum to 1 where client i has a candidate for head k, else to 0.
    most_confident: one-hot on the candidate whose distribution has the
      largest max-probability on example b;
    mean: the normalised weights W[k, i, :], the same for every example;
    random: one-hot on a candidate drawn with probability proportional to
      W[k, i, j], one draw per (client, head) per step.
  """
  n, h, b, _ = probs_NxHxBxC.shape
  w_NxHxN = jnp.transpose(weights_HxNxN, (1, 0, 2))
  has_NxH = w_NxHxN.sum(-1) > 0
  if rule == 'mean':
    m = w_NxHxN / jnp.maximum(w_NxHxN.sum(-1, keepdims=True), 1e-30)
    return jnp.broadcast_to(m[:, :, None, :], (n, h, b, n))
  if rule == 'most_confident':
    conf_HxBxN = jnp.transpose(probs_NxHxBxC.max(-1), (1, 2, 0))
    score = jnp.where(w_NxHxN[:, :, None, :] > 0, conf_HxBxN[None], -jnp.inf)
    choice_NxHxB = jnp.argmax(score, axis=-1)
  elif rule == 'random':
    logw = jnp.where(w_NxHxN > 0, jnp.log(jnp.maximum(w_NxHxN, 1e-30)), -jnp.inf)
    choice_NxHxB = jnp.broadcast_to(jax.random.categorical(rng, logw)[:, :, None], (n, h, b))
  else:
    raise ValueError(f'unknown target rule {rule!r}; choose one of {", ".join(TARGET_RULES)}.')
  return jax.nn.one_hot(choice_NxHxB, n) * has_NxH[:, :, None, None]


def mix_targets(mixing_NxHxBxN, probs_NxHxBxC):
  """Target distributions T[i, k, b] = sum_j M[i, k, b, j] P[j, k, b]."""
  return jnp.einsum('ikbj,jkbc->ikbc', mixing_NxHxBxN, probs_NxHxBxC, precision=_HIGHEST)


def mix_embeddings(mixing_NxBxN, emb_NxBxD):
  """Embedding targets from the head-0 mixing weights: sum_j M[i, b, j] e_j(u_b)."""
  return jnp.einsum('ibj,jbd->ibd', mixing_NxBxN, emb_NxBxD, precision=_HIGHEST)
