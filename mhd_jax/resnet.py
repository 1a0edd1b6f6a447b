"""ResNet-18/34 backbones (torchvision layout) that return pooled embeddings.

There is no classification head: the multi-head classifier puts its own
`nn.Dense` heads on the embedding. With one `Dense(1000)` head the ImageNet
presets have torchvision's exact parameter counts (11,689,512 and 21,797,672).
"""

import functools
from typing import Any, Sequence

from flax import linen as nn
import jax.numpy as jnp

ModuleDef = Any
_PAD1 = ((1, 1), (1, 1))  # torchvision pads 3x3 convs by 1 on every side.


class BasicBlock(nn.Module):
  """Two 3x3 convs with a residual; a 1x1 conv + BN projection on shape change.

  Maps [B, H, W, C] to [B, H/s, W/s, filters] for strides s.
  """
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  zero_init_last_bn: bool = False

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
  stem is a single 3x3/1 conv: 32 -> 4.

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
  """
  stage_sizes: Sequence[int]
  stem: str = 'imagenet'
  width: int = 64
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  zero_init_last_bn: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    if self.stem not in ('imagenet', 'cifar'):
      raise ValueError(
          f"ResNet stem must be 'imagenet' or 'cifar', got {self.stem!r}.")
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             param_dtype=jnp.float32)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
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
