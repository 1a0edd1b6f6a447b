"""Multi-head classifiers: backbone -> embedding -> H heads.

`MultiHeadClassifier(x, train)` returns `(logits_HxBxC, {'embedding': e_BxD})`.
Head 0 is the main head (private task); heads 1..H-1 are the auxiliary heads
that distil from the neighbours' heads (docs/algorithm.md). Backbones are chosen by
name (`config.model.name`) from `BACKBONES`; the published MNIST-1D models are in
`mnist1d`.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mhd_jax.models import mnist1d
from mhd_jax.models import resnet


class MLP(nn.Module):
  """Flatten, then `depth` Dense+ReLU layers of `width` units; the last is the embedding."""
  width: int = 128
  depth: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, segments=None):
    del train, segments  # per-example: nothing couples the examples of a batch
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    for _ in range(self.depth):
      x = nn.relu(nn.Dense(self.width, dtype=self.dtype)(x))
    return x.astype(jnp.float32)


class CNN(nn.Module):
  """Small CNN for tiny images: `depth` (3x3 conv, ReLU, 2x2 avg-pool) stages, then Dense.

  Channels double each stage starting from `width`; the embedding has 2*width
  * 2**(depth-1) units. Sized for the 8x8 digits; no batch norm, so it has no
  batch statistics.
  """
  width: int = 16
  depth: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, segments=None):
    del train, segments  # per-example: nothing couples the examples of a batch
    x = x.astype(self.dtype)
    for s in range(self.depth):
      x = nn.relu(nn.Conv(self.width * 2**s, (3, 3), dtype=self.dtype)(x))
      x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    return nn.relu(nn.Dense(2 * self.width * 2**(self.depth - 1), dtype=self.dtype)(x)
                   ).astype(jnp.float32)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    'mlp': MLP,
    'cnn': CNN,
    'resnet18': resnet.ResNet18,
    'resnet34': resnet.ResNet34,
    'resnet18_cifar': resnet.ResNet18Cifar,
    'resnet34_cifar': resnet.ResNet34Cifar,
    **mnist1d.BACKBONES,  # the published MNIST-1D models, at their published sizes
}
# Backbones with 2-D convolutions: they read [H, W, C] images only (the others flatten their
# input, or read it as a signal of its positions: see `mnist1d`).
IMAGE_BACKBONES = ('cnn', 'resnet18', 'resnet34', 'resnet18_cifar', 'resnet34_cifar')


class MultiHeadClassifier(nn.Module):
  """Backbone plus `num_heads` linear heads on the shared embedding.

  Attributes:
    backbone: maps `(x, train)` to an embedding [B, D].
    num_heads: H >= 1.
    num_classes: C.
    aux_backbone_grad: whether the auxiliary heads' losses reach the backbone.
      If False the auxiliary heads see `stop_gradient(embedding)` and only the
      main head (and the embedding loss) shape the backbone.
    fused_passes: the training step runs a client's private and public batches
      as one call on their concatenation, with `segments` keeping their batch
      statistics apart (`resnet.BatchNorm`); read by `step.client_outputs`.

  `segments` (train mode): sizes of consecutive parts of the batch that get
  their own batch statistics; None = one part. Passed on to the backbone only
  when given, so a backbone with batch statistics must accept it to be fused.
  """
  backbone: nn.Module
  num_heads: int
  num_classes: int
  aux_backbone_grad: bool = True
  fused_passes: bool = False

  @nn.compact
  def __call__(self, x, train: bool, segments: tuple[int, ...] | None = None):
    kwargs = {} if segments is None else {'segments': tuple(segments)}
    emb_BxD = self.backbone(x, train=train, **kwargs)
    aux_in = emb_BxD if self.aux_backbone_grad else jax.lax.stop_gradient(emb_BxD)
    logits = [nn.Dense(self.num_classes, name='head_0')(emb_BxD)]
    logits += [nn.Dense(self.num_classes, name=f'head_{k}')(aux_in)
               for k in range(1, self.num_heads)]
    return jnp.stack(logits).astype(jnp.float32), {'embedding': emb_BxD}


def forward(model, params, batch_stats, x, train: bool, segments=None):
  """`model` on x with a client's variables: (logits_HxBxC, embedding_BxD, batch_stats).

  In train mode the batch statistics come back updated (running averages);
  in eval mode they come back as given.
  """
  variables = {'params': params, 'batch_stats': batch_stats}
  kwargs = {} if segments is None else {'segments': segments}
  if not train:
    logits, inter = model.apply(variables, x, train=False)
    return logits, inter['embedding'], batch_stats
  (logits, inter), upd = model.apply(variables, x, train=True, mutable=['batch_stats'], **kwargs)
  return logits, inter['embedding'], upd.get('batch_stats', batch_stats)


DTYPES = ('float32', 'bfloat16', 'float16')  # model.dtype: computation dtypes make_model accepts


def make_model(model_config, num_heads: int, num_classes: int) -> MultiHeadClassifier:
  """The classifier described by `config.model` (name, width, depth, dtype, fused_passes).

  The MNIST-1D backbones (`mnist1d.BACKBONES`) take their published sizes, not width or depth.
  """
  name = model_config.name
  if name not in BACKBONES:
    raise ValueError(f'unknown model {name!r}; choose one of {", ".join(BACKBONES)}.')
  if model_config.dtype not in DTYPES:
    raise ValueError(f'unknown dtype {model_config.dtype!r}; choose one of {", ".join(DTYPES)}.')
  kwargs = {'dtype': jnp.dtype(model_config.dtype)}
  if name not in mnist1d.BACKBONES:  # those have their published sizes
    kwargs['width'] = model_config.width
  if name in ('mlp', 'cnn'):
    kwargs['depth'] = model_config.depth
  if name.startswith('resnet'):
    kwargs['norm'] = model_config.get('norm', 'batch')
  return MultiHeadClassifier(BACKBONES[name](**kwargs), num_heads, num_classes,
                             aux_backbone_grad=model_config.aux_backbone_grad,
                             fused_passes=model_config.get('fused_passes', False))
