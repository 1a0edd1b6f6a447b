"""ImageNet, ResNet-18 clients: the paper's main setting, as we specify it.

    python launch.py --config=configs/imagenet_resnet18.py --workdir=/mnt/shared/mhd/r18

Smoke run (seconds, small images, tiny batches, 2 steps; used by the tests
under `tfds.testing.mock_data`):

    python launch.py --config=configs/imagenet_resnet18.py:small --workdir=/tmp/r18_small

Prepare the data once (TFDS needs the two ILSVRC2012 tar files, downloaded by
hand, in DATA_DIR/downloads/manual/; see the README, "Data"):

    python -m mhd_jax.data.prepare --dataset=imagenet2012 --data_dir=DATA_DIR

The setting (the paper's full text is not in our hands, DESIGN §2: these are
our choices for the setting its introduction describes):
- clients: 8 ResNet-18 (ImageNet stem, 11.7M parameters each), 4 heads (MHD);
- data: imagenet2012; 10% of the training set is the unlabelled public set;
  each client owns 125 primary classes, skew 0.9 (90% of a client's private
  examples come from its own classes); evaluation on the 50,000 validation
  images, private accuracy on the client's 125 classes;
- graph: complete; targets `confidence_weighted` (the recipe measured on the
  digits, README "When do auxiliary heads help?"), T = 1, nu_main = nu_aux = 1,
  no embedding distillation (`--config.nu_emb=1` to add it);
- batches: 128 private images per client per step, one public batch of 128
  shared by all clients, 224x224 Inception crops + flips;
- optimizer: SGD, Nesterov momentum 0.9, learning rate 0.05 (0.1 x 128/256),
  weight decay 5e-5, 5,000 warm-up steps then cosine decay to 0;
- steps: 100,000 (each client's ~144k private images: ~90 epochs);
- bfloat16 compute, float32 parameters.
Expected results: not measured yet (no accelerator in our CI); the README
records what we run.
"""

import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: '' for the full run, 'small' for a seconds-long smoke run."""
  c = default.get_config()
  c.num_clients = 8
  c.num_heads = 4
  c.num_steps = 100_000
  c.log_every = 100
  c.eval_every = 5_000

  c.data.name = 'imagenet2012'
  c.data.eval_split = 'validation'
  c.data.image_size = 224
  c.data.augment = 'imagenet'
  c.data.batch_size = 128
  c.data.public_batch_size = 128
  c.data.eval_batch_size = 500

  c.skew = 0.9
  c.public_fraction = 0.1
  c.topology = 'complete'
  c.nu_main, c.nu_aux, c.nu_emb = 1.0, 1.0, 0.0

  c.model.name = 'resnet18'
  c.model.width = 64
  c.model.dtype = 'bfloat16'

  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 0.05
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-5
  c.optimizer.schedule = 'cosine'
  c.optimizer.warmup_steps = 5_000
  return shrink(c) if arg == 'small' else c


def shrink(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A seconds-long version of any TFDS config: small images, tiny batches, 2 steps."""
  c.num_clients = 2
  c.num_steps = 2
  c.log_every = c.eval_every = 1
  c.data.image_size = 32
  c.data.batch_size = 2
  c.data.public_batch_size = 4
  c.data.eval_batch_size = 8
  c.model.width = 8
  c.model.dtype = 'float32'
  c.optimizer.warmup_steps = 1
  return c
