"""Checks a config before anything heavy runs; one message per problem.

`validate(config)` runs the checks that need no data (names, ranges, the
graph, device layout); `validate_partition` runs once the partition exists,
before any model is built. Both raise `ConfigError`, whose message has one
line per problem; `launch.py` prints those lines and exits with status 2.
"""

from typing import Sequence

import jax
import numpy as np

from mhd_jax import losses
from mhd_jax import models
from mhd_jax import partition as partition_lib
from mhd_jax import population as pop
from mhd_jax import topology


class ConfigError(ValueError):
  """A config (or workdir) the run refuses; `problems` holds one line each."""

  def __init__(self, problems: Sequence[str]):
    self.problems = list(problems)
    super().__init__('\n'.join(self.problems))


def dotted(tree: dict, prefix: str = '') -> dict:
  """A nested dict (a config's `to_dict()`) as {'section.field': value}."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(dotted(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _dataset_problem(name: str) -> str | None:
  """'digits', or a name TFDS knows (looked up only for non-default datasets)."""
  if name == 'digits':
    return None
  base = name.split(':')[0].split('/')[0]
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    return (f"unknown dataset {name!r}: it is not 'digits', and tensorflow-datasets is not "
            'installed to look it up (pip install -r requirements.txt).')
  try:
    tfds.builder_cls(base)
  except Exception:  # pylint: disable=broad-except  # tfds raises DatasetNotFoundError
    return (f"unknown dataset {name!r}: config.data.name must be 'digits' or a TFDS "
            'dataset name (e.g. cifar10, cifar100, imagenet2012).')
  return None


def _range_problems(config) -> list[str]:
  """Numbers outside the range they mean something in."""
  problems = []
  def need(ok, message):
    if not ok:
      problems.append(message)
  need(isinstance(config.num_clients, int) and config.num_clients >= 1,
       f'num_clients must be an integer >= 1, got {config.num_clients!r}.')
  need(config.num_heads >= 1, f'num_heads must be >= 1, got {config.num_heads}.')
  need(0.0 <= config.skew <= 1.0,
       f'skew must be in [0, 1] (0 = iid, 1 = only primary classes), got {config.skew}.')
  need(0.0 <= config.public_fraction < 1.0,
       f'public_fraction must be in [0, 1), got {config.public_fraction}.')
  need(config.dirichlet_alpha > 0, f'dirichlet_alpha must be > 0, got {config.dirichlet_alpha}.')
  need(config.temperature > 0, f'temperature must be > 0, got {config.temperature}.')
  for field in ('batch_size', 'public_batch_size', 'eval_batch_size'):
    value = config.data[field]
    need(value >= 1, f'data.{field} must be >= 1, got {value}.')
  for field in ('num_steps', 'log_every', 'eval_every'):
    need(config[field] >= 1, f'{field} must be >= 1, got {config[field]}.')
  need(config.average_every >= 0,
       f'average_every must be >= 0 (0 = no weight averaging), got {config.average_every}.')
  need(config.checkpoint.every >= 0,
       f'checkpoint.every must be >= 0 (0 = only at the end), got {config.checkpoint.every}.')
  need(config.checkpoint.keep >= 1, f'checkpoint.keep must be >= 1, got {config.checkpoint.keep}.')
  measure = config.get('strategy_measure_steps', 0)
  need(isinstance(measure, int) and measure >= 0,
       f'strategy_measure_steps must be an integer >= 0 (0 = no measuring), got {measure!r}.')
  profile = config.get('profile') or {}
  first, count = profile.get('start_step', 0), profile.get('num_steps', 0)
  need(count == 0 or (count > 0 and 1 <= first and first + count - 1 <= config.num_steps),
       f'profile window of {count} steps from step {first} lies outside the run (steps 1 to '
       f'{config.num_steps}); set profile.start_step >= 1 and profile.num_steps >= 0 (0 = off) '
       'within num_steps.')
  return problems


def _name_problems(config) -> list[str]:
  """Choices that must be one of a known list."""
  problems = []
  dataset = _dataset_problem(config.data.name)
  if dataset:
    problems.append(dataset)
  group_models = [(f'groups.{name}.model.name', model.name)
                  for name, _, model in pop.group_configs(config)
                  ] if config.groups and not _group_problems(config) else []
  for field, value, known in [
      ('model.name', config.model.name, tuple(models.BACKBONES)),
      *[(f, v, tuple(models.BACKBONES)) for f, v in group_models],
      ('partition', config.partition, ('skew', 'dirichlet')),
      ('target', config.target, losses.TARGET_RULES),
      ('strategy', config.strategy, pop.STRATEGIES),
      ('optimizer.name', config.optimizer.name, ('adam', 'sgd')),
      ('optimizer.schedule', config.optimizer.schedule, ('constant', 'cosine'))]:
    if value not in known:
      what = 'model' if field.endswith('model.name') else field
      problems.append(f'unknown {what} {value!r}: config.{field} must be one of '
                      f'{", ".join(known)}.')
  return problems


def check_device_split(config, num_devices: int) -> list[str]:
  """Problems with splitting batches over this host's `num_devices` devices.

  Today's step keeps the whole population on one device, so nothing is split
  yet. This checks the batches every client shares (public and evaluation),
  which a split of the data axis over devices divides; it is the one place
  that says how a config must fit the devices, for the sharding of the client
  axis to extend (client padding, per-client batch splits).
  """
  problems = []
  for field in ('public_batch_size', 'eval_batch_size'):
    value = config.data[field]
    if num_devices > 1 and value % num_devices:
      problems.append(f'data.{field}={value} is not divisible by the device count '
                      f'({num_devices}); use a multiple of {num_devices}.')
  return problems


def _group_problems(config) -> list[str]:
  try:
    pop.group_configs(config)
  except ValueError as e:
    return [str(e)]
  return []


def problems(config, num_devices: int | None = None) -> list[str]:
  """Every problem found without loading data, one line each (empty: the config is fine)."""
  found = _range_problems(config) + _group_problems(config) + _name_problems(config)
  if isinstance(config.num_clients, int) and config.num_clients >= 1:  # builders need a count
    try:
      topology.build(config)
    except ValueError as e:
      found.append(str(e))
  found += check_device_split(
      config, jax.local_device_count() if num_devices is None else num_devices)
  return found


def validate(config, num_devices: int | None = None) -> None:
  """Raises `ConfigError` listing every problem `problems` finds."""
  found = problems(config, num_devices)
  if found:
    raise ConfigError(found)


def validate_partition(part: partition_lib.Partition, config) -> None:
  """Every client needs private examples, or it has nothing to learn from."""
  sizes = np.array([len(idx) for idx in part.client_indices])
  empty = np.flatnonzero(sizes == 0).tolist()
  if empty:
    raise ConfigError([
        f'the {config.partition} partition leaves clients {empty} without private examples '
        f'({sizes.sum()} private examples for num_clients={config.num_clients}); use fewer '
        'clients, a lower public_fraction or a larger dirichlet_alpha.'])
