"""ImageNet, ResNet-34 clients: the main setting with the larger model.

    python launch.py --config=configs/imagenet_resnet34.py --workdir=/mnt/shared/mhd/r34
    python launch.py --config=configs/imagenet_resnet34.py:small --workdir=/tmp/r34_small

Identical to `imagenet_resnet18.py` (8 clients, 4 heads, skew 0.9, 10% public,
complete graph, batch 128 + public 128, SGD 0.05 cosine with 5,000 warm-up
steps, 100,000 steps, bfloat16) except the model: ResNet-34 (21.8M parameters).
"""

from configs import imagenet_resnet18


def get_config(arg: str | None = None):
  c = imagenet_resnet18.get_config()
  c.model.name = 'resnet34'
  return imagenet_resnet18.shrink(c) if arg == 'small' else c
