"""ResNet-18/34 backbones (torchvision layout) that return pooled embeddings.

There is no classification head: the multi-head classifier puts its own
`nn.Dense` heads on the embedding. With one `Dense(1000)` head the ImageNet
presets have torchvision's exact parameter counts (11,689,512 and 21,797,672).
"""

import functools
import math
from typing import Any, Sequence

from flax import linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any
_PAD1 = ((1, 1), (1, 1))  # torchvision pads 3x3 convs by 1 on every side.


class BatchNorm(nn.BatchNorm):
  """flax `nn.BatchNorm` (last axis = features), with train-mode statistics per batch segment.

  `segments = (B_0, B_1, ...)` splits the batch axis into consecutive parts
  that are normalised as if each were its own call: segment s uses
  mean_s = E[x], var_s = max(0, E[x^2] - mean_s^2) over its examples and
  positions (float32, biased: flax's fast variance), and the running averages
  take the segments' statistics in order,

      ra <- m * ra + (1 - m) * stat_s   for s = 0, 1, ...,

  which is what one call per segment, in that order, does. The step uses it to
  run a client's private and public batches in one model call while keeping
  their statistics apart, so the public outputs never see the private batch.
  Without segments, or with running averages (eval), it is `nn.BatchNorm`.
  The class keeps flax's name, so auto-named modules (`BatchNorm_0`, ...) and
  their variables ('scale', 'bias'; 'mean', 'var') are those of `nn.BatchNorm`
  and checkpoints restore into either path.
  """
  segments: tuple[int, ...] | None = None

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    use_ra = nn.merge_param('use_running_average', self.use_running_average,
                            use_running_average)
    if use_ra or self.segments is None or len(self.segments) == 1:
      return super().__call__(x, use_running_average=use_running_average, mask=mask)
    if mask is not None or self.axis not in (-1, x.ndim - 1) or self.axis_name is not None:
      raise NotImplementedError('segments: last-axis features, no mask, no axis_name.')
    if sum(self.segments) != x.shape[0]:
      raise ValueError(f'segments {self.segments} do not add up to the batch {x.shape[0]}.')
    c = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean', lambda s: jnp.zeros(s, jnp.float32), (c,))
    ra_var = self.variable('batch_stats', 'var', lambda s: jnp.ones(s, jnp.float32), (c,))
    scale = self.param('scale', self.scale_init, (c,), self.param_dtype)
    bias = self.param('bias', self.bias_init, (c,), self.param_dtype)
    stat_dtype = jnp.promote_types(self.dtype or x.dtype, jnp.float32)
    out_dtype = nn.dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype)

    def normalise(x_seg):
      """One segment: (normalised x, mean [C], var [C]), with flax's formulas."""
      xf = x_seg.astype(stat_dtype)
      axes = tuple(range(x_seg.ndim - 1))
      mean = xf.mean(axes)
      var = jnp.maximum(0.0, jax.lax.square(xf).mean(axes) - jax.lax.square(mean))
      y = (x_seg - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
      return y.astype(out_dtype), mean, var

    y, mean_SxC, var_SxC = _per_segment(normalise, x, self.segments)
    if not self.is_initializing():
      for s in range(len(self.segments)):
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean_SxC[s]
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var_SxC[s]
    return y


def _per_segment(fn, x, sizes):
  """`fn(x_seg) -> (y_seg, *stats)` on each segment; (y over all, *stats stacked [S, ...]).

  Equal segments are a reshape [S, B/S, ...] and a vmap (one batched reduction,
  clean gradients); unequal ones are slices and a concatenation.
  """
  if len(set(sizes)) == 1:
    y, *stats = jax.vmap(fn)(x.reshape(len(sizes), sizes[0], *x.shape[1:]))
    return (y.reshape(x.shape[0], *y.shape[2:]), *stats)
  starts = [sum(sizes[:s]) for s in range(len(sizes))]
  outs = [fn(x[a:a + n]) for a, n in zip(starts, sizes)]
  return (jnp.concatenate([o[0] for o in outs]),
          *(jnp.stack([o[k] for o in outs]) for k in range(1, len(outs[0]))))


NORMS = ('batch', 'group')  # model.norm: the ResNets' normalisation


class GroupNorm(nn.Module):
  """GroupNorm over gcd(32, C) groups of the C channels (32 for every width here >= 32).

  No batch statistics: each example is normalised on its own, so examples never
  interact and per-example gradients are per example (DP-SGD, privacy.py).
  """
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  scale_init: Any = nn.initializers.ones

  @nn.compact
  def __call__(self, x):
    return nn.GroupNorm(num_groups=math.gcd(32, x.shape[-1]), epsilon=self.epsilon,
                        dtype=self.dtype, param_dtype=self.param_dtype,
                        scale_init=self.scale_init)(x)


class BasicBlock(nn.Module):
  """Two 3x3 convs with a residual; a 1x1 conv + BN projection on shape change.

  Maps [B, H, W, C] to [B, H/s, W/s, filters] for strides s.
  """
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  zero_init_last_bn: bool = False
  norm: str = 'batch'

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), self.strides, padding=_PAD1)(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3), 1, padding=_PAD1)(y)
    last_scale_init = (nn.initializers.zeros_init() if self.zero_init_last_bn
                       else nn.initializers.ones_init())
    y = self.norm(scale_init=last_scale_init)(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), self.strides, padding='VALID',
                           name='conv_proj')(residual)
      residual = self.norm(name='bn_proj')(residual)
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """ResNet V1 backbone: NHWC images [B, H, W, 3] -> float32 embedding [B, D].

  D = width * 2**(len(stage_sizes) - 1): 512 for ResNet-18/34 at width 64.
  Before pooling, H and W shrink by 2**(len(stage_sizes) - 1), and by 4 more
  with the 'imagenet' stem (7x7/2 conv, 3x3/2 max-pool): 224 -> 7. The 'cifar'
  stem is a single 3x3/1 conv: 32 -> 4. `segments` (train mode): batch
  statistics per consecutive part of the batch (see `BatchNorm`).

  Attributes:
    stage_sizes: number of BasicBlocks per stage; stage i has width * 2**i
      filters and (for i > 0) downsamples by 2 in its first block.
    stem: 'imagenet' or 'cifar'.
    width: filters of the stem and first stage.
    dtype: computation dtype (e.g. jnp.bfloat16 on accelerators). Params and
      BatchNorm statistics stay float32; the embedding is returned as float32.
    bn_momentum: decay of the running mean/var in `batch_stats`.
    zero_init_last_bn: init the scale of each block's last BN to zero, so each
      block starts as identity (Goyal et al. 2017); torchvision's
      `zero_init_residual`. Off by default, like torchvision.
    norm: 'batch' (BatchNorm, `segments` honoured) or 'group' (`GroupNorm`: no
      batch statistics, `segments` has nothing to separate; DP-SGD needs it).
  """
  stage_sizes: Sequence[int]
  stem: str = 'imagenet'
  width: int = 64
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  zero_init_last_bn: bool = False
  norm: str = 'batch'

  @nn.compact
  def __call__(self, x, train: bool, segments: tuple[int, ...] | None = None):
    if self.stem not in ('imagenet', 'cifar'):
      raise ValueError(
          f"ResNet stem must be 'imagenet' or 'cifar', got {self.stem!r}.")
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             param_dtype=jnp.float32)
    if self.norm not in NORMS:
      raise ValueError(f'ResNet norm must be one of {", ".join(NORMS)}, got {self.norm!r}.')
    if self.norm == 'group':
      norm = functools.partial(GroupNorm, epsilon=1e-5, dtype=self.dtype,
                               param_dtype=jnp.float32)
    else:
      norm = functools.partial(BatchNorm, use_running_average=not train, segments=segments,
                               momentum=self.bn_momentum, epsilon=1e-5,
                               dtype=self.dtype, param_dtype=jnp.float32)

    if self.stem == 'imagenet':
      x = conv(self.width, (7, 7), 2, padding=((3, 3), (3, 3)),
               name='conv_init')(x)
      x = nn.relu(norm(name='bn_init')(x))
      # Pads with -inf, like torch's MaxPool2d(3, 2, padding=1).
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_PAD1)
    else:
      x = conv(self.width, (3, 3), 1, padding=_PAD1, name='conv_init')(x)
      x = nn.relu(norm(name='bn_init')(x))

    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        x = BasicBlock(self.width * 2**i, conv=conv, norm=norm,
                       strides=2 if i > 0 and j == 0 else 1,
                       zero_init_last_bn=self.zero_init_last_bn)(x)
    # Pool in float32 so the embedding is float32 whatever the compute dtype.
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


_R18, _R34 = (2, 2, 2, 2), (3, 4, 6, 3)
ResNet18 = functools.partial(ResNet, stage_sizes=_R18, stem='imagenet')
ResNet34 = functools.partial(ResNet, stage_sizes=_R34, stem='imagenet')
ResNet18Cifar = functools.partial(ResNet, stage_sizes=_R18, stem='cifar')
ResNet34Cifar = functools.partial(ResNet, stage_sizes=_R34, stem='cifar')
