"""The embedded MNIST-1D (Greydanus & Kobak, ICML 2024): 10 classes of 1-D signals, 40 samples each.

Generated offline by the `mnist1d` package (`make_dataset`; never its `get_dataset`,
which downloads first) with the published arguments (`PUBLISHED_ARGS`) but
`data.num_samples`. An example is served as [40, 1]: 40 positions, one channel. The
last `data.num_test` examples are the test set, the others the training set, as the
generator splits them; 5,000 and 1,000 give the published dataset (mnist1d_data.pkl,
equal to it up to float32 rounding) and split (4,000 / 1,000).

Generating 70,000 examples took 55 s on one busy core (reading them back: 0.02 s), so
the examples are cached in `$MHD_DATA_CACHE` (else `~/.cache/mhd_jax/`), one file per
generator arguments and package version, written atomically (a temporary file, then
`os.replace`).
"""

import contextlib
import hashlib
import importlib.metadata
import json
import os
import random
from typing import Sequence

from absl import logging
import numpy as np

from mhd_jax.data import contract

NUM_CLASSES = 10
LENGTH = 40  # final_seq_length: samples per signal

# `mnist1d.data.get_dataset_args()` of mnist1d 0.0.2.post1 (without its download url): the
# published dataset's arguments, but `train_split`: 1 keeps every example in the generator's
# training part, and `mnist1d` below splits them as the generator would (the last ones test).
PUBLISHED_ARGS = {'num_samples': 5000, 'train_split': 1.0, 'template_len': 12,
                  'padding': [36, 60], 'scale_coeff': 0.4, 'max_translation': 48,
                  'corr_noise_scale': 0.25, 'iid_noise_scale': 2e-2, 'shear_scale': 0.75,
                  'shuffle_seq': False, 'final_seq_length': LENGTH, 'seed': 42}


def size_problems(num_samples: int, num_test: int) -> list[str]:
  """What is wrong with `data.num_samples` and `data.num_test` together, one line each."""
  if num_samples % NUM_CLASSES or num_samples < 2 * NUM_CLASSES:
    return [f'data.num_samples={num_samples} must be a multiple of {NUM_CLASSES} and at least '
            f'{2 * NUM_CLASSES}: mnist1d makes num_samples // {NUM_CLASSES} examples per class.']
  if not 1 <= num_test < num_samples:
    return [f'data.num_test={num_test} must be in [1, data.num_samples) = [1, {num_samples}): '
            'both the training and the test set need examples.']
  return []


def cache_path(args: dict) -> str:
  """Where the examples of generator `args` are cached: a name that hashes every argument."""
  key = json.dumps({**args, 'mnist1d': importlib.metadata.version('mnist1d')}, sort_keys=True)
  folder = os.environ.get('MHD_DATA_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'mhd_jax')
  return os.path.join(folder, f'mnist1d_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz')


def _generate(args: dict) -> tuple[np.ndarray, np.ndarray]:
  """(x_Mx40x1 float32, y_M int32) from `make_dataset`, the global RNGs left as they were.

  `make_dataset` seeds NumPy's and Python's global generators (`mnist1d.utils.set_seed`);
  the run's draws use their own generators, but a caller's global state must not change.
  """
  from mnist1d import data as mnist1d_data  # pylint: disable=g-import-not-at-top  # 1.5 s import
  from mnist1d import utils  # pylint: disable=g-import-not-at-top
  np_state, py_state = np.random.get_state(), random.getstate()
  try:
    made = mnist1d_data.make_dataset(utils.ObjectView(dict(args)))
  finally:
    np.random.set_state(np_state)
    random.setstate(py_state)
  return made['x'].astype(np.float32)[..., None], made['y'].astype(np.int32)


def load(num_samples: int) -> tuple[np.ndarray, np.ndarray]:
  """(x_Mx40x1, y_M): the `num_samples` examples of the published generator, cached.

  A cache that cannot be read is generated again; one that cannot be written costs a
  warning and the next run's generation.
  """
  args = {**PUBLISHED_ARGS, 'num_samples': num_samples}
  path = cache_path(args)
  try:
    with np.load(path) as cached:
      return cached['x'], cached['y']
  except FileNotFoundError:
    pass
  except Exception as e:  # pylint: disable=broad-except  # a damaged file: make it again
    logging.warning('mnist1d cache %s unreadable (%s); generating it again.', path, e)
  logging.info('generating MNIST-1D (%d examples; cached in %s).', num_samples, path)
  x, y = _generate(args)
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(tmp, 'wb') as f:
      np.savez(f, x=x, y=y)
    os.replace(tmp, path)  # readers see the whole file or none
  except OSError as e:
    logging.warning('mnist1d cache %s not written (%s).', path, e)
    with contextlib.suppress(OSError):
      os.remove(tmp)
  return x, y


def mnist1d(config, client_ids: Sequence[int] | None = None) -> contract.Data:
  """The embedded MNIST-1D: `data.num_samples` examples, the last `data.num_test` for testing."""
  x, y = load(config.data.num_samples)
  train = len(y) - config.data.num_test
  return contract.from_arrays(config, client_ids, (x[:train], y[:train]),
                              (x[train:], y[train:]), NUM_CLASSES)
