"""CIFAR-100, ResNet-18 clients with the CIFAR stem.

    python -m mhd_jax.data.prepare --dataset=cifar100 --data_dir=DATA_DIR   # once (downloads)
    python launch.py --config=configs/cifar100_resnet18.py --config.data.data_dir=DATA_DIR \
        --workdir=workdirs/c100
    python launch.py --config=configs/cifar100_resnet18.py:small --workdir=/tmp/c100_small

10 clients owning 10 classes each, skew 0.9, 10% of the training set public;
3 heads, complete graph, confidence-weighted targets; batch 64 private per client
and 128 public per step; pad-crop-flip augmentation; SGD (Nesterov 0.9) at
0.05, weight decay 5e-4, 1,000 warm-up steps then cosine; 30,000 steps
(~45 epochs of each client's 4,500 images); bfloat16 compute.
"""

from configs import default
from configs import imagenet_resnet18


def get_config(arg: str | None = None):
  c = default.get_config()
  c.num_clients = 10
  c.num_heads = 3
  c.num_steps = 30_000
  c.log_every = 100
  c.eval_every = 2_000
  c.data.name = 'cifar100'
  c.data.eval_split = 'test'
  c.data.image_size = 32
  c.data.augment = 'cifar'
  c.data.batch_size = 64
  c.data.public_batch_size = 128
  c.data.eval_batch_size = 500
  c.skew = 0.9
  c.public_fraction = 0.1
  c.model.name = 'resnet18_cifar'
  c.model.width = 64
  c.model.dtype = 'bfloat16'
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 0.05
  c.optimizer.weight_decay = 5e-4
  c.optimizer.schedule = 'cosine'
  c.optimizer.warmup_steps = 1_000
  return imagenet_resnet18.shrink(c) if arg == 'small' else c
