"""Batches for the step: per-client private batches plus one shared public batch.

Every dataset is served as a `Data` (the contract, batch layout and shared
helpers are in `contract`, re-exported here). `get_data` picks the dataset
from `config.data.name`: a name in `EMBEDDED` (`digits` and `mnist1d`, each in
the module of its name), else a TFDS dataset (`tfds_data`, imported only then,
so the embedded path never loads TensorFlow). `config_check` reads the same
`EMBEDDED` and `AUGMENTS`, so validation and dispatch accept the same names.

    mhd_jax/data/
      contract.py   Data, epoch_indices, eval_batches_from_arrays, from_arrays, AUGMENTS
      digits.py     the embedded sklearn digits
      mnist1d.py    the embedded MNIST-1D, generated once and cached
      tfds_data.py  TFDS datasets by random access (TensorFlow): the pipeline
      tfds_source.py  their records by index: builders, counted sources, labels
      prepare.py    `python -m mhd_jax.data.prepare`: one-time TFDS preparation
      partition.py  the public set and the non-iid client sets

May import: nothing of mhd_jax but `config_base`.
"""

from typing import Sequence

from mhd_jax.data import digits as digits_lib
from mhd_jax.data import mnist1d as mnist1d_lib
from mhd_jax.data.contract import AUGMENTS, Batch, Data, epoch_indices, eval_batches_from_arrays

__all__ = ['AUGMENTS', 'Batch', 'Data', 'EMBEDDED', 'epoch_indices',
           'eval_batches_from_arrays', 'get_data']

# Datasets served without TFDS: config.data.name -> (config, client_ids) -> Data.
# Any other name is looked up in TFDS.
EMBEDDED = {'digits': digits_lib.digits, 'mnist1d': mnist1d_lib.mnist1d}


def get_data(config, client_ids: Sequence[int] | None = None) -> Data:
  """The dataset a config names (`config.data.name`): embedded, else TFDS."""
  embedded = EMBEDDED.get(config.data.name)
  if embedded is not None:
    return embedded(config, client_ids)
  from mhd_jax.data import tfds_data  # pylint: disable=g-import-not-at-top  # loads TensorFlow
  return tfds_data.get_data(config, client_ids)
