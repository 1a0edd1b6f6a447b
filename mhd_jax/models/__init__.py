"""The multi-head classifiers: backbones, heads, and the one spelling of `model.apply`.

Owns: the backbones (`BACKBONES`: MLP, CNN, ResNets, the published MNIST-1D models
in `mnist1d`; `IMAGE_BACKBONES`, those that read 2-D images only), `MultiHeadClassifier`,
`forward`, `make_model`. Knows nothing of clients, stacking or distillation.

May import: nothing of mhd_jax.
"""

from mhd_jax.models.multihead import (BACKBONES, CNN, DTYPES, IMAGE_BACKBONES, MLP,
                                      MultiHeadClassifier, forward, make_model)

__all__ = ['BACKBONES', 'CNN', 'DTYPES', 'IMAGE_BACKBONES', 'MLP', 'MultiHeadClassifier',
           'forward', 'make_model']
