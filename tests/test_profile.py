"""`config.profile`: a window of steps traced with jax.profiler into WORKDIR/profile/."""

import glob
import gzip
import json
import os

import pytest

from mhd_jax.run import config_check
from mhd_jax.run import train
from tests.conftest import short_config


def test_two_step_window_of_a_six_step_run_writes_a_trace(tmp_path):
  config = short_config(**{'num_steps': 6, 'log_every': 3, 'eval_every': 6,
                           'checkpoint.every': 0, 'profile.start_step': 3,
                           'profile.num_steps': 2})
  train.train_and_evaluate(config, str(tmp_path))
  profile = str(tmp_path / 'profile')
  xplanes = glob.glob(os.path.join(profile, 'plugins', 'profile', '*', '*.xplane.pb'))
  perfetto = glob.glob(os.path.join(profile, 'plugins', 'profile', '*', 'perfetto_trace.json.gz'))
  assert len(xplanes) == 1 and os.path.getsize(xplanes[0]) > 0, os.listdir(profile)
  assert len(perfetto) == 1
  with gzip.open(perfetto[0]) as f:
    events = json.load(f)['traceEvents']
  # Exactly the window's steps, annotated for the profile plugin's step view.
  assert sorted(int(e['args']['step_num']) for e in events if e.get('name') == 'train') == [3, 4]


@pytest.mark.parametrize('start,count,ok', [
    (0, 0, True), (5, 2, True), (6, 1, True), (6, 2, False), (7, 1, False), (0, 2, False),
    (-1, 2, False), (1, -1, False)])
def test_a_window_outside_the_run_is_one_line(start, count, ok):
  config = short_config(**{'num_steps': 6, 'profile.start_step': start,
                           'profile.num_steps': count})
  found = [p for p in config_check.problems(config) if 'profile' in p]
  assert (found == []) == ok
  if not ok:  # a negative field is refused by the field table, a window past the run by its range
    assert len(found) == 1 and ('outside the run (steps 1 to 6)' in found[0]
                                or 'must be >= 0' in found[0]), found


def test_a_bad_window_is_refused_before_anything_is_written(tmp_path):
  config = short_config(**{'num_steps': 6, 'profile.start_step': 6, 'profile.num_steps': 3})
  with pytest.raises(config_check.ConfigError, match='profile window of 3 steps from step 6'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')
