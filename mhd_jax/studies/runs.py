"""The runs of a study: configs checked up front, trained in worker processes, reused.

Every run trains in a spawned worker process (never forked: JAX holds
threads) whose XLA is limited to one thread, whatever `jobs` is, so a study
gives the same numbers with `--jobs 1` and `--jobs K`: the runs are
deterministic on the CPU and only the scheduling changes. A run whose
workdir already holds its final outputs (`workdir.finished`) of the same config
is reused, so a stopped study restarts where it was.
"""

import concurrent.futures
import multiprocessing
import os
from typing import NamedTuple, Sequence

from mhd_jax import data as data_lib
from mhd_jax.outputs import summary as summary_lib
from mhd_jax.outputs import workdir as wd
from mhd_jax.run import config_check
from mhd_jax.run import data_check

# One XLA thread per worker: K workers use K cores, and results do not depend on K.
WORKER_XLA_FLAGS = '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'


class Options(NamedTuple):
  """What a study may vary besides the base config."""
  seeds: tuple[int, ...]
  quick: bool = False        # the tests' form: a few steps and a small grid
  heads: tuple[int, ...] | None = None  # head counts (hops, efficiency); None = the study's own
  topologies: tuple[str, ...] = ('chain',)  # recipes
  rules: tuple[str, ...] | None = None  # targets, target_hops: names in targets.RULES


class Run(NamedTuple):
  config: object  # ml_collections.ConfigDict
  workdir: str


def configure(base, overrides: dict, seed: int):
  """A copy of `base` with the flattened `overrides` ('model.width': 64) and the seed."""
  config = base.copy_and_resolve_references()
  with config.unlocked():
    config.update_from_flattened_dict({**overrides, 'seed': seed})
  return config


def variant_runs(base, overrides: dict, seeds, workdir: str) -> list[Run]:
  """One run per seed, in `workdir/seed<k>`."""
  return [Run(configure(base, overrides, s), os.path.join(workdir, f'seed{s}')) for s in seeds]


def check(runs: Sequence[Run]) -> None:
  """Raises `config_check.ConfigError` naming the first run whose config is refused.

  Every check a run makes before it trains, the dataset's included (its
  partition against the batches, the models against its images), so a study
  stops before any run trains.
  """
  for run in runs:
    try:
      config_check.validate(run.config)
      data_check.validate_data(run.config, data_lib.get_data(run.config))
      wd.check_workdir(run.workdir, run.config, overwrite=False)
    except config_check.ConfigError as e:
      raise config_check.ConfigError([f'{run.workdir}: {p}' for p in e.problems]) from None


def finished(run: Run) -> bool:
  """The run's workdir holds its final outputs (and `check` accepted its config there)."""
  return wd.finished(run.workdir)


def _train(run: Run) -> float:
  """Worker: trains one run; returns its wall seconds."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from mhd_jax.run import train  # pylint: disable=g-import-not-at-top  # jax after XLA_FLAGS
  logging.set_verbosity(logging.WARNING)
  return train.train_and_evaluate(run.config, run.workdir)['wall_seconds']


def execute(runs: Sequence[Run], jobs: int = 1, progress=print) -> list[summary_lib.Summary]:
  """Trains the unfinished runs on `jobs` worker processes; returns every run's summary."""
  todo = [r for r in runs if not finished(r)]
  if todo:
    flags = os.environ.get('XLA_FLAGS', '')
    os.environ['XLA_FLAGS'] = f'{flags} {WORKER_XLA_FLAGS}'.strip()  # inherited by the workers
    try:
      with concurrent.futures.ProcessPoolExecutor(
          max_workers=min(jobs, len(todo)),
          mp_context=multiprocessing.get_context('spawn')) as pool:
        futures = {pool.submit(_train, r): r for r in todo}
        for n, future in enumerate(concurrent.futures.as_completed(futures), 1):
          progress(f'[{n}/{len(todo)}] {futures[future].workdir}: {future.result():.0f} s')
    finally:
      os.environ['XLA_FLAGS'] = flags
  return [summary_lib.read_summary(r.workdir) for r in runs]
