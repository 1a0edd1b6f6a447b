"""The paper's studies as commands: `python -m mhd_jax.studies NAME --workdir DIR`.

Each study runs a grid of config variants over several seeds and writes
`DIR/NAME.json` (the numbers behind the table), `DIR/NAME.md` (a table,
mean ± std over seeds) and `DIR/NAME.png` (a plot). Runs go to
`DIR/NAME/<variant>/seed<k>/`; every run's config is checked before any
trains, runs train on `--jobs` worker processes (`runs`), and a
finished run is reused, so a stopped study restarts where it was. Every run
evaluates 30 times (eval_every = num_steps / 30) for accuracy over steps.
`--config` picks the base config (default: configs/default.py), so the same
study scales to the ImageNet configs; `--config.FIELD=value` overrides it;
`--quick` is the tests' few-step form. The studies themselves live in
`claims`, `heads`, `recipes`, `network`, `wire` and `targets` (`STUDIES`).
"""

import inspect
import json
import os
import re
import sys
from typing import Callable

from absl import flags
from absl import logging
from ml_collections import config_flags

from mhd_jax.run import config_check
from mhd_jax.studies import claims
from mhd_jax.studies import heads
from mhd_jax.studies import network
from mhd_jax.studies import recipes
from mhd_jax.studies import runs as study_runs
from mhd_jax.studies import targets
from mhd_jax.studies import wire

STUDIES: dict[str, Callable] = {'heterogeneity': claims.heterogeneity, 'heads': claims.heads,
                                'topology': claims.topology, 'models': claims.models,
                                'methods': claims.methods, 'hops': heads.hops,
                                'efficiency': heads.efficiency, 'recipes': recipes.recipes,
                                'dynamics': network.dynamics,
                                'communication': wire.communication, 'privacy': wire.privacy,
                                'targets': targets.targets, 'target_hops': targets.target_hops}
# Seeds per study when --seeds is not given: sized so the main tables fit in 40 min
# on 2 cores (README, "When do auxiliary heads help?").
DEFAULT_SEEDS = {'hops': 8, 'efficiency': 4, 'recipes': 4}
QUICK = {'num_steps': 30, 'log_every': 10}  # --quick: the tests' form

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Base config.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/studies', 'Where results are written.')
_SEEDS = flags.DEFINE_integer('seeds', None, 'Number of seeds (0..seeds-1) per variant '
                              f'(default: {DEFAULT_SEEDS}, else 3).')
_JOBS = flags.DEFINE_integer('jobs', 1, 'Worker processes training runs at once (one core each).')
_QUICK = flags.DEFINE_bool('quick', False, f'A few steps ({QUICK}) and a small grid.')
_HEADS = flags.DEFINE_list('heads', None, 'hops / efficiency: head counts, e.g. 1,2,4.')
_TOPOLOGIES = flags.DEFINE_list('topologies', ['chain'], 'recipes: graphs, e.g. chain,complete.')
_RULES = flags.DEFINE_list('rules', None, 'targets / target_hops: variants of targets.RULES, '
                           'e.g. most_confident,class_relative^4.')


class UsageError(ValueError):
  """A bad study argument: one line, exit status 2, before any training."""


def study_base(base, quick: bool):
  """The base config of every run: eval_every = num_steps / 30 (accuracy over steps)."""
  base = base.copy_and_resolve_references()
  with base.unlocked():
    if quick:
      base.update_from_flattened_dict(QUICK)
    base.eval_every = max(1, base.num_steps // 30)
  return base


def run_dirname(variant: str) -> str:
  """A variant's directory name: 'chain: nu_main=0.1, include_self' ->
  'chain_nu_main=0.1_include_self'."""
  return re.sub(r'_+', '_', re.sub(r'[^A-Za-z0-9=.+-]', '_', variant)).strip('_')


def plan(name: str, base, opts: study_runs.Options, workdir: str):
  """(runs by variant, analyse) of study `name`; every run's config checked, nothing trained."""
  if name not in STUDIES:
    raise UsageError(f'unknown study {name!r}; NAME is one of {", ".join(STUDIES)}.')
  if not opts.seeds:
    raise UsageError('--seeds must be >= 1.')
  variants, analyse = STUDIES[name](base, opts)
  runs = {v: study_runs.variant_runs(base, o, opts.seeds, os.path.join(workdir, run_dirname(v)))
          for v, o in variants.items()}
  try:
    study_runs.check([r for rs in runs.values() for r in rs])
  except config_check.ConfigError as e:
    raise UsageError(e.problems[0]) from None
  return runs, analyse


def run_study(name: str, base, opts: study_runs.Options, workdir: str, jobs: int = 1) -> str:
  """Plans, trains (reusing finished runs) and writes DIR/NAME.{json,md,png}; returns the md."""
  base = study_base(base, opts.quick)
  runs, analyse = plan(name, base, opts, os.path.join(workdir, name))
  all_runs = [r for rs in runs.values() for r in rs]
  summaries = study_runs.execute(all_runs, jobs)
  by_variant, i = {}, 0
  for v, rs in runs.items():
    by_variant[v], i = summaries[i:i + len(rs)], i + len(rs)
  results, body, draw = analyse(by_variant, runs)
  doc = inspect.cleandoc(STUDIES[name].__doc__)
  md = f'# {name}\n\n{doc}\n\n{body}\n'
  stem = os.path.join(workdir, name)
  with open(stem + '.json', 'w') as f:
    json.dump(results, f, indent=1)
  with open(stem + '.md', 'w') as f:
    f.write(md)
  draw(stem + '.png')
  return md


def main(argv):
  try:
    if len(argv) != 2:
      raise UsageError(f'usage: python -m mhd_jax.studies NAME --workdir DIR; '
                       f'NAME is one of {", ".join(STUDIES)}.')
    name = argv[1]
    if _JOBS.value < 1:
      raise UsageError(f'--jobs must be >= 1, got {_JOBS.value}.')
    seeds = _SEEDS.value if _SEEDS.value is not None else DEFAULT_SEEDS.get(name, 3)
    try:
      heads_ = tuple(int(h) for h in _HEADS.value) if _HEADS.value else None
    except ValueError:
      raise UsageError(f'--heads must be integers, got {",".join(_HEADS.value)}.') from None
    unknown = [r for r in _RULES.value or () if r not in targets.RULES]
    if unknown:
      raise UsageError(f'unknown --rules {",".join(unknown)}; each is one of '
                       f'{", ".join(targets.RULES)}.')
    opts = study_runs.Options(tuple(range(max(seeds, 0))), _QUICK.value, heads_,
                              tuple(_TOPOLOGIES.value), _RULES.value and tuple(_RULES.value))
    logging.set_verbosity(logging.WARNING)
    base = study_base(_CONFIG.value, opts.quick)
    plan(name, base, opts, os.path.join(_WORKDIR.value, name))  # refuse before any training
  except UsageError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  os.makedirs(_WORKDIR.value, exist_ok=True)
  print(run_study(name, _CONFIG.value, opts, _WORKDIR.value, _JOBS.value))

