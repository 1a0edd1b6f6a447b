"""What every layer shares about configs: the error a bad config or workdir raises, and a
config's nested dict as flat dotted names.

Below `config_check` (which re-exports `ConfigError`), `checkpoint`, `workdir`
and `writers`: none of those needs the validator, which imports the models and
the data.
"""

from typing import Sequence


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
