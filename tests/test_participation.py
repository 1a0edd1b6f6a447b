"""Tests for mhd_jax/network/participation.py: who takes part in each step, from (seed, step), a trace
file or a straggler cadence, with one compile for every step."""

import jax
import numpy as np
import pytest

from configs import default
from mhd_jax.network import participation as part_lib
from mhd_jax.run import config_check
from tests.test_schedules import assert_traced_step_matches_eager_and_compiles_once

_jitted = jax.jit(part_lib.active_at)


def _config(num_clients=6, num_steps=20, **dynamics):
  c = default.get_config()
  c.num_clients, c.num_steps = num_clients, num_steps
  c.dynamics.update(dynamics)
  return c


def _active(p, steps):
  """[steps, N] bool."""
  return np.stack([np.asarray(_jitted(p, t)) for t in steps])


def _write_trace(tmp_path, trace, name='trace.csv'):
  path = tmp_path / name
  if name.endswith('.npy'):
    np.save(path, trace)
  else:
    path.write_text('\n'.join(','.join(str(v) for v in row) for row in trace) + '\n')
  return str(path)


def test_all_is_every_client_every_step():
  assert _active(part_lib.build(_config()), range(1, 5)).all()


# ------------------------------------------------------------------------ bernoulli


def test_bernoulli_rate_is_p_and_draws_are_independent():
  # 10 clients x 2000 steps = 20000 draws: the observed rate has standard deviation
  # sqrt(p (1 - p) / 20000) = 0.0032 at p = 0.3; we allow 5 of them (0.016).
  p, n, steps = 0.3, 10, 2000
  active = _active(part_lib.build(_config(n, steps, participation='bernoulli',
                                          availability=p)), range(1, steps + 1))
  assert abs(active.mean() - p) < 5 * np.sqrt(p * (1 - p) / (n * steps)), active.mean()
  assert abs(active.mean(0) - p).max() < 0.06  # every client, not just on average (5 sd of 2000)
  both = (active[1:] & active[:-1]).mean()      # independent across steps ...
  assert abs(both - p * p) < 0.02, both
  pair = (active[:, 0] & active[:, 1]).mean()   # ... and across clients
  assert abs(pair - p * p) < 0.03, pair


def test_bernoulli_depends_only_on_seed_and_step():
  c = _config(8, participation='bernoulli', availability=0.5)
  first = _active(part_lib.build(c), range(1, 21))
  np.testing.assert_array_equal(first, _active(part_lib.build(c), range(1, 21)))
  np.testing.assert_array_equal(first[::-1], _active(part_lib.build(c), range(20, 0, -1)))
  assert len({a.tobytes() for a in first}) > 10  # the step matters
  c.seed = 1
  assert not np.array_equal(first, _active(part_lib.build(c), range(1, 21)))


def test_bernoulli_extremes():
  assert _active(part_lib.build(_config(participation='bernoulli', availability=1.0)),
                 range(1, 50)).all()
  assert not _active(part_lib.build(_config(participation='bernoulli', availability=0.0)),
                     range(1, 50)).any()


# ---------------------------------------------------------------------------- trace


@pytest.mark.parametrize('name', ['trace.csv', 'trace.txt', 'trace.npy'])
def test_trace_step_s_reads_column_s_minus_1(tmp_path, name):
  trace = np.random.default_rng(0).integers(0, 2, (5, 12))
  path = _write_trace(tmp_path, trace, name)
  if name == 'trace.txt':  # spaces instead of commas
    (tmp_path / name).write_text('\n'.join(' '.join(map(str, r)) for r in trace))
  p = part_lib.build(_config(5, 10, participation='trace', trace_file=path))
  np.testing.assert_array_equal(_active(p, range(1, 11)), trace[:, :10].T.astype(bool))


def test_trace_accepts_a_bool_npy(tmp_path):
  trace = np.eye(4, 6, dtype=bool)
  path = _write_trace(tmp_path, trace, 'trace.npy')
  np.testing.assert_array_equal(part_lib.load_trace(path, 4, 6), trace)


@pytest.mark.parametrize('content, message', [
    ([[1, 0, 1], [0, 1, 1]], 'has shape (2, 3); it needs num_clients=3 rows and at least '
                             'num_steps=3 columns'),
    ([[1, 0], [0, 1], [1, 1]], 'has shape (3, 2); it needs num_clients=3 rows and at least '
                               'num_steps=3 columns'),
    ([[1, 0, 1], [0, 2, 1], [1, 1, 1]], 'holds 2 for client 1 at column 1 (step 2)'),
    ([[1, 0, 1], [0, 1, 1], [1, 1, 0.5]], 'holds 0.5 for client 2 at column 2 (step 3)'),
    ('1 0 1\n0 1\n1 1 1\n', 'cannot be read as a 0/1 matrix (its rows have different lengths)'),
    ('1 0 1\n0 x 1\n1 1 1\n', 'cannot be read as a 0/1 matrix'),
    ('', 'has shape (0,)'),
])
def test_bad_trace_is_one_line(tmp_path, content, message):
  path = tmp_path / 'trace.csv'
  if isinstance(content, str):
    path.write_text(content)
  else:
    _write_trace(tmp_path, content)
  found = config_check.problems(_config(3, 3, participation='trace', trace_file=str(path)),
                                num_devices=1)
  assert len(found) == 1 and message in found[0] and '\n' not in found[0], found


@pytest.mark.parametrize('content, message', [
    ([[1, 0, 1], [0, 2, 1], [1, 1, 1]], 'holds 2'),
    (np.ones((3, 3, 1)), 'has shape (3, 3, 1)'),
    (np.array([['a'] * 3] * 3, object), 'cannot be read as a 0/1 matrix'),
])
def test_bad_npy_trace_is_one_line(tmp_path, content, message):
  path = _write_trace(tmp_path, np.asarray(content), 'trace.npy')
  with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
    part_lib.load_trace(path, 3, 3)


def test_missing_trace_is_one_line(tmp_path):
  for trace_file, message in [('', "participation='trace' needs dynamics.trace_file"),
                              (str(tmp_path / 'none.csv'), 'does not exist or is not a file')]:
    found = config_check.problems(_config(participation='trace', trace_file=trace_file),
                                  num_devices=1)
    assert len(found) == 1 and message in found[0], found


# ----------------------------------------------------------------------- stragglers


def test_stragglers_take_part_every_s_steps_with_staggered_phases():
  c = _config(10, participation='stragglers', straggler_fraction=0.4, straggler_every=3)
  ids = part_lib.stragglers(10, 0.4, c.seed)
  assert len(ids) == 4 and len(set(ids)) == 4
  active = _active(part_lib.build(c), range(1, 13))
  others = np.setdiff1d(np.arange(10), ids)
  assert active[:, others].all()
  for i, client in enumerate(ids):  # the i-th straggler at steps s with (s - 1) % 3 == i % 3
    np.testing.assert_array_equal(np.flatnonzero(active[:, client]) + 1,
                                  [s for s in range(1, 13) if (s - 1) % 3 == i % 3])
  assert active[:, ids].sum(0).tolist() == [4, 4, 4, 4]


def test_stragglers_are_drawn_from_the_seed():
  np.testing.assert_array_equal(part_lib.stragglers(20, 0.25, 0), part_lib.stragglers(20, 0.25, 0))
  assert any(not np.array_equal(part_lib.stragglers(20, 0.25, 0), part_lib.stragglers(20, 0.25, s))
             for s in range(1, 5))
  assert len(part_lib.stragglers(20, 0.0, 0)) == 0 and len(part_lib.stragglers(20, 1.0, 0)) == 20


@pytest.mark.parametrize('mode', ['all', 'bernoulli', 'stragglers'])
def test_steps_taken_counts_each_clients_active_steps(mode):
  c = _config(6, 30, participation=mode, availability=0.4, straggler_fraction=0.5,
              straggler_every=4)
  p = part_lib.build(c)
  np.testing.assert_array_equal(part_lib.steps_taken(p, 3, 30), _active(p, range(3, 31)).sum(0))
  if mode == 'stragglers':  # steps 1 .. 30: phases 0, 1 take 8 steps, phase 2 takes 7
    counts = part_lib.steps_taken(p, 1, 30)
    ids = part_lib.stragglers(6, 0.5, c.seed)
    assert counts[ids].tolist() == [8, 8, 7] and (np.delete(counts, ids) == 30).all()


# ----------------------------------------------------------------- config, jit


@pytest.mark.parametrize('field, value, message', [
    ('availability', 1.5, 'config.dynamics.availability must be in [0, 1], got 1.5.'),
    ('straggler_fraction', -0.1, 'config.dynamics.straggler_fraction must be in [0, 1]'),
    ('straggler_every', 0, 'config.dynamics.straggler_every must be >= 1, got 0.'),
    ('participation', 'often', "unknown participation 'often': config.dynamics.participation "
                               f"must be one of {', '.join(part_lib.MODES)}."),
    ('staleness', -1, 'config.dynamics.staleness must be >= 0 (0 = live targets), got -1.'),
    ('staleness', 20, 'dynamics.staleness=20 must be below num_steps=20'),
])
def test_bad_dynamics_field_is_one_line(field, value, message):
  found = config_check.problems(_config(**{field: value}), num_devices=1)
  assert len(found) == 1 and message in found[0], found


def test_a_field_its_mode_does_not_use_is_warned_about():
  assert config_check.warnings(_config()) == []
  found = config_check.warnings(_config(availability=0.5, schedule='matching', failure_p=0.2))
  assert found == [
      "config.dynamics.failure_p=0.2 has no effect unless config.dynamics.schedule="
      "'edge_failure' (it is 'matching').",
      "config.dynamics.availability=0.5 has no effect unless config.dynamics.participation="
      "'bernoulli' (it is 'all')."]
  assert config_check.warnings(_config(participation='bernoulli', availability=0.5)) == []


def test_the_defaults_are_the_static_full_setting():
  d = default.get_config().dynamics
  assert (d.schedule, d.participation, d.availability, d.staleness) == ('static', 'all', 1.0, 0)


@pytest.mark.parametrize('mode', part_lib.MODES)
def test_traced_step_matches_eager_and_compiles_once(mode, tmp_path):
  trace = _write_trace(tmp_path, np.random.default_rng(1).integers(0, 2, (6, 20)))
  c = _config(participation=mode, availability=0.5, trace_file=trace, straggler_fraction=0.5,
              straggler_every=2)
  assert_traced_step_matches_eager_and_compiles_once(part_lib.active_at, part_lib.build(c))
