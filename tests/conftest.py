"""Test-session settings and shared fixtures (a short finished run of the default config)."""

import atexit
import json
import os
import shutil
import tempfile
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from mhd_jax import models
from mhd_jax.run import train

# The partitionable threefry PRNG (JAX's default) compiles random initialisers
# several times more slowly on CPU (ResNet-18 init: 12 s vs 3.5 s). The tests
# never depend on particular random values, only on their agreement between
# code paths, so they use the cheaper-to-compile form.
jax.config.update('jax_threefry_partitionable', False)

# One compilation cache shared by the tests and the subprocesses they start (launch.py runs,
# the 8-device checks): many tests run the same programs (a run and its resumed twin, a run
# with and without averaging), and compiling is most of their time on CPU. It persists between
# sessions in $MHD_TEST_JIT_CACHE (default ~/.cache/mhd_jax/test_jit), so the next run of the
# suite compiles only the programs a change touched: JAX keys each entry by the program, the
# compile options and the jax/jaxlib versions, so a stale entry is never used. Set
# MHD_TEST_JIT_CACHE=fresh for a cold, throw-away cache (what a clean CI machine has). Measured
# on tests/test_step.py: 91 CPU-s cold, 32 warm. The cache is not trimmed (JAX's size limit needs
# the `filelock` package, and without it every read fails): delete the folder when it grows.
_CACHE = os.environ.get('MHD_TEST_JIT_CACHE') or os.path.join(
    os.path.expanduser('~'), '.cache', 'mhd_jax', 'test_jit')
if _CACHE == 'fresh':
  _CACHE = tempfile.mkdtemp(prefix='mhd_jax_test_cache_')
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
for _name, _value in (('jax_compilation_cache_dir', _CACHE),
                      ('jax_persistent_cache_min_compile_time_secs', 0),
                      ('jax_persistent_cache_min_entry_size_bytes', 0)):
  jax.config.update(_name, _value)
  os.environ[_name.upper()] = str(_value)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def short_config(**overrides):
  """The default config cut to seconds: 40 steps, logs every 10, evaluations and checkpoints
  every 20; `overrides` by dotted name."""
  config = default.get_config()
  config.num_steps = 40
  config.log_every = 10
  config.eval_every = 20
  config.checkpoint.every = 20
  config.update_from_flattened_dict(overrides)
  return config


@pytest.fixture(scope='session')
def short_run(tmp_path_factory):
  """(workdir, summary) of a finished 40-step run of the default config."""
  workdir = str(tmp_path_factory.mktemp('short_run'))
  summary = train.train_and_evaluate(short_config(), workdir)
  return workdir, summary


def read_records(workdir, timings=False):
  """metrics.jsonl's records; without the timing fields unless `timings`."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  if not timings:
    for r in records:
      for k in ('steps_per_sec', 'client_steps_per_sec', 'examples_per_sec'):
        r.pop(k, None)
  return records


class ConvBN(nn.Module):
  """The smallest backbone with batch statistics: 3x3 conv, BatchNorm, ReLU, 2x2 pool, Dense.

  Stands in for the ResNets wherever a test needs `batch_stats` (privacy,
  checkpoints, averaging) at a fraction of their compile time.
  """
  width: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(self.width, (3, 3), dtype=self.dtype)(x.astype(self.dtype))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
    x = nn.avg_pool(nn.relu(x), (2, 2), strides=(2, 2))
    x = nn.Dense(2 * self.width, dtype=self.dtype)(x.reshape(x.shape[0], -1))
    return nn.relu(x).astype(jnp.float32)


@pytest.fixture
def convbn(monkeypatch):
  """Registers `ConvBN` as `config.model.name = 'convbn'` for in-process runs."""
  monkeypatch.setitem(models.BACKBONES, 'convbn', ConvBN)
  return 'convbn'


def hand_accuracies(workdir):
  """([N, H] private, [N, H] shared) accuracy of a finished digits run, recomputed without
  `evaluate.py`: the final checkpoint's logits on the raw test split, argmax against the
  labels; private accuracy over the test examples of the client's class block."""
  from mhd_jax.outputs import explore
  from mhd_jax.data import partition  # pylint: disable=g-import-not-at-top
  from mhd_jax.data import digits  # pylint: disable=g-import-not-at-top
  run = explore.load(workdir)
  c = run.config
  _, (test_x, test_y) = digits._load_digits(  # pylint: disable=protected-access
      c.data.split_seed, c.data.test_fraction)
  blocks = partition.class_blocks(c.num_clients, 10)
  private, shared = [], []
  for i in range(c.num_clients):
    right_HxB = run.logits(i, test_x).argmax(-1) == test_y
    private.append(right_HxB[:, np.isin(test_y, blocks[i])].mean(-1))
    shared.append(right_HxB.mean(-1))
  return np.array(private), np.array(shared)
