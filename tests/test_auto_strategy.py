"""`strategy='auto'` measures the candidates, caches the decision, and changes nothing in the run;
`hybrid` falls back to `loop` where JAX's batching table has moved."""

import json
import logging
import os
import types

import jax
import numpy as np
import pytest

from mhd_jax.placement import autotune
from mhd_jax.placement import clients
from mhd_jax.run import train
from tests import test_step as ts
from tests.conftest import read_records, short_config


def cnn_config(**overrides):
  """A 6-step run of 2 tiny CNN clients: 'auto' has three candidates to time (1 step each)."""
  return short_config(**{'num_clients': 2, 'num_steps': 6, 'log_every': 2, 'eval_every': 6, 'checkpoint.every': 0,
                         'model.name': 'cnn', 'model.width': 4, 'model.depth': 1,
                         'strategy_measure_steps': 1, **overrides})


@pytest.fixture
def cache(tmp_path, monkeypatch):
  path = str(tmp_path / 'cache' / 'strategies.json')
  monkeypatch.setenv('MHD_STRATEGY_CACHE', path)
  return path


def warnings(caplog):
  return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_hybrid_patches_this_jax():
  assert clients.hybrid_available(), jax.__version__
  assert clients.resolve_strategy('hybrid') == 'hybrid'


def test_hybrid_runs_as_loop_with_one_warning_when_the_table_moved(monkeypatch, caplog):
  monkeypatch.setattr(clients, '_batching', types.SimpleNamespace())  # the table is gone
  monkeypatch.setattr(clients, '_warned_hybrid', False)
  conv = lambda w, x: jax.lax.conv(x, w, (1, 1), 'SAME')
  w, x = np.ones((3, 2, 1, 3, 3), np.float32), np.ones((3, 1, 1, 4, 4), np.float32)
  with caplog.at_level(logging.WARNING):
    out = clients.map_clients(conv, 'hybrid', w, x)
    assert clients.resolve_strategy('hybrid') == 'loop'
    assert clients.strategy_for('hybrid', ts.make_specs('cnn'), ts.IMAGE) == 'loop'
    jaxpr = str(jax.make_jaxpr(lambda w, x: clients.map_clients(conv, 'hybrid', w, x))(w, x))
  np.testing.assert_allclose(out, clients.map_clients(conv, 'loop', w, x))
  assert jaxpr.count('conv_general_dilated') == 3  # one plain convolution per client, as in loop
  lines = warnings(caplog)
  assert len(lines) == 1 and "running 'loop' instead" in lines[0], lines
  assert 'hybrid' not in autotune.candidates(cnn_config(), ts.make_specs('cnn'), ts.IMAGE, 100)


def test_fastest_times_in_rounds_and_stops_timing_clear_losers(monkeypatch):
  now = [0.0]
  monkeypatch.setattr(autotune, '_now', lambda: now[0])
  cost = {'vmap': [9.0, 9.0, 9.0, 9.0], 'hybrid': [1.2, 1.0, 0.9, 1.1],
          'loop': [1.3, 1.1, 1.05, 0.95], 'slow': [4.0, 2.5, 2.5, 2.5]}
  calls = {k: 0 for k in cost}
  def run(name):
    def step():
      now[0] += cost[name][calls[name]]
      calls[name] += 1
    return step
  best, seconds = autotune.fastest({k: run(k) for k in cost}, steps=3)
  # Fastest timed step of each: hybrid 0.9 (its 3rd call) against loop 0.95. vmap is dropped
  # after its first call (> 4 x 1.2 s), 'slow' after the first round (> 2 x 1.0 s).
  assert best == 'hybrid' and seconds == pytest.approx(
      {'vmap': 9.0, 'hybrid': 0.9, 'loop': 0.95, 'slow': 2.5})
  assert calls == {'vmap': 1, 'hybrid': 4, 'loop': 4, 'slow': 2}


def test_models_without_convolutions_measure_nothing(monkeypatch):
  monkeypatch.setattr(autotune, 'fastest', lambda *a, **k: pytest.fail('measured'))
  config = short_config()
  assert autotune.candidates(config, ts.make_specs('mlp'), ts.IMAGE, 1000) == ('vmap',)
  assert autotune.candidates(cnn_config(strategy_measure_steps=0), ts.make_specs('cnn'),
                             ts.IMAGE, 1000) == ('loop',)  # the static rule on CPU
  assert autotune.candidates(cnn_config(), ts.make_specs('cnn'), ts.IMAGE, 5) == ('loop',)
  assert autotune.candidates(cnn_config(), ts.make_specs('cnn'), ts.IMAGE, 6) == (
      'vmap', 'hybrid', 'loop')


def _toy_fastest(cache_path, monkeypatch):
  """compile_fastest over three toy programs (donating their argument); 'loop' is made fastest."""
  monkeypatch.setattr(autotune, 'fastest', lambda runs, steps, prune: (
      [r() for r in runs.values()], ('loop', {s: 1.0 + (s != 'loop') for s in runs}))[1])
  make = lambda s: jax.jit(lambda x: x + {'vmap': 1, 'hybrid': 2, 'loop': 3}[s], donate_argnums=0)
  x = jax.numpy.zeros(4)
  strategy, step = autotune.compile_fastest(make, autotune.CANDIDATES, (x,), 'key', 1)
  assert not x.is_deleted()  # only copies were donated
  return strategy, np.asarray(step(x))


def test_cache_is_written_then_read_without_measuring(cache, monkeypatch):
  assert _toy_fastest(cache, monkeypatch)[0] == 'loop'
  assert json.load(open(cache))['key']['strategy'] == 'loop'
  monkeypatch.setattr(autotune, 'fastest', lambda *a, **k: pytest.fail('measured again'))
  make = lambda s: jax.jit(lambda x: x + {'vmap': 1, 'hybrid': 2, 'loop': 3}[s])
  strategy, step = autotune.compile_fastest(make, autotune.CANDIDATES, (np.zeros(4),), 'key', 1)
  assert strategy == 'loop' and (np.asarray(step(np.zeros(4))) == 3).all()


def test_corrupt_cache_warns_once_and_is_rebuilt(cache, monkeypatch, caplog):
  os.makedirs(os.path.dirname(cache))
  with open(cache, 'w') as f:
    f.write('{"key": {"strat')
  with caplog.at_level(logging.WARNING):
    strategy, out = _toy_fastest(cache, monkeypatch)
  assert strategy == 'loop' and (out == 3).all()
  assert len(warnings(caplog)) == 1 and 'unreadable' in warnings(caplog)[0]
  assert json.load(open(cache))['key']['strategy'] == 'loop'


def test_unwritable_cache_warns_once_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  monkeypatch.setenv('MHD_STRATEGY_CACHE', str(blocker / 'sub' / 'strategies.json'))
  with caplog.at_level(logging.WARNING):
    strategy, out = _toy_fastest(None, monkeypatch)
  assert strategy == 'loop' and (out == 3).all()
  assert len(warnings(caplog)) == 1 and 'not written' in warnings(caplog)[0]


@pytest.mark.slow  # three runs, one timing three strategies; the tests above cover its parts
def test_auto_run_equals_the_run_of_its_choice_and_a_rerun_does_not_measure(
    tmp_path, cache, monkeypatch):
  timed = []
  fastest = autotune.fastest
  monkeypatch.setattr(autotune, 'fastest', lambda runs, steps, prune: timed.append(
      sorted(runs)) or fastest(runs, steps, prune))
  auto = train.train_and_evaluate(cnn_config(), str(tmp_path / 'auto'))
  assert timed == [['hybrid', 'loop', 'vmap']]
  (key, entry), = json.load(open(cache)).items()
  assert 'models ' in key and 'batch 32+64x8x8x1' in key and 'clients/device 2 on 1' in key
  chosen = entry['strategy']
  explicit = train.train_and_evaluate(cnn_config(strategy=chosen), str(tmp_path / 'explicit'))
  del auto['wall_seconds'], explicit['wall_seconds']
  assert auto == explicit  # measuring changed nothing: same accuracies to the last bit
  strip = lambda recs: [{k: v for k, v in r.items() if 'per_sec' not in k} for r in recs]
  assert strip(read_records(str(tmp_path / 'auto'))) == strip(
      read_records(str(tmp_path / 'explicit')))
  again = train.train_and_evaluate(cnn_config(), str(tmp_path / 'again'))
  del again['wall_seconds']
  assert timed == [['hybrid', 'loop', 'vmap']] and again == auto  # from the cache
