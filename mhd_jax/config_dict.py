"""A config's nested dict as flat dotted names, for every layer that compares or logs configs.

Below `config_check`, `workdir` and `writers`, which all read configs this way.
"""


def dotted(tree: dict, prefix: str = '') -> dict:
  """A nested dict (a config's `to_dict()`) as {'section.field': value}."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(dotted(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out
