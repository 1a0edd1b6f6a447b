"""What crosses between clients, in bytes (DESIGN §2, "Communication").

Per step, client j sends to each out-neighbour (each i with A[i, j] > 0) its
logits of every head on the public batch, and its embeddings when embedding
distillation is on: B_pub * (H*C + D) numbers per edge, at the dtype the model
outputs them in. FedAvg instead moves two copies of the parameters per client
per round (the client's update up, the average down).
"""

import jax
import numpy as np


def public_output_bytes(model, params, batch_stats, image_shape, public_batch_size: int,
                        send_embeddings: bool) -> int:
  """Bytes of one client's outputs on one public batch (logits of all heads [+ embeddings])."""
  variables = {'params': params, 'batch_stats': batch_stats}
  logits, inter = jax.eval_shape(
      lambda v: model.apply(v, np.zeros((public_batch_size, *image_shape), np.float32),
                            train=False), variables)
  size = logits.size * logits.dtype.itemsize
  if send_embeddings:
    size += inter['embedding'].size * inter['embedding'].dtype.itemsize
  return int(size)


def bytes_sent_per_step(adjacency, output_bytes_N) -> np.ndarray:
  """[N] bytes client j sends per step: out-degree(j) * its public output bytes."""
  out_degree = (np.asarray(adjacency) > 0).sum(axis=0)
  return out_degree * np.asarray(output_bytes_N, np.int64)


def param_bytes(params) -> int:
  """Bytes of one client's parameters (params without the client axis)."""
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)))


def fedavg_bytes_per_round(params) -> int:
  """FedAvg traffic of one client per round: its parameters up and the average down."""
  return 2 * param_bytes(params)
