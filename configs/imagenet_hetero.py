"""ImageNet with mixed architectures: 4 ResNet-18 and 4 ResNet-34 clients.

    python launch.py --config=configs/imagenet_hetero.py --workdir=/mnt/shared/mhd/hetero
    python launch.py --config=configs/imagenet_hetero.py:small --workdir=/tmp/hetero_small
    python -m mhd_jax.studies models --config=configs/imagenet_hetero.py --workdir=DIR

The setting of `imagenet_resnet18.py` (8 clients, 4 heads, skew 0.9, 10%
public, complete graph, SGD 0.05 cosine, 100,000 steps, bfloat16) with
clients 0-3 ResNet-18 and clients 4-7 ResNet-34. The two groups meet through
their logits on the public batch; both have 512-unit embeddings, so embedding
distillation (`--config.nu_emb`) also crosses groups. Targets are
`most_confident`, as in `digits_hetero.py` (mixtures collapsed mixed
populations of MLPs on the digits).
"""

from configs import imagenet_resnet18


def get_config(arg: str | None = None):
  c = imagenet_resnet18.get_config()
  c.groups.resnet18 = {'num_clients': 4, 'model': {'name': 'resnet18'}}
  c.groups.resnet34 = {'num_clients': 4, 'model': {'name': 'resnet34'}}
  c.target = 'most_confident'
  if arg == 'small':
    c = imagenet_resnet18.shrink(c)
    c.groups.resnet18.num_clients = c.groups.resnet34.num_clients = 1
  return c
