"""A workdir written before the sub-packages (commit a90be62, tests/data/README.md) loads with
`mhd_jax.load` and resumes to the very state the old code reached."""

import os
import shutil

import jax
import numpy as np

import launch
import mhd_jax
from mhd_jax.outputs import summary as summary_lib
from tests.conftest import ROOT

OLD = os.path.join(ROOT, 'tests', 'data', 'a90be62_run')
# The overrides it was made with (on configs/default.py).
FLAGS = ['--config.num_clients=3', '--config.model.width=16', '--config.model.depth=1',
         '--config.num_steps=4', '--config.log_every=2', '--config.eval_every=2',
         '--config.checkpoint.every=2']
# Room for an argmax at a near-tie on another CPU: one of the 449 test images (a shared accuracy).
ONE_EXAMPLE = 1 / 449


def _copy(tmp_path) -> str:
  workdir = str(tmp_path / 'run')
  shutil.copytree(OLD, workdir)
  return workdir


def test_the_checkpoints_name_no_module_of_mhd_jax():
  """What the move could have broken: a path such as `mhd_jax.state.TrainState` in the files."""
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(OLD, 'checkpoints'))
           for f in fs]
  assert len(files) > 10
  for path in files:
    with open(path, 'rb') as f:
      assert b'mhd_jax' not in f.read(), path


def test_an_old_workdir_loads_and_evaluates_as_the_old_code_did(tmp_path):
  run = mhd_jax.load(_copy(tmp_path))
  assert run.step == 4 and int(run.state.step) == 4
  old = summary_lib.read_summary(OLD)
  acc = run.accuracies()
  np.testing.assert_allclose(acc.private_NxH, [c.private_acc for c in old.clients],
                             atol=ONE_EXAMPLE)
  np.testing.assert_allclose(acc.shared_NxH, [c.shared_acc for c in old.clients],
                             atol=ONE_EXAMPLE)
  assert mhd_jax.load(run.workdir, step=2).step == 2


def test_an_old_workdir_resumes_to_the_state_the_old_code_reached(tmp_path):
  workdir = _copy(tmp_path)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '4'))  # as if it stopped after step 2
  assert launch.main(['launch.py', '--config=configs/default.py', f'--workdir={workdir}',
                      *FLAGS]) == 0
  new, old = mhd_jax.load(workdir), mhd_jax.load(_copy(tmp_path / 'old'))
  assert new.step == 4
  for a, b in zip(jax.tree.leaves(new.state.groups), jax.tree.leaves(old.state.groups)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new.summary().mean_shared_acc, old.summary().mean_shared_acc,
                             atol=ONE_EXAMPLE)
