"""The population's groups (architectures) from a config, and their checks: `config.groups`, and
each model against the images (`shape_problems`)."""

import jax
import jax.numpy as jnp
import numpy as np

from mhd_jax import models
from mhd_jax.population import optim
from mhd_jax.population import state as state_lib


# Keys of one `groups.NAME` entry (`group_configs` reads them; `problems` checks them).
GROUP_KEYS = ('num_clients', 'model')


def group_configs(config) -> list[tuple[str, int, object]]:
  """(name, num_clients, model config) of each group, in client order.

  `config.groups` empty: one group of `config.num_clients` clients of
  `config.model`. Otherwise each entry `config.groups.NAME` has `num_clients`
  and `model`, whose fields override `config.model`'s; the sizes must add up
  to `config.num_clients`.
  """
  if not config.get('groups'):
    return [('clients', config.num_clients, config.model)]
  out = []
  for name, group in config.groups.items():
    model = config.model.copy_and_resolve_references()
    with model.unlocked():
      model.update(group.get('model', {}))
    out.append((name, group.num_clients, model))
  total = sum(n for _, n, _ in out)
  if total != config.num_clients:
    raise ValueError(f'groups hold {total} clients in all but num_clients is '
                     f'{config.num_clients}.')
  return out


def group_sizes(config) -> tuple[int, ...]:
  """Clients per group, as `make_specs` will build them (known before the data is)."""
  return tuple(n for _, n, _ in group_configs(config))


def make_specs(config, num_classes: int) -> tuple[state_lib.GroupSpec, ...]:
  """The population's groups from a config (see `group_configs`)."""
  tx = optim.make_optimizer(config.optimizer, config.num_steps)
  return tuple(state_lib.GroupSpec(models.make_model(model, config.num_heads, num_classes), tx, n)
               for _, n, model in group_configs(config))


def problems(config, model_fields: dict) -> list[str]:
  """Group entries with unknown keys or model fields, bad sizes, or sizes not adding up.

  `model_fields` maps each model field a group may override to `fields.FIELDS`'s
  ((is_type, type name), range check, meaning).
  """
  problems = []
  for name, group in (config.get('groups') or {}).items():
    if not hasattr(group, 'keys'):
      problems.append(f'groups.{name} must be a dict with {" and ".join(GROUP_KEYS)}.')
      continue
    for key in group.keys():
      if key not in GROUP_KEYS:
        problems.append(f'unknown key groups.{name}.{key}: a group holds only '
                        f'{", ".join(GROUP_KEYS)}.')
    size = group.get('num_clients')
    if not (isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size >= 1):
      problems.append(f'groups.{name}.num_clients must be an integer >= 1, '
                      f'got {group.get("num_clients")!r}.')
    model = group.get('model', {})
    for key, value in (model.items() if hasattr(model, 'items') else []):
      (is_type, type_name), ok, meaning = model_fields.get(key, ((None, ''), None, ''))
      if is_type is None:
        problems.append(f'unknown field groups.{name}.model.{key}: a group overrides only '
                        f'model fields ({", ".join(config.model.keys())}).')
      elif not is_type(value) or (ok is not None and not ok(value)):
        problems.append(f'groups.{name}.model.{key} must be {type_name} {meaning}, '
                        f'got {value!r}.'.replace('  ', ' '))
  if problems:
    return problems
  try:
    group_configs(config)
  except ValueError as e:
    return [str(e)]
  return []


def shape_problems(config, num_classes: int, image_shape) -> list[str]:
  """One line per group whose model leaves nothing of an input of `image_shape`.

  A backbone that pools the image away (a CNN deeper than the image allows)
  has a zero-size parameter or embedding: it would train a dense layer on no
  inputs and fail when saved. Checked on the shapes alone (`jax.eval_shape` of
  init and apply on one example): nothing is computed or compiled.
  """
  x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  shape = 'x'.join(str(d) for d in image_shape)
  found = []
  for (name, _, model), spec in zip(group_configs(config), make_specs(config, num_classes)):
    field = f'groups.{name}.model' if config.get('groups') else 'model'
    deep = model.name in ('mlp', 'cnn')  # the backbones with a model.depth
    what = f'config.{field} ({model.name}' + (f', depth {model.depth})' if deep else ')')
    init = lambda x, m=spec.model: m.init_with_output(jax.random.PRNGKey(0), x, train=False)
    try:
      (_, inter), variables = jax.eval_shape(init, x)
    except Exception as e:  # pylint: disable=broad-except  # e.g. a kernel larger than the image
      found.append(f'{what} cannot run on {shape} images: {type(e).__name__}: '
                   f'{" ".join(str(e).split())[:200]}')
      continue
    empty = [(jax.tree_util.keystr(path, simple=True, separator='/'), leaf.shape)
             for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]
             if leaf.size == 0]
    if inter['embedding'].size == 0:
      empty.append(('the embedding', inter['embedding'].shape))
    if empty:
      found.append(f'{what} leaves nothing of the {shape} images: {empty[0][0]} has shape '
                   f'{empty[0][1]}; use ' + ('a smaller model.depth or ' if deep else '')
                   + 'larger images.')
  return found
