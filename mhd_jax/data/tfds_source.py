"""The records of a TFDS split, read by index: builders, counted sources, labels.

`python -m mhd_jax.data.prepare` makes a dataset readable here once (ArrayRecord
files and a cache of the train labels); `tfds_data.get_data` builds the
pipeline on top. Every read goes through `CountingSource`, so tests and
benchmarks count the records read (`audited_sources` counts them again
beneath tfds). A dataset that is not prepared stops the run in one line that
says how to prepare it.
"""

import contextlib
import difflib
import logging as std_logging
import os
import threading

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mhd_jax import config_base

READ_AHEAD = 2  # steps (or label batches) whose records are read concurrently, ahead of decoding


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


def parser(features):
  """serialized tf.Example -> (encoded image bytes, int32 label)."""
  missing = {'image', 'label'} - set(features.keys())
  if missing:
    raise ValueError(f'{features.keys()} lacks {missing}: an image-classification '
                     "dataset needs an 'image' and a 'label' feature.")

  def parse(record):
    ex = features.deserialize_example(record, decoders={'image': tfds.decode.SkipDecoding()})
    return ex['image'], tf.cast(ex['label'], tf.int32)
  return parse


def records(source, keys_fn, key_shape):
  """tf.data map function: arg -> the records at keys_fn(arg), read in one batched call."""
  def read(arg):
    out = tf.numpy_function(lambda a: source.read(keys_fn(a)), [arg], tf.string)
    return tf.ensure_shape(out, key_shape)
  return read


def label_cache_path(builder, split: str) -> str:
  return os.path.join(os.fspath(builder.data_dir), f'mhd_labels-{split}.npy')


def scan_labels(source: CountingSource, features) -> np.ndarray:
  """Labels of every record, in order: one parallel pass over the split."""
  parse = parser(features)
  ds = tf.data.Dataset.range(len(source)).batch(4096)
  ds = ds.map(records(source, lambda k: k, [None]), num_parallel_calls=READ_AHEAD)
  ds = ds.unbatch().map(lambda r: parse(r)[1], num_parallel_calls=tf.data.AUTOTUNE).batch(1 << 16)
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
