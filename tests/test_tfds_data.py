"""Tests of `data.tfds_data`: mock imagenet2012 / cifar10 / cifar100, and a tiny real dataset.

`tfds.testing.mock_data` serves random examples through a mocked data source;
`TinyImages` is prepared for real (ArrayRecord files in a temp dir) and its
image i is filled with the value i, so a batch tells which records it holds.
"""


import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from mhd_jax.data import prepare
from mhd_jax.data import tfds_data
from mhd_jax.data import tfds_source

NUM_TRAIN, NUM_TEST = 120, 25


class TinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Record i (8x8x3) is filled with the value i; its label is i % 4 (no shuffling)."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(8, 8, 3)),
        'label': tfds.features.ClassLabel(num_classes=4)}), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(NUM_TRAIN),
            'test': self._generate_examples(NUM_TEST)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {'image': np.full((8, 8, 3), i, np.uint8), 'label': i % 4}


def make_config(name='cifar10', data_dir='', augment='cifar', eval_split='test', **kw):
  c = ml_collections.ConfigDict(dict(
      seed=0, num_clients=4, partition='skew', skew=1.0, dirichlet_alpha=0.5,
      public_fraction=0.2,
      data=dict(name=name, data_dir=data_dir, train_split='train', eval_split=eval_split,
                image_size=32, augment=augment, batch_size=2, public_batch_size=3,
                eval_batch_size=8)))
  c.update(kw)
  return c


def take(data, start, n):
  it = data.train_batches(start)
  return [next(it) for _ in range(n)]


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
  """TinyImages prepared as tfrecord, then made readable by `prepare` (conversion)."""
  root = str(tmp_path_factory.mktemp('tfds'))
  TinyImages(data_dir=root).download_and_prepare(file_format='tfrecord')
  with pytest.raises(ValueError, match='no random access') as e:
    tfds_data.get_data(make_config('tiny_images', root))
  assert f'python -m mhd_jax.data.prepare --dataset=tiny_images --data_dir={root}' in str(e.value)
  prepare.prepare('tiny_images', root)
  return root


def tiny_data(root, **kw):
  """(data, [train, eval] CountingSource, [train, eval] CountingReader) of TinyImages.

  Augment 'none', 8x8 images. Reads are counted twice: by the pipeline's own
  counter and by a reader wrapped beneath tfds, which no code path can bypass.
  """
  config = make_config('tiny_images', root, augment='none', **kw)
  config.data.image_size = 8
  builder = tfds_source.get_builder('tiny_images', root)
  sources, readers = tfds_source.audited_sources(builder, ('train', 'test'))
  return tfds_data.get_data(config, sources=tuple(sources)), sources, readers


def pixel_index(image):
  """Undo the normalisation of TinyImages (ImageNet statistics) -> record index."""
  mean, std = tfds_data._IMAGENET_STATS  # pylint: disable=protected-access
  return np.rint((image[..., 4, 4, 0] * std[0] + mean[0]) * 255).astype(int)


@pytest.mark.parametrize('name,augment,eval_split', [
    ('imagenet2012', 'imagenet', 'validation'), ('cifar10', 'cifar', 'test'),
    ('cifar100', 'none', 'test')])
def test_batch_shapes_dtypes_and_no_public_labels(name, augment, eval_split):
  with tfds.testing.mock_data(num_examples=60):
    data = tfds_data.get_data(make_config(name, augment=augment, eval_split=eval_split))
    batch = take(data, 0, 1)[0]
    evals = list(data.eval_batches())
  assert data.image_shape == (32, 32, 3)
  assert data.num_classes == {'imagenet2012': 1000, 'cifar10': 10, 'cifar100': 100}[name]
  assert batch['private']['image'].shape == (4, 2, 32, 32, 3)
  assert batch['private']['image'].dtype == np.float32
  assert batch['private']['label'].shape == (4, 2)
  assert batch['private']['label'].dtype == np.int32
  assert set(batch['public']) == {'image'}  # public examples carry no labels
  assert batch['public']['image'].shape == (3, 32, 32, 3)
  assert np.all(np.isfinite(batch['public']['image']))
  assert 0.2 < batch['private']['image'].std() < 5  # normalised, not raw 0..255
  assert [e['image'].shape for e in evals] == [(8, 32, 32, 3)] * 8  # 60 = 7 * 8 + 4
  assert sum(e['mask'].sum() for e in evals) == 60


def test_skew_one_gives_primary_labels_and_epoch_counts_match_partition():
  with tfds.testing.mock_data(num_examples=100):
    data = tfds_data.get_data(make_config('cifar100', augment='none'))
    part = data.partition
    pools = [len(idx) for idx in part.client_indices]
    batches = take(data, 0, -(-max(pools) // 2))  # at least one epoch of every client
  labels = np.concatenate([b['private']['label'] for b in batches], axis=1)  # [N, steps*B]
  counts = part.label_counts(data.train_labels)
  for i, pool in enumerate(pools):
    assert np.isin(labels[i], part.primary_classes[i]).all()
    np.testing.assert_array_equal(np.bincount(labels[i, :pool], minlength=100), counts[i])


def test_private_and_public_streams_read_the_partitioned_records(tiny_dir):
  data = tiny_data(tiny_dir)[0]
  part = data.partition
  steps = -(-max(len(idx) for idx in part.client_indices) // 2)
  batches = take(data, 0, steps)
  seen = np.concatenate([pixel_index(b['private']['image']) for b in batches], axis=1)
  for i, idx in enumerate(part.client_indices):  # one epoch: each own record exactly once
    np.testing.assert_array_equal(np.sort(seen[i, :len(idx)]), idx)
    np.testing.assert_array_equal(
        np.concatenate([b['private']['label'][i] for b in batches]), seen[i] % 4)
  public = np.concatenate([pixel_index(b['public']['image']) for b in batches])
  assert np.isin(public, part.public_indices).all()


def test_eval_split_is_read_in_full_in_order(tiny_dir):
  data = tiny_data(tiny_dir)[0]
  evals = list(data.eval_batches())
  assert len(evals) == 4 and evals[-1]['mask'].sum() == NUM_TEST - 3 * 8
  mask = np.concatenate([e['mask'] for e in evals])
  labels = np.concatenate([e['label'] for e in evals])[mask]
  index = pixel_index(np.concatenate([e['image'] for e in evals]))[mask]
  np.testing.assert_array_equal(index, np.arange(NUM_TEST))
  np.testing.assert_array_equal(labels, np.arange(NUM_TEST) % 4)


@pytest.mark.parametrize('name,augment', [('imagenet2012', 'imagenet'), ('cifar10', 'cifar')])
def test_resumed_stream_equals_uninterrupted(name, augment):
  with tfds.testing.mock_data(num_examples=60):
    data = tfds_data.get_data(make_config(name, augment=augment))
    full = take(data, 0, 5)
    resumed = take(data, 3, 2)
  for a, b in zip(full[3:], resumed):
    for stream in ('private', 'public'):
      for key in a[stream]:
        np.testing.assert_array_equal(a[stream][key], b[stream][key])
  assert not np.array_equal(full[0]['public']['image'], full[1]['public']['image'])


def test_client_ids_select_rows_and_public_stream_is_shared():
  with tfds.testing.mock_data(num_examples=60):
    everyone = take(tfds_data.get_data(make_config()), 2, 1)[0]
    host = take(tfds_data.get_data(make_config(), client_ids=[1, 3]), 2, 1)[0]
  assert host['private']['image'].shape[0] == 2
  for key in ('image', 'label'):
    np.testing.assert_array_equal(host['private'][key], everyone['private'][key][[1, 3]])
  np.testing.assert_array_equal(host['public']['image'], everyone['public']['image'])


def test_read_amplification_is_one(tiny_dir):
  data, (counter, _), (train, evals) = tiny_data(tiny_dir)
  assert train.num_read == 0  # labels came from prepare's cache: no scan
  steps, per_step = 40, 4 * 2 + 3
  it = data.train_batches(0)
  for _ in range(steps):
    next(it)
  amplification = train.num_read / (steps * per_step)  # records read / examples consumed
  assert 1.0 <= amplification <= 1.2, amplification  # 1 + read-ahead of a few steps
  assert counter.num_read == train.num_read
  list(data.eval_batches())
  assert evals.num_read == NUM_TEST


def test_labels_are_scanned_without_cache(tiny_dir):
  data = tiny_data(tiny_dir)[0]
  builder = tfds_source.get_builder('tiny_images', tiny_dir)
  source = tfds_source.open_source(builder, 'train', tiny_dir)
  labels = tfds_source.scan_labels(source, builder.info.features)
  assert source.num_read == NUM_TRAIN
  np.testing.assert_array_equal(labels, np.arange(NUM_TRAIN) % 4)
  np.testing.assert_array_equal(data.train_labels, labels)


@pytest.mark.parametrize('name', ['cifar10', 'imagenet2012'])
def test_unprepared_dataset_says_how_to_prepare(name, tmp_path):
  with pytest.raises(ValueError) as e:
    tfds_data.get_data(make_config(name, str(tmp_path)))
  msg = str(e.value)
  assert 'not prepared' in msg
  assert f'python -m mhd_jax.data.prepare --dataset={name} --data_dir={tmp_path}' in msg
  if name == 'imagenet2012':
    assert 'ILSVRC2012_img_train.tar' in msg
    assert str(tmp_path / 'downloads' / 'manual') in msg


def test_unknown_dataset_name():
  with pytest.raises(ValueError, match="Unknown TFDS dataset 'cifar1000'.*cifar100"):
    tfds_data.get_data(make_config('cifar1000'))
