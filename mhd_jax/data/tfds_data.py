"""TFDS image-classification datasets (imagenet2012, cifar10, cifar100, ...) as `Data`.

Design: random access. Each split is opened as a `tfds.data_source` (`tfds_source`:
ArrayRecord files; `python -m mhd_jax.data.prepare` makes them once). For step s the
host computes which records every stream needs (`contract.epoch_indices`,
streams 0..N-1 are the clients, stream N the public set), reads exactly those
records and nothing else, and tf.data decodes and augments them in parallel
(AUTOTUNE) and prefetches. With teachers that lag tau steps
(`dynamics.staleness`), step s also reads the public batch of step s + tau
(`public_ahead`, the same records and augmentation as that step's `public`):
each public record is then read and decoded twice, tau steps apart. Hence:

- read amplification 1: every record read is decoded once and consumed once
  (`tfds_source.CountingSource.num_read` counts reads; tests assert reads / consumed
  ~ 1).
  Extra reads, all outside the training loop: one scan of the train labels at
  start-up when `prepare` has not cached them, the public batch on every host
  (it must be identical everywhere), and the whole eval split per evaluation;
- a host reads only the clients it feeds (`client_ids`);
- batch s depends only on (seed, stream, s), augmentation included (stateless
  TF ops keyed on (seed, stream, s, position)), so a resumed run sees the data an
  uninterrupted one would.

Preprocessing (`config.data.augment`): 'imagenet' = random-resized (Inception)
crop to 8-100% of the area, aspect 3/4-4/3, + flip for training, centre crop of
87.5% of the shorter side for evaluation; 'cifar' = zero-pad 4, random crop
back, flip; 'none' = nothing. Then a resize to `image_size` and
x = (pixel / 255 - mean) / std per channel, float32 (`_STATS`: the dataset's own
statistics for CIFAR, ImageNet's for other RGB data, 0.5 / 0.5 otherwise).
"""

import contextlib
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from mhd_jax.data import contract
from mhd_jax.data import partition as partition_lib
from mhd_jax.data import tfds_source

_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_STATS = {'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
          'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}
_PREFETCH = 2    # decoded steps kept ready for the trainer
_AUTOTUNE = tf.data.AUTOTUNE


def _preprocess(encoded, key, *, train, augment, size, channels, jpeg, mean, std):
  """Encoded image -> [size, size, channels] float32, augmented with stateless key [2]."""
  crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))

  def inception_window(shape):  # [y, x, h, w]
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, tf.constant([0., 0., 1., 1.], shape=[1, 1, 4]), seed=crop_key,
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
    return tf.stack([begin[0], begin[1], extent[0], extent[1]])

  def centre_window(shape):
    side = tf.cast(0.875 * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32), tf.int32)
    return tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, side, side])

  window_fn = None
  if augment == 'imagenet':
    window_fn = inception_window if train else centre_window
  if jpeg and window_fn:  # decode only the window: much faster for ImageNet
    window = window_fn(tf.io.extract_jpeg_shape(encoded))
    image = tf.io.decode_and_crop_jpeg(encoded, window, channels=channels)
  else:
    image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    if window_fn:
      w = window_fn(tf.shape(image))
      image = image[w[0]:w[0] + w[2], w[1]:w[1] + w[3]]
  image = tf.ensure_shape(image, [None, None, channels])
  if train and augment == 'cifar':
    shape = tf.shape(image)
    image = tf.image.pad_to_bounding_box(image, 4, 4, shape[0] + 8, shape[1] + 8)
    image = tf.image.stateless_random_crop(image, shape, seed=crop_key)
  if train and augment in ('imagenet', 'cifar'):
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_key)
  image = tf.image.resize(image, [size, size])  # bilinear, float32 in 0..255
  return (image / 255.0 - mean) / std


def get_data(config, client_ids: Sequence[int] | None = None,
             sources: tuple[tfds_source.CountingSource, ...] | None = None):
  """`contract.Data` for TFDS dataset `config.data.name`.

  Args:
    config: reads seed, num_clients, partition, skew, dirichlet_alpha,
      public_fraction and data.{name, data_dir, train_split, eval_split,
      image_size, augment, batch_size, public_batch_size, eval_batch_size}.
    client_ids: clients this host feeds (default all); private batches are
      [len(client_ids), B, ...]; the public batch is the same on every host.
    sources: (train, eval) sources to read from instead of opening the splits
      (tests pass them to count reads).
  """
  with contextlib.suppress(RuntimeError):  # raised once TF has set up its devices
    tf.config.set_visible_devices([], 'GPU')  # TF must leave accelerators to JAX.
  d = config.data
  if d.augment not in contract.AUGMENTS:
    raise ValueError(f'data.augment must be one of {", ".join(contract.AUGMENTS)}, '
                     f'got {d.augment!r}.')
  builder = tfds_source.get_builder(d.name, d.data_dir)
  if sources is None:
    sources = (tfds_source.open_source(builder, d.train_split, d.data_dir),
               tfds_source.open_source(builder, d.eval_split, d.data_dir))
  train_src, eval_src = sources
  features = builder.info.features
  parse = tfds_source.parser(features)
  num_classes = features['label'].num_classes
  channels = features['image'].shape[-1] or 3
  mean, std = _STATS.get(d.name, _IMAGENET_STATS if channels == 3 else
                         ((0.5,) * channels, (0.5,) * channels))
  prep = dict(augment=d.augment, size=d.image_size, channels=channels,
              jpeg=features['image'].encoding_format == 'jpeg',
              mean=tf.constant(mean), std=tf.constant(std))

  train_labels = tfds_source.load_labels(builder, d.train_split, train_src, d.data_dir)
  part = partition_lib.make(train_labels, num_classes, config)
  n_all = config.num_clients
  clients = list(range(n_all)) if client_ids is None else list(client_ids)
  tau = contract.staleness(config)
  ahead = [n_all] if tau else []  # public_ahead: the public stream read tau steps ahead
  pools = [part.client_indices[i] for i in clients] + [part.public_indices] * (1 + len(ahead))
  streams = clients + [n_all] + ahead  # stream n_all is the public set
  sizes = [d.batch_size] * len(clients) + [d.public_batch_size] * (1 + len(ahead))
  lead = [0] * (len(clients) + 1) + [tau] * len(ahead)  # steps each segment reads ahead
  for stream, pool in zip(streams, pools):
    if len(pool) == 0:
      raise ValueError(f'Stream {stream} (clients 0..{n_all - 1}, then public) has no '
                       'examples: use fewer clients or a larger public_fraction.')
  stream_k = tf.constant(np.repeat(streams, sizes), tf.int64)  # [K]
  lead_k = tf.constant(np.repeat(lead, sizes), tf.int64)
  pos_k = tf.constant(np.concatenate([np.arange(b) for b in sizes]), tf.int64)
  k, n_priv = int(sum(sizes)), len(clients) * d.batch_size

  def step_keys(step):
    return np.concatenate([pool[contract.epoch_indices(config.seed, s, int(step) + a, len(pool),
                                                       b)]
                           for s, pool, b, a in zip(streams, pools, sizes, lead)])

  def train_example(record, stream, pos, step):
    key = tf.stack([tf.constant(config.seed, tf.int64), stream])
    for data in (step, pos):
      key = tf.random.experimental.stateless_fold_in(key, data)
    encoded, label = parse(record)
    return _preprocess(encoded, key, train=True, **prep), label

  def train_batches(start_step: int) -> Iterator[dict]:
    ds = tf.data.Dataset.range(start_step, 1 << 62)
    read = tfds_source.records(train_src, step_keys, [k])
    ds = ds.map(lambda s: (read(s), stream_k, pos_k, tf.fill([k], s) + lead_k),
                num_parallel_calls=tfds_source.READ_AHEAD)
    ds = ds.unbatch().map(train_example, num_parallel_calls=_AUTOTUNE)
    ds = ds.batch(k).prefetch(_PREFETCH)
    for image, label in ds.as_numpy_iterator():
      priv = image[:n_priv].reshape((len(clients), d.batch_size) + image.shape[1:])
      batch = {'private': {'image': priv, 'label': label[:n_priv].reshape(len(clients), -1)},
               'public': {'image': image[n_priv:n_priv + d.public_batch_size]}}
      if tau:  # public labels never leave here
        batch['public_ahead'] = {'image': image[n_priv + d.public_batch_size:]}
      yield batch

  def eval_example(record):
    encoded, label = parse(record)
    return _preprocess(encoded, tf.zeros([2], tf.int64), train=False, **prep), label

  def eval_batches() -> Iterator[dict]:
    ds = tf.data.Dataset.range(len(eval_src)).batch(d.eval_batch_size)
    ds = ds.map(tfds_source.records(eval_src, lambda keys: keys, [None]),
                num_parallel_calls=tfds_source.READ_AHEAD)
    ds = ds.unbatch().map(eval_example, num_parallel_calls=_AUTOTUNE)
    ds = ds.batch(d.eval_batch_size).prefetch(_PREFETCH)
    for image, label in ds.as_numpy_iterator():  # the last batch is padded and masked
      yield from contract.eval_batches_from_arrays(image, label, d.eval_batch_size)

  return contract.Data(
      partition=part, num_classes=num_classes,
      image_shape=(d.image_size, d.image_size, channels),
      train_batches=train_batches, eval_batches=eval_batches, train_labels=train_labels)
