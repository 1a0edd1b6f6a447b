"""A non-finite loss, parameter or optimizer value after an update stops the run; no bad save."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import launch
import mhd_jax
from mhd_jax.population import optim
from mhd_jax.population import state as state_lib
from mhd_jax.run import safety
from mhd_jax.run import train
from tests.conftest import short_config


def _steps(workdir) -> list[int]:
  path = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(path) if n.isdigit()) if os.path.isdir(path) else []


def test_nan_learning_rate_on_the_only_step_exits_nonzero_without_a_checkpoint(tmp_path, capfd):
  # The loss of step 1 is that of the finite initial parameters: only the state check sees
  # that the update made them NaN, and step 1 is also the last step.
  workdir = str(tmp_path / 'run')
  status = launch.main(['launch.py', f'--workdir={workdir}', '--config.num_steps=1',
                        '--config.optimizer.learning_rate=nan'])
  err = capfd.readouterr().err
  assert status == 1, err[-2000:]
  assert 'non-finite loss or parameters at step 1' in err and 'no checkpoint was saved' in err
  assert _steps(workdir) == []


def _nan_updates_from_step(first_bad_step):
  """An optimizer whose updates turn NaN from `first_bad_step` on (losses stay finite there)."""
  real = optim.make_optimizer

  def make_optimizer(opt_config, num_steps):
    scale = optax.scale_by_schedule(
        lambda count: jnp.where(count + 1 >= first_bad_step, jnp.nan, 1.0))
    return optax.chain(real(opt_config, num_steps), scale)
  return make_optimizer


def test_checkpoint_every_step_keeps_only_finite_ones_and_the_last_step_is_checked(
    tmp_path, monkeypatch):
  monkeypatch.setattr(optim, 'make_optimizer', _nan_updates_from_step(3))
  workdir = str(tmp_path)
  config = short_config(num_steps=3, log_every=10, eval_every=10,
                        **{'checkpoint.every': 1, 'checkpoint.keep': 5})
  with pytest.raises(safety.NonFiniteLossError,
                     match=r'at step 3 in clients \[0, 1, 2, 3, 4\].*last finite checkpoint '
                           r'\(step 2\)'):
    train.train_and_evaluate(config, workdir)
  assert _steps(workdir) == [1, 2]
  for step in (1, 2):
    run = mhd_jax.load(workdir, step=step)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(run.state))


def test_state_check_names_the_clients_whose_state_broke():
  state = state_lib.TrainState(step=jnp.array(4), groups=(state_lib.Group(
      params={'w': jnp.array([[1.0], [jnp.inf], [2.0]])}, batch_stats={},
      opt_state={'m': jnp.array([[0.0], [0.0], [jnp.nan]])}),))
  np.testing.assert_array_equal(safety.finite_per_client(state), [True, False, False])
