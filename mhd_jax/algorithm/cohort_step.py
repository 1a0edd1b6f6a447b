"""The training step of a population streamed through the devices in cohorts (docs/scale.md).

`step.train_step` holds every client at once. Here the step of the same
population is split in two passes, each over cohorts of K clients of one group,
so that the devices hold K clients' state and activations at a time:

  pass 1, `sent`: what each client sends on this step's public batch,
    `step.sent_outputs` with its pre-step variables (exactly its live public
    pass: training mode, the batch statistics discarded). With teachers that lag
    it is what the client sent tau steps ago for this batch (read from its
    buffer), and its outputs on the batch of step t + tau go into the buffer.
  pass 2, `train`: the loss, gradient and optimizer step of the cohort's K
    students against the targets mixed from every client's pass-1 outputs
    (`distill.Teachers` over the N clients, the rows a `distill.Network.cohort`).

What the resident step computes once per client is computed here once per
client too, except the public forward of pass 1 (the students' own public pass
in pass 2 carries the gradient). The own head (`include_self`) is the student's
live output, as in the resident step; the random rule's draws and the DP noise
are keyed by the clients' global ids; a client that sits the step out keeps its
state bit for bit. Nothing here knows where the cohorts come from or go to
(`placement.cohorts`).
"""

import functools

import jax
import jax.numpy as jnp

from mhd_jax.algorithm import distill
from mhd_jax.algorithm import step as step_lib
from mhd_jax.network import lag
from mhd_jax.population import state as state_lib


def sent(group: state_lib.Group, buffer, public, public_ahead, active_K, step, *,
         spec: state_lib.GroupSpec, config, for_each):
  """Pass 1 of one cohort at training step `step` (1-based): (what its clients sent for this
  step's public batch, `{'logits': [K, H, B, C]}` and `'emb'` [K, B, D] with nu_emb; sent_K,
  the clients that were active when they computed it; the lag buffer after the step, or None).

  Without lag (`buffer` None) the outputs are the clients' own on `public`, sent where
  `active_K`. With a `lag.LagBuffer` (leaves [K, tau, ...]) they are read from it, and the
  clients' outputs on `public_ahead` (the batch of step t + tau) take their slot.
  """
  fn = functools.partial(step_lib.sent_outputs, spec.model, with_emb=bool(config.nu_emb))
  run = for_each(fn, in_axes=(0, 0, None))
  if buffer is None:
    return run(group.params, group.batch_stats, public), active_K, None
  ahead = run(group.params, group.batch_stats, public_ahead)
  sent_K, outputs, buffer = lag.read_and_push(buffer, step, ahead, active_K)
  return outputs, sent_K, buffer


def train(group: state_lib.Group, private, public, teachers: distill.Teachers,
          net: distill.Network, rng, step, *, spec: state_lib.GroupSpec, group_index: int,
          config, for_each):
  """Pass 2 of one cohort at training step `step` (1-based): (its group after the step,
  `distill.Metrics` [K]).

  Args:
    group: the cohort's K clients of group `group_index` (`spec` with K clients).
    private: `{'image': [K, B, ...], 'label': [K, B]}`; public: [B_pub, ...].
    teachers: every client's pass-1 outputs (logits [N, H, B_pub, C], per group
      embeddings, sent [N]), in id order.
    net: the cohort's rows (`distill.Network.cohort`).
    rng: the run's step key (folded with the step, as in `step.train_step`).
  """
  rng = jax.random.fold_in(rng, step - 1)
  dp = config.get('dp') is not None and bool(config.dp.enabled)
  groups = len(teachers.embs) if teachers.embs else group_index + 1
  sizes = [spec.num_clients if h == group_index else 0 for h in range(groups)]

  def loss(params):
    priv, pub, emb, stats = for_each(functools.partial(step_lib.client_outputs, spec.model),
                                     in_axes=(0, 0, 0, None))(
                                         params, group.batch_stats, private['image'], public)
    embs = [emb if h == group_index else emb[:0] for h in range(groups)]
    metrics = distill.terms(priv, private['label'], pub, embs, sizes, net, config, rng, step,
                            teachers)
    return distill.total_loss(metrics, net, config if dp else None), (metrics, stats)

  grads, (metrics, stats) = jax.grad(loss, has_aux=True)(group.params)
  if dp:  # as in `step.train_step`: the public terms' gradient + the private DP-SGD gradient
    grads = jax.tree.map(jnp.add, grads, step_lib.private_grads(
        (group.params,), (private,), net, rng, (spec,), config.dp, for_each)[0])
  return step_lib.optimizer_step(spec, group, grads, stats, net.active_S), metrics
