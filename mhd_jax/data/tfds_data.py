"""TFDS image-classification datasets (imagenet2012, cifar10, cifar100, ...) as `Data`.

Design: random access. Each split is opened as a `tfds.data_source`
(ArrayRecord files; `python -m mhd_jax.data.prepare` makes them once). For step s the
host computes which records every stream needs (`contract.epoch_indices`,
streams 0..N-1 are the clients, stream N the public set), reads exactly those
records and nothing else, and tf.data decodes and augments them in parallel
(AUTOTUNE) and prefetches. With teachers that lag tau steps
(`dynamics.staleness`), step s also reads the public batch of step s + tau
(`public_ahead`, the same records and augmentation as that step's `public`):
each public record is then read and decoded twice, tau steps apart. Hence:

- read amplification 1: every record read is decoded once and consumed once
  (`CountingSource.num_read` counts reads; tests assert reads / consumed ~ 1).
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
import difflib
import logging as std_logging
import os
import threading
from typing import Iterator, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mhd_jax import config_base
from mhd_jax.data import contract
from mhd_jax.data import partition as partition_lib

_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_STATS = {'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
          'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}
_READ_AHEAD = 2  # steps whose records are read concurrently, ahead of decoding
_PREFETCH = 2    # decoded steps kept ready for the trainer
_AUTOTUNE = tf.data.AUTOTUNE


def prepare_command(name: str, data_dir: str) -> str:
  return f'python -m mhd_jax.data.prepare --dataset={name} --data_dir={data_dir or "DIR"}'


def get_builder(name: str, data_dir: str):
  """`tfds.builder`, with a short message for a dataset name TFDS does not know."""
  try:
    with _quiet_absl():  # "no dataset_info.json": open_source says it in one line
      return tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    close = difflib.get_close_matches(name, tfds.list_builders(), n=3)
    raise ValueError(f'Unknown TFDS dataset {name!r} (config.data.name). Did you mean '
                     f'one of {close}? The names are listed by tfds.list_builders().'
                     ) from None


@contextlib.contextmanager
def _quiet_absl():
  """Only errors from absl logging (tfds' warnings about a dataset that is not there)."""
  absl_logger = logging.get_absl_logger()
  level = absl_logger.level
  absl_logger.setLevel(std_logging.ERROR)  # not absl's logging.ERROR, which is -2
  try:
    yield
  finally:
    absl_logger.setLevel(level)


class CountingSource:
  """Random access to the serialized records of one split, counting the records read."""

  def __init__(self, source):
    self._source = source
    self._lock = threading.Lock()
    self.num_read = 0

  def __len__(self) -> int:
    return len(self._source)

  def read(self, keys) -> np.ndarray:
    keys = [int(k) for k in keys]
    with self._lock:
      self.num_read += len(keys)
    try:  # One batched call: ArrayRecord reads the shards in parallel threads.
      records = self._source.__getitems__(keys)
    except TypeError:  # tfds.testing.mock_data mocks only __getitem__.
      records = [self._source[k] for k in keys]
    return np.array(records, dtype=object)


def open_source(builder, split: str, data_dir: str) -> CountingSource:
  """The split as a random-access source; a clear error if it cannot be read."""
  try:
    source = builder.as_data_source(
        split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  except Exception as e:  # pylint: disable=broad-except
    with _quiet_absl():  # tfds warns of the missing files: the error below says it in one line
      full = _not_ready_message(builder, split, data_dir, e)
    error = config_base.ConfigError([' '.join(' '.join(full.split('\n')[:3]).split())])
    error.args = (full,)  # launch.py prints the one line; str() keeps the manual instructions
    raise error from None
  return CountingSource(source)


class CountingReader:
  """Wraps the ArrayRecord reader beneath a tfds source: counts every record it returns."""

  def __init__(self, reader):
    self.reader, self.num_read, self.lock = reader, 0, threading.Lock()

  def __len__(self):
    return len(self.reader)

  def __getitem__(self, key):
    return self.__getitems__([key])[0]

  def __getitems__(self, keys):
    with self.lock:
      self.num_read += len(keys)
    return self.reader.__getitems__(keys)


def audited_sources(builder, splits):
  """([CountingSource], [CountingReader]) per split: reads counted by the pipeline and again
  beneath tfds, where no code path can bypass the count (for tests and benchmarks)."""
  sources, readers = [], []
  for split in splits:
    source = builder.as_data_source(
        split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    source.data_source = CountingReader(source.data_source)
    sources.append(CountingSource(source))
    readers.append(source.data_source)
  return sources, readers


def _not_ready_message(builder, split, data_dir, error) -> str:
  name, root = builder.name, data_dir or os.fspath(builder.data_dir_root)
  if not builder.is_prepared():
    msg = (f'TFDS dataset {name!r} is not prepared in {root}. Prepare it once (in '
           f'the ArrayRecord format this pipeline reads) with:\n  {prepare_command(name, data_dir)}')
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
      msg += (f'\n{name} cannot be downloaded automatically: first put the files '
              f'below in {os.path.join(root, "downloads", "manual")}/ (or pass '
              f'--manual_dir to prepare).\n{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    return msg
  formats = sorted(f.value for f in builder.info.available_file_formats())
  if 'array_record' not in formats:
    return (f'TFDS dataset {name!r} in {builder.data_dir} is stored as {formats}, which '
            'has no random access. Add an ArrayRecord copy (in place, no '
            f're-download) with:\n  {prepare_command(name, data_dir)}')
  return (f'Cannot read split {split!r} of {name!r} (splits: '
          f'{list(builder.info.splits)}): {type(error).__name__}: {error}')


def _parser(features):
  """serialized tf.Example -> (encoded image bytes, int32 label)."""
  missing = {'image', 'label'} - set(features.keys())
  if missing:
    raise ValueError(f'{features.keys()} lacks {missing}: an image-classification '
                     "dataset needs an 'image' and a 'label' feature.")

  def parse(record):
    ex = features.deserialize_example(record, decoders={'image': tfds.decode.SkipDecoding()})
    return ex['image'], tf.cast(ex['label'], tf.int32)
  return parse


def _records(source, keys_fn, key_shape):
  """tf.data map function: arg -> the records at keys_fn(arg), read in one batched call."""
  def read(arg):
    out = tf.numpy_function(lambda a: source.read(keys_fn(a)), [arg], tf.string)
    return tf.ensure_shape(out, key_shape)
  return read


def label_cache_path(builder, split: str) -> str:
  return os.path.join(os.fspath(builder.data_dir), f'mhd_labels-{split}.npy')


def scan_labels(source: CountingSource, features) -> np.ndarray:
  """Labels of every record, in order: one parallel pass over the split."""
  parse = _parser(features)
  ds = tf.data.Dataset.range(len(source)).batch(4096)
  ds = ds.map(_records(source, lambda k: k, [None]), num_parallel_calls=_READ_AHEAD)
  ds = ds.unbatch().map(lambda r: parse(r)[1], num_parallel_calls=_AUTOTUNE).batch(1 << 16)
  return np.concatenate(list(ds.as_numpy_iterator()))


def load_labels(builder, split: str, source: CountingSource, data_dir: str = '') -> np.ndarray:
  """Labels of the split from the cache `prepare` writes, else by a scan."""
  path = label_cache_path(builder, split)
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path, 'rb') as f:
      labels = np.load(f)
    if len(labels) == len(source):
      return labels
  logging.warning('No label cache at %s: scanning the %d records of %s once. '
                  '`%s` caches it.', path, len(source), split,
                  prepare_command(builder.name, data_dir))
  return scan_labels(source, builder.info.features)


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
             sources: tuple[CountingSource, CountingSource] | None = None):
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
  builder = get_builder(d.name, d.data_dir)
  if sources is None:
    sources = (open_source(builder, d.train_split, d.data_dir),
               open_source(builder, d.eval_split, d.data_dir))
  train_src, eval_src = sources
  features = builder.info.features
  parse = _parser(features)
  num_classes = features['label'].num_classes
  channels = features['image'].shape[-1] or 3
  mean, std = _STATS.get(d.name, _IMAGENET_STATS if channels == 3 else
                         ((0.5,) * channels, (0.5,) * channels))
  prep = dict(augment=d.augment, size=d.image_size, channels=channels,
              jpeg=features['image'].encoding_format == 'jpeg',
              mean=tf.constant(mean), std=tf.constant(std))

  train_labels = load_labels(builder, d.train_split, train_src, d.data_dir)
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
    read = _records(train_src, step_keys, [k])
    ds = ds.map(lambda s: (read(s), stream_k, pos_k, tf.fill([k], s) + lead_k),
                num_parallel_calls=_READ_AHEAD)
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
    ds = ds.map(_records(eval_src, lambda keys: keys, [None]), num_parallel_calls=_READ_AHEAD)
    ds = ds.unbatch().map(eval_example, num_parallel_calls=_AUTOTUNE)
    ds = ds.batch(d.eval_batch_size).prefetch(_PREFETCH)
    for image, label in ds.as_numpy_iterator():  # the last batch is padded and masked
      yield from contract.eval_batches_from_arrays(image, label, d.eval_batch_size)

  return contract.Data(
      partition=part, num_classes=num_classes,
      image_shape=(d.image_size, d.image_size, channels),
      train_batches=train_batches, eval_batches=eval_batches, train_labels=train_labels)
