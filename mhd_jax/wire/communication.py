"""What crosses between clients, in bytes (formula: docs/durable_runs.md).

Only what some other client's loss reads is counted. Client i's head k learns
from its neighbours' head src(k) (src(0) = 0, src(k) = k - 1), so with H
heads a neighbour's heads 0..H-2 are read, never its last head, and only
those whose loss weight is non-zero: head 0 when nu_main > 0 (or when the
embedding target must weigh head-0 confidences: every rule but `mean` and
`random`), heads
0..H-2 when nu_aux > 0. Embeddings go along with head 0's choice when
nu_emb > 0, to receivers whose embedding has the same size. A client's own
outputs (include_self) never leave it.

Per step, client j sends

    sent_j = sum_{i != j} [ sum_h P[h, i, j] * B_pub * C * s  +  Q[i, j] * B_pub * D_j * s_e ]

where P[h, i, j] is the probability that i reads j's head h and Q[i, j] that
it reads j's embedding: 1 on every edge with A[i, j] > 0 for every
rule but `random` (every candidate is compared or mixed), and for `random`, where i
draws one source per head k with probability w_k[i, j] = W[k, i, j] / sum W[k, i, :],
the expected value 1 - prod_{k: src(k) = h} (1 - w_k[i, j]) (and w_0[i, j] for
the embedding). s, s_e: bytes per number of the logits and the embedding.
FedAvg instead moves two copies of the parameters per client per round (the
client's update up, the average down).
"""

import functools

import jax
import numpy as np

from mhd_jax import models
from mhd_jax.wire import compression


def public_output_sizes(model, params, batch_stats, image_shape,
                        public_batch_size: int) -> tuple[int, int, int]:
  """(bytes of one head's logits, bytes of the embedding, D) of one client on one public batch."""
  u = jax.ShapeDtypeStruct((public_batch_size, *image_shape), np.float32)
  logits, emb, _ = jax.eval_shape(functools.partial(models.forward, model, train=False),
                                  params, batch_stats, u)
  head = logits.size // logits.shape[0] * logits.dtype.itemsize
  return int(head), int(emb.size * emb.dtype.itemsize), int(emb.shape[-1])


def read_probabilities(adjacency, num_heads: int, config, emb_dims=None):
  """(P [H, N, N], Q [N, N]): per step, the probability that client i reads client j's head h
  (P[h, i, j]) and its embedding (Q[i, j]); see the module doc. The diagonal is 0.

  Reads nu_main, nu_aux, nu_emb, target, include_self. `emb_dims`: [N] embedding
  sizes (default: all equal).
  """
  a = np.asarray(adjacency, np.float64)
  n = a.shape[0]
  off_diag = ~np.eye(n, dtype=bool)
  edge = (a > 0) & off_diag
  nu = [config.nu_main if k == 0 else config.nu_aux for k in range(num_heads)]
  if config.target == 'random':
    w = np.stack([a + (config.include_self and k > 0) * np.eye(n) for k in range(num_heads)])
    w = np.where(w > 0, w, 0.0)
    draw = w / np.maximum(w.sum(-1, keepdims=True), 1e-300) * off_diag  # [H(k), N, N]
  else:
    draw = np.broadcast_to(edge.astype(np.float64), (num_heads, n, n))
  not_read = np.ones((num_heads, n, n))
  for k in range(num_heads):
    if nu[k] != 0:
      not_read[max(k - 1, 0)] *= 1.0 - draw[k]  # head k reads the neighbours' head k-1
  same = np.ones((n, n), bool) if emb_dims is None else (
      np.asarray(emb_dims)[:, None] == np.asarray(emb_dims)[None, :])
  q = draw[0] * same if config.nu_emb != 0 else np.zeros((n, n))
  if config.nu_emb != 0 and config.target not in ('mean', 'random'):
    not_read[0] *= 1.0 - q  # the embedding's mixing weighs head-0 confidences
  return 1.0 - not_read, q


def bytes_sent_per_step(read_HxNxN, emb_read_NxN, head_bytes_N, emb_bytes_N) -> np.ndarray:
  """[N] bytes client j sends per step (expected value under `random`): see the module doc."""
  heads = np.asarray(read_HxNxN).sum(axis=(0, 1)) * np.asarray(head_bytes_N, np.float64)
  return heads + np.asarray(emb_read_NxN).sum(0) * np.asarray(emb_bytes_N, np.float64)


def param_bytes(params) -> int:
  """Bytes of one client's parameters (params without the client axis)."""
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)))


def fedavg_bytes_per_round(params) -> int:
  """FedAvg traffic of one client per round: its parameters up and the average down."""
  return 2 * param_bytes(params)


def costs(specs, state, adjacency, image_shape, config):
  """([N] bytes each client sends per step, [N] FedAvg bytes per round for the same models).

  Only what another client's loss reads (`read_probabilities`);
  under target='random', the expected value per step. Under `config.wire`, a
  head's block is what `compression.encode` puts on the wire (values, class ids
  and scales: `compression.encoded_bytes`) on the share of steps it is sent
  (`compression.wire_reads`); the embedding goes as it is, with head 0.
  """
  heads, embs, dims, fedavg = [], [], [], []
  wire = compression.config_spec(config)
  for spec, group in zip(specs, state.groups):
    one = jax.tree.map(lambda x: x[0], group)
    head, emb, dim = public_output_sizes(
        spec.model, one.params, one.batch_stats, image_shape, config.data.public_batch_size)
    if wire is not None:
      head = compression.encoded_bytes(wire, config.data.public_batch_size,
                                       spec.model.num_classes, 1)
    heads += [head] * spec.num_clients
    embs += [emb] * spec.num_clients
    dims += [dim] * spec.num_clients
    fedavg += [fedavg_bytes_per_round(one.params)] * spec.num_clients
  read, emb_read = read_probabilities(adjacency, config.num_heads, config, dims)
  if wire is not None:
    read, emb_read = compression.wire_reads(read, emb_read, wire)
  return bytes_sent_per_step(read, emb_read, heads, embs), np.array(fedavg)
