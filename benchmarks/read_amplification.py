"""Read amplification and input throughput of the TFDS pipeline on a real ArrayRecord dataset.

    python benchmarks/read_amplification.py [--num_clients=10 --steps=60]

Builds a synthetic JPEG dataset (300x400 images, 100 classes) in a temp dir as
tfrecord (like an existing ImageNet copy), converts it with `mhd_jax.data.prepare`,
then feeds N clients for a number of steps with ImageNet preprocessing at 224 px
while a counter under tfds counts every record read. Prints one JSON object per
line: `read_amplification` = records read / examples consumed.
"""

import json
import os
import sys
import tempfile
import time

from absl import app
from absl import flags
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mhd_jax.data import prepare  # pylint: disable=g-import-not-at-top,wrong-import-position
from mhd_jax.data import tfds_data  # pylint: disable=g-import-not-at-top,wrong-import-position
from mhd_jax.data import tfds_source  # pylint: disable=g-import-not-at-top,wrong-import-position

_CLIENTS = flags.DEFINE_integer('num_clients', 10, 'Clients fed.')
_STEPS = flags.DEFINE_integer('steps', 60, 'Training steps read.')
_TRAIN = flags.DEFINE_integer('train_examples', 4000, 'Synthetic training images.')


class SyntheticJpegs(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """300x400 JPEGs with random labels in [0, 100)."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
        'label': tfds.features.ClassLabel(num_classes=100)}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(_TRAIN.value, 0),
            'validation': self._generate_examples(500, 1)}

  def _generate_examples(self, n, seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (300, 400, 3), np.uint8)
    for i in range(n):
      yield i, {'image': np.roll(base, i, axis=0), 'label': int(rng.integers(100))}


def main(argv):
  del argv
  root = tempfile.mkdtemp()
  SyntheticJpegs(data_dir=root).download_and_prepare(file_format='tfrecord')
  prepare.prepare('synthetic_jpegs', root)
  n, b, b_pub, steps = _CLIENTS.value, 32, 64, _STEPS.value
  config = ml_collections.ConfigDict(dict(
      seed=0, num_clients=n, partition='skew', skew=0.9, dirichlet_alpha=0.5, public_fraction=0.2,
      data=dict(name='synthetic_jpegs', data_dir=root, train_split='train',
                eval_split='validation', image_size=224, augment='imagenet', batch_size=b,
                public_batch_size=b_pub, eval_batch_size=128)))
  builder = tfds_source.get_builder('synthetic_jpegs', root)
  sources, readers = tfds_source.audited_sources(builder, ('train', 'validation'))
  data = tfds_data.get_data(config, sources=tuple(sources))
  startup_reads = readers[0].num_read
  batches = data.train_batches(0)
  next(batches)
  start = time.time()
  for _ in range(steps - 1):
    next(batches)
  seconds = time.time() - start
  consumed = steps * (n * b + b_pub)
  print(json.dumps({'benchmark': 'read_amplification', 'num_clients': n, 'steps': steps,
                    'examples_consumed': consumed, 'records_read': readers[0].num_read,
                    'startup_reads': startup_reads,
                    'read_amplification': round(readers[0].num_read / consumed, 4),
                    'examples_per_sec': round((steps - 1) * (n * b + b_pub) / seconds, 1),
                    'cpu_count': os.cpu_count()}))
  del batches
  evaluated = sum(int(e['mask'].sum()) for e in data.eval_batches())
  print(json.dumps({'benchmark': 'eval_reads', 'examples_evaluated': evaluated,
                    'records_read': readers[1].num_read}))


if __name__ == '__main__':
  app.run(main)
