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
from scipy import sparse

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


def readers(adjacency, num_heads: int, config, emb_dims=None):
  """(R [H, N], Re [N]): per step, the expected number of clients that read client j's head h,
  R[h, j] = sum_i P[h, i, j], and its embedding, Re[j] = sum_i Q[i, j] (P, Q: the module doc).

  Computed link by link, O(E), on a dense or scipy.sparse adjacency. Reads nu_main, nu_aux,
  nu_emb, target, include_self. `emb_dims`: [N] embedding sizes (default: all equal).
  """
  a = sparse.coo_array(adjacency if sparse.issparse(adjacency) else np.asarray(adjacency),
                       dtype=np.float64)
  a.sum_duplicates()
  n, positive = a.shape[0], a.data > 0
  i, j, w = a.row[positive], a.col[positive], a.data[positive]
  link = i != j  # a client's own outputs never leave it
  nu = [config.nu_main if k == 0 else config.nu_aux for k in range(num_heads)]
  if config.target == 'random':  # head k draws j with probability W[k, i, j] / sum W[k, i, :]
    total = np.bincount(i, weights=w, minlength=n)
    draw = np.stack([w[link] / np.maximum(total + (config.include_self and k > 0), 1e-300)[i[link]]
                     for k in range(num_heads)])  # [H(k), E]
  else:
    draw = np.ones((num_heads, link.sum()))
  i, j = i[link], j[link]
  not_read = np.ones_like(draw)
  for k in range(num_heads):
    if nu[k] != 0:
      not_read[max(k - 1, 0)] *= 1.0 - draw[k]  # head k reads the neighbours' head k-1
  same = True if emb_dims is None else np.asarray(emb_dims)[i] == np.asarray(emb_dims)[j]
  q = draw[0] * same if config.nu_emb != 0 else np.zeros_like(draw[0])
  if config.nu_emb != 0 and config.target not in ('mean', 'random'):
    not_read[0] *= 1.0 - q  # the embedding's mixing weighs head-0 confidences
  return (np.stack([np.bincount(j, weights=1.0 - r, minlength=n) for r in not_read]),
          np.bincount(j, weights=q, minlength=n))


def bytes_sent_per_step(readers_HxN, emb_readers_N, head_bytes_N, emb_bytes_N) -> np.ndarray:
  """[N] bytes client j sends per step (expected value under `random`): see the module doc."""
  heads = np.asarray(readers_HxN).sum(0) * np.asarray(head_bytes_N, np.float64)
  return heads + np.asarray(emb_readers_N) * np.asarray(emb_bytes_N, np.float64)


def param_bytes(params) -> int:
  """Bytes of one client's parameters (params without the client axis)."""
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)))


def fedavg_bytes_per_round(params) -> int:
  """FedAvg traffic of one client per round: its parameters up and the average down."""
  return 2 * param_bytes(params)


def costs(specs, state, adjacency, image_shape, config):
  """([N] bytes each client sends per step, [N] FedAvg bytes per round for the same models).

  Only what another client's loss reads (`readers`);
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
  read, emb_read = readers(adjacency, config.num_heads, config, dims)
  if wire is not None:
    read, emb_read = compression.wire_reads(read, emb_read, wire)
  return bytes_sent_per_step(read, emb_read, heads, embs), np.array(fedavg)
