"""Checks a config before anything heavy runs; one message per problem.

`validate(config)` runs the checks that need no data (names, ranges, the
graph, device layout); `data_check.validate_data` runs once the dataset and its
partition exist, before any model is compiled. Both raise `ConfigError`, whose message
has one line per problem; `launch.py` prints those lines and exits with
status 2.
"""

import jax
import numpy as np

from mhd_jax import config_base
from mhd_jax import data as data_lib
from mhd_jax import models
from mhd_jax.algorithm import losses
from mhd_jax.data import digits as digits_lib
from mhd_jax.data import partition as partition_lib
from mhd_jax.network import graph_schedule
from mhd_jax.network import neighbours
from mhd_jax.network import participation
from mhd_jax.network import topology
from mhd_jax.placement import clients
from mhd_jax.population import groups as groups_lib
from mhd_jax.population import optim
from mhd_jax.run import data_check
from mhd_jax.run import fields
from mhd_jax.wire import compression
from mhd_jax.wire import privacy


ConfigError = config_base.ConfigError  # raised here and by the workdir checks


# The model fields a group may override: {name: ((is_type, type name), range check, meaning)}.
_MODEL_FIELDS = {k[len('model.'):]: v for k, v in fields.FIELDS.items()
                 if k.startswith('model.')}


def _field_problems(config) -> tuple[list[str], list[str]]:
  """(unknown, missing or mistyped fields; values out of range), one line each."""
  flat = config_base.dotted(config.to_dict())
  shape = [f'unknown field {k!r}: it is not a config field (see configs/default.py).'
           for k in flat if k not in fields.FIELDS and not k.startswith('groups.')]
  ranges = []
  for field, ((is_type, type_name), ok, meaning) in fields.FIELDS.items():
    if field not in flat:
      shape.append(f'config.{field} is missing (see configs/default.py).')
    elif not is_type(flat[field]):
      shape.append(f'config.{field} must be {type_name}, got {flat[field]!r}.')
    elif ok is not None and not ok(flat[field]):
      ranges.append(f'config.{field} must be {meaning}, got {flat[field]!r}.')
  return shape, ranges


# (field, the mode field, the mode that uses it, the value that means unused)
_DYNAMICS_MODES = (
    ('dynamics.failure_p', 'dynamics.schedule', 'edge_failure', 0.0),
    ('dynamics.cycle_graphs', 'dynamics.schedule', 'cycle', ''),
    ('dynamics.availability', 'dynamics.participation', 'bernoulli', 1.0),
    ('dynamics.trace_file', 'dynamics.participation', 'trace', ''),
    ('dynamics.straggler_fraction', 'dynamics.participation', 'stragglers', 0.0),
    ('dynamics.straggler_every', 'dynamics.participation', 'stragglers', 1),
)


def warnings(config) -> list[str]:
  """Settings that run but are probably not meant, one line each (printed, not refused)."""
  flat = config_base.dotted(config.to_dict())
  out = [f'config.{k} is {v!r}: where the run uses it, its parameters turn non-finite and it '
         'stops (exit 1).' for k, v in flat.items() if isinstance(v, float) and not np.isfinite(v)]
  if fields.is_num(flat.get('optimizer.learning_rate')) and flat['optimizer.learning_rate'] == 0:
    out.append('config.optimizer.learning_rate is 0: nothing will be learned.')
  nu = [flat.get(k) for k in ('nu_main', 'nu_aux', 'nu_emb')]
  if all(fields.is_num(v) and v == 0 for v in nu) and flat.get('topology') != 'none':
    out.append('nu_main = nu_aux = nu_emb = 0: no distillation, so the topology has no effect.')
  for field, mode, needed, unused in _DYNAMICS_MODES:  # set, but its mode is another
    if flat.get(field, unused) != unused and flat.get(mode) != needed:
      out.append(f'config.{field}={flat[field]!r} has no effect unless config.{mode}='
                 f'{needed!r} (it is {flat.get(mode)!r}).')
  if flat.get('target_power', 1.0) != 1 and flat.get('target') not in losses.SCORES:
    out.append(f'config.target_power={flat["target_power"]!r} has no effect unless config.target '
               f'is a score rule ({", ".join(losses.SCORES)}; it is {flat.get("target")!r}).')
  is_int = fields.is_int
  if is_int(flat.get('optimizer.warmup_steps')) and is_int(flat.get('num_steps')) and (
      flat['optimizer.warmup_steps'] >= flat['num_steps']):
    out.append(f'optimizer.warmup_steps={flat["optimizer.warmup_steps"]} is not below '
               f'num_steps={flat["num_steps"]}: the learning rate never reaches its value.')
  return out


def _range_problems(config) -> list[str]:
  """Sizes that depend on several fields."""
  problems = []
  if config.data.name == 'digits' and fields.is_num(config.data.test_fraction):
    num_test = int(round(config.data.test_fraction * digits_lib.NUM_EXAMPLES))
    if not 1 <= num_test <= digits_lib.NUM_EXAMPLES - 1:
      problems.append(f'data.test_fraction={config.data.test_fraction} leaves {num_test} of '
                      f'{digits_lib.NUM_EXAMPLES} digits for evaluation; both splits need '
                      'examples.')
  if config.data.name == 'mnist1d':
    problems += data_check.mnist1d_problems(config, _model_names(config))
  if config.public_fraction == 0:
    problems += data_check.no_public_problems(config)
  profile = config.get('profile') or {}
  first, count = profile.get('start_step', 0), profile.get('num_steps', 0)
  is_int = fields.is_int
  if is_int(first) and is_int(count) and is_int(config.num_steps) and count > 0 and not (
      1 <= first and first + count - 1 <= config.num_steps):
    problems.append(f'profile window of {count} steps from step {first} lies outside the run '
                    f'(steps 1 to {config.num_steps}); set profile.start_step >= 1 and '
                    'profile.num_steps >= 0 (0 = off) within num_steps.')
  if config.population.resident > 0 and config.distributed.initialize:
    problems.append(f'population.resident={config.population.resident} streams the population '
                    "through one process's devices; on several hosts it stays resident: use "
                    'population.resident=0.')
  staleness = config.dynamics.staleness
  if is_int(staleness) and is_int(config.num_steps) and staleness >= config.num_steps:
    problems.append(f'dynamics.staleness={staleness} must be below num_steps={config.num_steps}: '
                    'every target of the run would come from the initial models.')
  return problems


def _model_names(config) -> list[tuple[str, str]]:
  """(field, model name) of config.model and of each group (once the groups check out)."""
  groups = [(f'groups.{name}.model.name', model.name)
            for name, _, model in groups_lib.group_configs(config)
            ] if config.groups and not groups_lib.problems(config, _MODEL_FIELDS) else []
  return [('model.name', config.model.name)] + groups


def _name_problems(config) -> list[str]:
  """Choices that must be one of a known list."""
  problems = []
  dataset = data_check.dataset_problem(config.data.name, config.data.data_dir)
  if dataset:
    problems.append(dataset)
  for field, value, known in [
      *[(f, v, tuple(models.BACKBONES)) for f, v in _model_names(config)],
      ('partition', config.partition, partition_lib.PARTITIONS),
      ('class_layout', config.get('class_layout', 'interleaved'), partition_lib.LAYOUTS),
      ('target', config.target, losses.TARGET_RULES),
      ('strategy', config.strategy, clients.STRATEGIES),
      ('optimizer.name', config.optimizer.name, optim.OPTIMIZERS),
      ('optimizer.schedule', config.optimizer.schedule, optim.SCHEDULES),
      ('model.dtype', config.model.dtype, models.DTYPES),
      ('data.augment', config.data.augment, data_lib.AUGMENTS),
      ('dynamics.schedule', config.dynamics.schedule, graph_schedule.SCHEDULES),
      ('exchange', config.get('exchange', 'auto'), neighbours.EXCHANGES),
      ('dynamics.participation', config.dynamics.participation, participation.MODES)]:
    if value not in known:
      what = 'model' if field.endswith('model.name') else field.removeprefix('dynamics.')
      problems.append(f'unknown {what} {value!r}: config.{field} must be one of '
                      f'{", ".join(known)}.')
  return problems


def _network_problems(config) -> list[str]:
  """The graph, the schedule's graphs and the availability trace (host only, no compile)."""
  found = []
  try:
    topology.build(config)
  except ValueError as e:
    found.append(str(e))
  d = config.dynamics
  if d.schedule == 'cycle':
    try:
      graph_schedule.base_graphs(config)
    except ValueError as e:
      found.append(str(e))
  if d.participation == 'trace':
    try:
      participation.load_trace(d.trace_file, config.num_clients, config.num_steps)
    except ValueError as e:
      found.append(str(e))
  return found


def check_device_split(config, num_devices: int) -> list[str]:
  """Problems with splitting batches over the mesh's `num_devices` devices on this host.

  The client axis is sharded (clients padded to a multiple of the devices);
  this checks the batches every client shares (public and evaluation), which
  a split of the data axis over devices divides; it is the one place that says
  how a config must fit the devices.
  """
  problems = []
  for field in ('public_batch_size', 'eval_batch_size'):
    value = config.data[field]
    if num_devices > 1 and value % num_devices:
      problems.append(f'data.{field}={value} is not divisible by the device count '
                      f'({num_devices}); use a multiple of {num_devices}.')
  return problems


def problems(config, num_devices: int | None = None) -> list[str]:
  """Every problem found without loading data, one line each (empty: the config is fine)."""
  shape, found = _field_problems(config)
  if shape:
    return shape + found  # the checks below need every field present and well typed
  derived = found == []  # checks of several fields, made once each field is in range
  found += ((_range_problems(config) if derived else [])
            + groups_lib.problems(config, _MODEL_FIELDS) + _name_problems(config))
  if derived:
    found += _network_problems(config)
    found += compression.config_problems(config) + privacy.config_problems(config)
  if config.num_devices > jax.device_count():
    found.append(f'num_devices={config.num_devices} but {jax.device_count()} device(s) are '
                 'available; use 0 (all) or at most that many.')
  if num_devices is None:  # the mesh's: num_devices of them when set, else this host's
    num_devices = jax.local_device_count()
    if 0 < config.num_devices <= num_devices:
      num_devices = config.num_devices
  return found + check_device_split(config, num_devices)


def validate(config, num_devices: int | None = None) -> None:
  """Raises `ConfigError` listing every problem `problems` finds."""
  found = problems(config, num_devices)
  if found:
    raise ConfigError(found)
