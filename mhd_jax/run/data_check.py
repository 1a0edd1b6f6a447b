"""The checks of a config that concern its dataset: the name, MNIST-1D's sizes, a run without a
public set (all without loading data), and, once the dataset exists, its partition and image
shape against the batches and models (`validate_data`). One line per problem, raised as
`ConfigError` (`config_check` gathers the first three with the other checks).
"""

import logging as std_logging

from absl import logging
import numpy as np

from mhd_jax import config_base
from mhd_jax import data as data_lib
from mhd_jax import models
from mhd_jax.data import mnist1d as mnist1d_lib
from mhd_jax.data import partition as partition_lib
from mhd_jax.population import groups as groups_lib
from mhd_jax.wire import compression

ConfigError = config_base.ConfigError


def dataset_problem(name: str, data_dir: str = '') -> str | None:
  """A name in `data.EMBEDDED` (the names `data.get_data` serves itself), or one TFDS knows
  (looked up only then; whether it is prepared is checked when it is opened,
  `data.tfds_source.open_source`, before any compile)."""
  absl_logger = logging.get_absl_logger()
  level = absl_logger.level
  absl_logger.setLevel(std_logging.ERROR)  # not absl's logging.ERROR, which is -2
  try:
    return _tfds_problem(name, data_dir)
  finally:
    absl_logger.setLevel(level)


def _tfds_problem(name: str, data_dir: str) -> str | None:
  if name in data_lib.EMBEDDED:
    return None
  embedded = ' or '.join(repr(n) for n in data_lib.EMBEDDED)
  base = name.split(':')[0].split('/')[0]
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    return (f'unknown dataset {name!r}: it is not {embedded}, and tensorflow-datasets is not '
            'installed to look it up (pip install -r requirements.txt).')
  try:
    tfds.builder_cls(base)
  except Exception:  # pylint: disable=broad-except  # tfds raises DatasetNotFoundError
    return (f'unknown dataset {name!r}: config.data.name must be {embedded} or a TFDS '
            'dataset name (e.g. cifar10, cifar100, imagenet2012).')
  return None


def mnist1d_problems(config, names) -> list[str]:
  """Its sizes, and models that cannot read its 1-D signals (2-D convolutions); `names`:
  (field, model name) of config.model and of each group."""
  built = names[1:] or names  # the groups' models replace config.model's
  signal_models = ', '.join(n for n in models.BACKBONES if n not in models.IMAGE_BACKBONES)
  return mnist1d_lib.size_problems(config.data.num_samples, config.data.num_test) + [
      f'model {name!r} ({field}) convolves 2-D images [H, W, C]; mnist1d examples are 1-D '
      f'signals [{mnist1d_lib.LENGTH}, 1]: use one of {signal_models}.'
      for field, name in built if name in models.IMAGE_BACKBONES]


def no_public_problems(config) -> list[str]:
  """public_fraction = 0 leaves no public set: the embedded datasets then serve a public batch
  of zeros (`data.contract.from_arrays`), which only a run that does not distil may ignore."""
  if config.data.name not in data_lib.EMBEDDED:
    return [f'public_fraction=0 (no public set) is served by the embedded datasets only '
            f'({", ".join(data_lib.EMBEDDED)}); use a public_fraction in (0, 1).']
  distilling = any(config[k] != 0 for k in ('nu_main', 'nu_aux', 'nu_emb'))
  if distilling and (config.topology != 'none' or config.include_self):
    return ["public_fraction=0 leaves no public set, which distillation reads; train in "
            "isolation (topology='none' and include_self=False, or nu_main = nu_aux = nu_emb = "
            "0) or use a public_fraction in (0, 1)."]
  return []


def validate_data(config, data) -> None:
  """The checks that need the dataset, before any model is compiled: the partition's sets
  against the batches (`validate_partition`), every group's model against the image shape.

  Raises:
    ConfigError: one line per problem.
  """
  validate_partition(data.partition, config)
  problems = groups_lib.shape_problems(config, data.num_classes, data.image_shape)
  if problems:
    raise ConfigError(problems)


def validate_partition(part: partition_lib.Partition, config) -> None:
  """Every client needs a whole private batch of examples, and the public set a whole public
  batch (a larger batch would hold each of the set's examples several times in every step)."""
  num_public = len(part.public_indices)
  if config.public_fraction and num_public < config.data.public_batch_size:  # 0: none wanted
    raise ConfigError([
        f'public_fraction={config.public_fraction} leaves {num_public} public examples, fewer '
        f'than data.public_batch_size={config.data.public_batch_size}; raise public_fraction or '
        'lower public_batch_size.'])
  topk = compression.topk_problems(config, part.num_classes)
  if topk:
    raise ConfigError(topk)
  sizes = np.array([len(idx) for idx in part.client_indices])
  empty = np.flatnonzero(sizes == 0).tolist()
  if empty:
    raise ConfigError([
        f'the {config.partition} partition leaves clients {empty} without private examples '
        f'({sizes.sum()} private examples for num_clients={config.num_clients}); use fewer '
        'clients, a lower public_fraction or a larger dirichlet_alpha.'])
  smallest = int(sizes.argmin())
  if config.data.batch_size > sizes[smallest]:
    raise ConfigError([
        f'data.batch_size={config.data.batch_size} exceeds the {sizes[smallest]} private '
        f'examples of client {smallest} (the smallest set of the {config.partition} '
        f'partition); use data.batch_size <= {sizes[smallest]}, or fewer clients.'])
