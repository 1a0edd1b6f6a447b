"""The published MNIST-1D models as backbones (Greydanus & Kobak, ICML 2024).

Each is the published network (notebooks/models.py of github.com/greydanus/mnist1d) up
to its last linear layer, which becomes our head 0, so with one head the parameter
counts are the published ones: `linear` 410, `mnist1d_mlp` 15,210, `mnist1d_cnn` 5,210,
`mnist1d_gru` 5,134 (PyTorch's GRU cell, written out: flax's `GRUCell` has four biases
where PyTorch has six). Initialisation is flax's (LeCun normal kernels, orthogonal
recurrent ones, zero biases), not PyTorch's.

Their sizes are the published ones (`model.width` and `model.depth` do not apply).
The convolutional and recurrent ones read an example as a signal x_BxLxC over its
positions: MNIST-1D's [40, 1] as it is, an image [H, W, C] in raster order.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _signal(x, dtype):
  """x [B, ...] as a signal x_BxLxC (the last axis is the channels)."""
  return x.reshape(x.shape[0], -1, x.shape[-1]).astype(dtype)


class Linear(nn.Module):
  """No hidden layer: the embedding is the flattened input (one head: logistic regression)."""
  dtype: Any = jnp.float32  # unused: nothing is computed before the heads

  @nn.compact
  def __call__(self, x, train: bool, segments=None):
    del train, segments
    return x.reshape(x.shape[0], -1).astype(jnp.float32)


class MLP(nn.Module):
  """Flatten, h = relu(W1 x), embedding h + relu(W2 h): 40 -> 100 -> 100, the second residual."""
  width: int = 100
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, segments=None):
    del train, segments  # per-example: nothing couples the examples of a batch
    x_BxD = x.reshape(x.shape[0], -1).astype(self.dtype)
    h_BxW = nn.relu(nn.Dense(self.width, dtype=self.dtype)(x_BxD))
    return (h_BxW + nn.relu(nn.Dense(self.width, dtype=self.dtype)(h_BxW))).astype(jnp.float32)


class CNN(nn.Module):
  """Three 1-D convolutions of 25 channels (kernels 5, 3, 3; stride 2, padding 1), ReLU.

  The embedding is the flattened output: 40 -> 19 -> 10 -> 5 positions, 125 units (in
  position-major order where PyTorch's is channel-major: the head sees the same units
  permuted).
  """
  channels: int = 25
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, segments=None):
    del train, segments  # per-example: nothing couples the examples of a batch
    h_BxLxC = _signal(x, self.dtype)
    for kernel in (5, 3, 3):
      h_BxLxC = nn.relu(nn.Conv(self.channels, (kernel,), strides=(2,), padding=[(1, 1)],
                                dtype=self.dtype)(h_BxLxC))
    return h_BxLxC.reshape(h_BxLxC.shape[0], -1).astype(jnp.float32)


class _GRULayer(nn.Module):
  """One direction of a GRU over x_BxLxC, PyTorch's cell (its six biases):

      r, z = sigmoid(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z})
      n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),    h' = (1 - z) * n + z * h

  from h = 0; returns every position's h, [B, L, U] in the input's order.
  """
  units: int
  reverse: bool
  dtype: Any

  @nn.compact
  def __call__(self, x_BxLxC):
    u = self.units
    gi_BxLx3U = nn.Dense(3 * u, dtype=self.dtype, name='input')(x_BxLxC)
    w_Ux3U = self.param('hidden_kernel', nn.initializers.orthogonal(), (u, 3 * u)
                        ).astype(self.dtype)
    b_3U = self.param('hidden_bias', nn.initializers.zeros_init(), (3 * u,)).astype(self.dtype)

    def step(h_BxU, gi_Bx3U):
      gh_Bx3U = h_BxU @ w_Ux3U + b_3U
      r_BxU, z_BxU = jnp.split(nn.sigmoid(gi_Bx3U[:, :2 * u] + gh_Bx3U[:, :2 * u]), 2, axis=1)
      n_BxU = jnp.tanh(gi_Bx3U[:, 2 * u:] + r_BxU * gh_Bx3U[:, 2 * u:])
      h_BxU = (1 - z_BxU) * n_BxU + z_BxU * h_BxU
      return h_BxU, h_BxU

    # h = 0 made from the input projection: under `shard_map` (placement) a scan's carry must
    # vary over the mesh axes as its output does, and a constant does not.
    h0_BxU = jnp.zeros_like(gi_BxLx3U[:, 0, :u])
    _, h_LxBxU = jax.lax.scan(step, h0_BxU, jnp.swapaxes(gi_BxLx3U, 0, 1), reverse=self.reverse)
    return jnp.swapaxes(h_LxBxU, 0, 1)


class GRU(nn.Module):
  """A bidirectional GRU of 6 units a direction; the embedding is its output at every
  position, both directions, flattened: 40 x 12 = 480 units."""
  units: int = 6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, segments=None):
    del train, segments  # per-example: nothing couples the examples of a batch
    x_BxLxC = _signal(x, self.dtype)
    h_BxLx2U = jnp.concatenate([_GRULayer(self.units, reverse, self.dtype, name=name)(x_BxLxC)
                                for name, reverse in (('forward', False), ('backward', True))],
                               axis=-1)
    return h_BxLx2U.reshape(h_BxLx2U.shape[0], -1).astype(jnp.float32)


BACKBONES = {'linear': Linear, 'mnist1d_mlp': MLP, 'mnist1d_cnn': CNN, 'mnist1d_gru': GRU}
