"""The population's groups (architectures) from a config."""

from mhd_jax import models
from mhd_jax import optim
from mhd_jax import state as state_lib


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
