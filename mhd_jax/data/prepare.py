r"""Prepares a TFDS dataset once for `tfds_data`: ArrayRecord files and a label cache.

    python -m mhd_jax.data.prepare --dataset=cifar100 --data_dir=$HOME/tensorflow_datasets
    python -m mhd_jax.data.prepare --dataset=imagenet2012 --data_dir=DIR

ImageNet cannot be downloaded by TFDS: put ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in DIR/downloads/manual/ (or pass --manual_dir) first.

- Not prepared: downloads and prepares it with file_format='array_record' (the
  random-access format `tfds.data_source` reads).
- Already prepared as tfrecord (e.g. an existing ImageNet): writes an
  ArrayRecord copy of every shard next to it and records it in
  dataset_info.json; nothing is downloaded again.
- Then caches the train labels (`mhd_labels-<split>.npy` in the dataset
  folder), so that runs build their partition without a pass over the data.
"""

from concurrent import futures
import os

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mhd_jax.data import tfds_source

_DATASET = flags.DEFINE_string('dataset', None, 'TFDS name, e.g. imagenet2012.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', "TFDS data_dir ('' = TFDS default).")
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', '', "Manually downloaded files ('' = <data_dir>/downloads/manual).")
_LABEL_SPLITS = flags.DEFINE_list('label_splits', ['train'], 'Splits whose labels to cache.')


def convert_to_array_record(builder, num_threads: int = 16) -> None:
  """Adds an ArrayRecord copy of each tfrecord shard, in place (same records, same order)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  def convert(path):
    out = os.fspath(path).replace('.tfrecord-', '.array_record-')
    writer = array_record_module.ArrayRecordWriter(out + '.incomplete', 'group_size:1')
    for record in tf.data.TFRecordDataset(os.fspath(path)).as_numpy_iterator():
      writer.write(record)
    writer.close()
    tf.io.gfile.rename(out + '.incomplete', out, overwrite=True)

  paths = [p for split in builder.info.splits.values() for p in split.filepaths]
  logging.info('Converting %d shards of %s to array_record.', len(paths), builder.name)
  with futures.ThreadPoolExecutor(num_threads) as pool:
    list(pool.map(convert, paths))
  builder.info.add_alternative_file_format('array_record')
  builder.info.write_dataset_info_json(builder.data_dir)


def prepare(name: str, data_dir: str = '', manual_dir: str = '',
            label_splits=('train',)) -> None:
  """Makes `name` readable by `tfds_data.get_data` (see the module docstring)."""
  builder = tfds_source.get_builder(name, data_dir)
  if not builder.is_prepared():
    manual = manual_dir or os.path.join(builder.data_dir_root, 'downloads', 'manual')
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS and not (
        tf.io.gfile.isdir(manual) and tf.io.gfile.listdir(manual)):
      raise ValueError(f'{name} needs a manual download into {manual} (or pass '
                       f'--manual_dir):\n{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    builder.download_and_prepare(
        file_format='array_record',
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir or None))
  elif 'array_record' not in {f.value for f in builder.info.available_file_formats()}:
    convert_to_array_record(builder)
  builder = tfds_source.get_builder(name, data_dir)  # re-read dataset_info.json
  for split in label_splits:
    source = tfds_source.open_source(builder, split, data_dir)
    labels = tfds_source.scan_labels(source, builder.info.features)
    path = tfds_source.label_cache_path(builder, split)
    with tf.io.gfile.GFile(path, 'wb') as f:
      np.save(f, labels)
    logging.info('Cached %d labels of %s/%s at %s.', len(labels), name, split, path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    prepare(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value, _LABEL_SPLITS.value)
  except ValueError as e:  # a message for the user, not a traceback
    raise app.UsageError(str(e)) from None


if __name__ == '__main__':
  flags.mark_flag_as_required('dataset')
  app.run(main)
