"""The stacked step against a plain per-client reference, isolation and privacy."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mhd_jax import models
from mhd_jax.algorithm import distill
from mhd_jax.algorithm import losses
from mhd_jax.population import state as state_lib
from mhd_jax.run import programs
from tests import test_losses
from tests.conftest import ConvBN

N, H, C, B, B_PUB = 3, 3, 5, 4, 6
IMAGE = (8, 8, 1)
# Client 0 learns from 1 (weight 1) and 2 (weight 3); 1 from 0; 2 from 0 and 1.
ADJ = np.array([[0, 1, 3], [1, 0, 0], [2, 1, 0]], np.float32)


def distill_config(target='most_confident', include_self=False, nu_emb=0.5, target_power=1.0):
  return ml_collections.ConfigDict(dict(nu_main=1.0, nu_aux=0.7, nu_emb=nu_emb, temperature=2.0,
                                        target=target, include_self=include_self,
                                        target_power=target_power))


def make_specs(name='mlp', n=N, aux_backbone_grad=True):
  """One group of `n` clients; `name` 'convbn' is the test backbone with batch statistics."""
  if name == 'convbn':
    model = models.MultiHeadClassifier(ConvBN(width=8), H, C, aux_backbone_grad)
  else:
    model = models.make_model(ml_collections.ConfigDict(dict(
        name=name, width=8, depth=1, dtype='float32', aux_backbone_grad=aux_backbone_grad)), H, C)
  return (state_lib.GroupSpec(model, optax.sgd(0.1, momentum=0.9), n),)


def make_batch(seed, n=N):
  rng = np.random.default_rng(seed)
  return {'private': {'image': rng.normal(size=(n, B, *IMAGE)).astype(np.float32),
                      'label': rng.integers(C, size=(n, B)).astype(np.int32)},
          'public': {'image': rng.normal(size=(B_PUB, *IMAGE)).astype(np.float32)}}


def reference_step(spec, group, batch, adjacency, config, rng, step):
  """One step written client by client, with the loss spelled out (no vmap, no mixing matrix).

  Returns (the group after the step, metrics [N] of every term), batch statistics
  updated by the private pass, then by the public pass.
  """
  model, t = spec.model, config.temperature
  n = adjacency.shape[0]
  client = lambda i: jax.tree.map(lambda x: x[i], group)
  u = batch['public']['image']

  def apply(c, x):
    (logits, inter), upd = model.apply({'params': c.params, 'batch_stats': c.batch_stats}, x,
                                       train=True, mutable=['batch_stats'])
    return logits, inter['embedding'], upd.get('batch_stats', c.batch_stats)

  teach = [apply(client(j), u) for j in range(n)]
  probs = [jax.nn.softmax(z / t) for z, _, _ in teach]           # [H, B, C] per client
  # `random` rule: one draw per (client, head), Gumbel-max with the noise of candidate j for
  # client i keyed by fold_in(fold_in(step key, i), j).
  step_key = jax.random.fold_in(rng, step)
  with np.errstate(divide='ignore'):  # log 0 = -inf: not a candidate
    logw = np.log(np.stack([adjacency + (config.include_self and k > 0) * np.eye(n)
                            for k in range(H)]))  # [H, N, N]
  noise = np.array([[jax.random.gumbel(jax.random.fold_in(jax.random.fold_in(step_key, i), j),
                                       (H,)) for j in range(n)] for i in range(n)])  # [N, N, H]
  draws = np.argmax(logw.transpose(1, 0, 2) + noise.transpose(0, 2, 1), axis=-1)  # [N, H]
  new_clients, metrics = [], []
  for i in range(n):
    targets, emb_target, has = [], None, []
    for k in range(H):
      src = max(k - 1, 0)
      w = {j: adjacency[i, j] for j in range(n) if adjacency[i, j] > 0}
      if config.include_self and k > 0:
        w[i] = w.get(i, 0.0) + 1.0
      has.append(bool(w))
      if not w:
        targets.append(jnp.zeros((B_PUB, C)))
        continue
      if config.target == 'mean':
        tgt = sum(wj * probs[j][src] for j, wj in w.items()) / sum(w.values())
        emb = sum(wj * teach[j][1] for j, wj in w.items()) / sum(w.values())
      elif config.target == 'random':
        j = int(draws[i, k])
        tgt, emb = probs[j][src], teach[j][1]
      elif config.target in losses.SCORES:  # per example b: w_j score_j[b]^power, normalised
        s = {j: wj * test_losses.score_reference(np.asarray(probs[j][src]), config.target)
                ** config.target_power for j, wj in w.items()}
        total = sum(s.values())
        tgt = sum(s[j][:, None] * probs[j][src] for j in w) / total[:, None]
        emb = sum(s[j][:, None] * teach[j][1] for j in w) / total[:, None]
      else:
        rows, erows = [], []
        for b in range(B_PUB):
          j = max(w, key=lambda j: (float(probs[j][src][b].max()), -j))
          rows.append(probs[j][src][b])
          erows.append(teach[j][1][b])
        tgt, emb = jnp.stack(rows), jnp.stack(erows)
      targets.append(tgt)
      if k == 0:
        emb_target = emb

    def loss(params, i=i, targets=targets, emb_target=emb_target, has=has):
      c = client(i).replace(params=params)
      z_priv, _, stats = apply(c, batch['private']['image'][i])
      z_pub, e_pub, stats = apply(c.replace(batch_stats=stats), u)
      y = batch['private']['label'][i]
      ce = -jnp.mean(jax.nn.log_softmax(z_priv[0])[jnp.arange(B), y])
      kd = [t**2 * jnp.mean(jnp.sum(targets[k] * (jnp.log(jnp.maximum(targets[k], 1e-30))
                                                   - jax.nn.log_softmax(z_pub[k] / t)), -1))
            if has[k] else 0.0 for k in range(H)]
      emb = jnp.mean(jnp.sum((e_pub - emb_target)**2, -1)) if has[0] else 0.0
      total = ce + config.nu_main * kd[0] + config.nu_aux * sum(kd[1:]) + config.nu_emb * emb
      terms = {'ce': ce, 'kd_main': kd[0], 'kd_aux': sum(kd[1:]), 'emb': emb, 'loss': total,
               'train_acc': jnp.mean(jnp.argmax(z_priv[0], -1) == y)}
      return total, (terms, stats)

    c = client(i)
    grads, (terms, stats) = jax.grad(loss, has_aux=True)(c.params)
    updates, opt = spec.tx.update(grads, c.opt_state, c.params)
    new_clients.append(c.replace(params=optax.apply_updates(c.params, updates), opt_state=opt,
                                 batch_stats=stats))
    metrics.append(terms)
  stack = lambda *xs: jnp.stack([jnp.asarray(x, jnp.float32) for x in xs])
  return jax.tree.map(stack, *new_clients), distill.Metrics(**jax.tree.map(stack, *metrics))


def run_steps(specs, adjacency, config, batches, strategy='vmap', seed=0):
  state = state_lib.init_state(specs, IMAGE, jax.random.PRNGKey(seed))
  step = jax.jit(programs.make_train_step(specs, adjacency, config, strategy))
  for batch in batches:
    state, metrics = step(state, batch, jax.random.PRNGKey(7))
  return state, metrics


def assert_trees_close(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw), a, b)


@pytest.mark.parametrize('target,include_self,model,power', [
    ('most_confident', False, 'mlp', 1.0), ('mean', False, 'mlp', 1.0),
    ('random', False, 'mlp', 1.0), ('most_confident', True, 'mlp', 1.0),
    ('mean', True, 'convbn', 1.0), ('class_relative', True, 'mlp', 2.0)])
def test_stacked_step_matches_per_client_reference(target, include_self, model, power):
  """Parameters, batch statistics, optimizer state and every metric, after two steps."""
  config = distill_config(target, include_self, target_power=power)
  specs = make_specs(model)
  state = state_lib.init_state(specs, IMAGE, jax.random.PRNGKey(0))
  batches = [make_batch(s) for s in range(2)]
  step = jax.jit(programs.make_train_step(specs, ADJ, config))
  rng = jax.random.PRNGKey(3)
  ref = state.groups[0]
  for s, batch in enumerate(batches):
    ref, ref_metrics = reference_step(specs[0], ref, batch, ADJ, config, rng, s)
    state, metrics = step(state, batch, rng)
  assert (model == 'convbn') == bool(jax.tree.leaves(ref.batch_stats))
  for part in ('params', 'batch_stats', 'opt_state'):
    assert_trees_close(getattr(state.groups[0], part), getattr(ref, part), rtol=2e-5, atol=2e-6)
  assert_trees_close(metrics, ref_metrics, rtol=2e-5, atol=2e-6)
  assert np.all(metrics.kd_main > 0) and np.all(metrics.kd_aux > 0)


def test_loop_strategy_equals_vmap():
  config, specs, batches = distill_config(), make_specs('cnn'), [make_batch(s) for s in range(2)]
  a, ma = run_steps(specs, ADJ, config, batches, 'vmap')
  b, mb = run_steps(specs, ADJ, config, batches, 'loop')
  assert_trees_close(a.groups[0].params, b.groups[0].params, rtol=1e-5, atol=1e-6)
  assert_trees_close(ma, mb, rtol=1e-5, atol=1e-6)


def test_zero_adjacency_is_independent_training():
  """All-zero A with distillation weights on: each client evolves as if trained alone."""
  config, specs = distill_config(), make_specs()
  batches = [make_batch(s) for s in range(3)]
  together, metrics = run_steps(specs, np.zeros((N, N)), config, batches)
  assert np.all(metrics.kd_main == 0) and np.all(metrics.emb == 0)
  init = state_lib.init_state(specs, IMAGE, jax.random.PRNGKey(0))
  alone_specs = make_specs(n=1)
  alone_step = jax.jit(programs.make_train_step(alone_specs, np.zeros((1, 1)), config))
  for i in range(N):
    alone = state_lib.TrainState(step=init.step, groups=(jax.tree.map(lambda x: x[i:i + 1],
                                                               init.groups[0]),))
    for batch in batches:
      single = {'private': jax.tree.map(lambda x: x[i:i + 1], batch['private']),
                'public': batch['public']}
      alone, _ = alone_step(alone, single, jax.random.PRNGKey(7))
    assert_trees_close(jax.tree.map(lambda x: x[i], together.groups[0].params),
                       jax.tree.map(lambda x: x[0], alone.groups[0].params),
                       rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('strategy,target', [('vmap', 'most_confident'), ('loop', 'mean')])
def test_private_batch_of_one_client_never_reaches_another(strategy, target):
  """Changing client 1's private images and labels changes no other client's update.

  Uses a backbone with batch norm: a shared forward over private and public
  images would leak the private batch into the public outputs through batch
  statistics.
  """
  config = distill_config(target)
  specs = make_specs('convbn')
  adjacency = np.ones((N, N), np.float32) - np.eye(N)
  batch = make_batch(0)
  other = jax.tree.map(np.copy, batch)
  rng = np.random.default_rng(1)
  other['private']['image'][1] = rng.normal(size=other['private']['image'][1].shape)
  other['private']['label'][1] = (other['private']['label'][1] + 1) % C
  state = state_lib.init_state(specs, IMAGE, jax.random.PRNGKey(0))
  step = jax.jit(programs.make_train_step(specs, adjacency, config, strategy))
  a, _ = step(state, batch, jax.random.PRNGKey(0))
  b, _ = step(state, other, jax.random.PRNGKey(0))
  for i in range(N):
    same = jax.tree.map(lambda x, y: bool(np.array_equal(x[i], y[i])), a.groups, b.groups)
    assert all(jax.tree.leaves(same)) == (i != 1), f'client {i}'


def _spec(width, n):
  model_cfg = ml_collections.ConfigDict(dict(name='mlp', width=width, depth=1, dtype='float32',
                                             aux_backbone_grad=True))
  return state_lib.GroupSpec(models.make_model(model_cfg, H, C), optax.sgd(0.1, momentum=0.9), n)


@pytest.mark.parametrize('target', ['most_confident', 'mean', 'random'])
def test_groups_meet_only_through_outputs(target):
  """Splitting one architecture into groups of 2 + 1 clients changes nothing."""
  config, batches = distill_config(target), [make_batch(s) for s in range(2)]
  one, m1 = run_steps((_spec(8, 3),), ADJ, config, batches)
  two, m2 = run_steps((_spec(8, 2), _spec(8, 1)), ADJ, config, batches)
  merged = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), two.groups[0].params,
                        two.groups[1].params)
  assert_trees_close(one.groups[0].params, merged, rtol=1e-5, atol=1e-6)
  assert_trees_close(m1, m2, rtol=1e-5, atol=1e-6)


def test_embedding_distillation_only_between_matching_sizes():
  """Client 0 (D = 8) learns only from client 2 (D = 16): logits yes, embeddings no."""
  adjacency = np.array([[0, 0, 1], [1, 0, 0], [1, 1, 0]], np.float32)
  specs = (_spec(8, 2), _spec(16, 1))
  _, metrics = run_steps(specs, adjacency, distill_config('most_confident'), [make_batch(0)])
  assert metrics.kd_main[0] > 0 and metrics.emb[0] == 0
  assert metrics.emb[1] > 0  # client 1 learns from client 0, same size
  # Client 2 (D = 16) learns from 0 and 1 (D = 8): no embedding target either.
  assert metrics.emb[2] == 0 and metrics.kd_main[2] > 0


def test_aux_backbone_grad_false_keeps_aux_losses_off_the_backbone():
  """aux_backbone_grad=False: the backbone and head 0 move as with nu_aux = 0; the auxiliary
  heads move exactly as with aux_backbone_grad=True (their own gradient is unchanged)."""
  batch, rng = make_batch(0), jax.random.PRNGKey(0)
  def one_step(aux_backbone_grad, nu_aux):
    config = distill_config()
    config.nu_aux = nu_aux
    specs = make_specs(aux_backbone_grad=aux_backbone_grad)
    state = state_lib.init_state(specs, IMAGE, jax.random.PRNGKey(0))
    params = programs.make_train_step(specs, ADJ, config)(state, batch, rng)[0].groups[0].params
    return state.groups[0].params, params
  init, stopped = one_step(False, 0.7)
  _, no_aux = one_step(True, 0.0)
  _, full = one_step(True, 0.7)
  aux = {f'head_{k}' for k in range(1, H)}
  shared = {k: v for k, v in stopped.items() if k not in aux}
  assert_trees_close(shared, {k: no_aux[k] for k in shared}, rtol=1e-6, atol=1e-7)
  assert_trees_close({k: stopped[k] for k in aux}, {k: full[k] for k in aux}, rtol=1e-6, atol=1e-7)
  # The auxiliary losses do reach the backbone when allowed, and do train the aux heads.
  # (Guards against a vacuous pass: the auxiliary losses do reach the backbone when allowed,
  # and do train the auxiliary heads.)
  kernel = lambda p: p['backbone']['Dense_0']['kernel']
  assert not np.allclose(kernel(full), kernel(no_aux))
  assert not np.allclose(full['head_1']['kernel'], init['head_1']['kernel'])
