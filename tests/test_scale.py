"""Start-up and end of run at thousands of clients: nothing on the host grows faster than N.

The end-to-end run gives 2,000 clients data by tiling the digits' training split 40 times
(each client then holds about 19 private examples).
"""

import logging
import os

import jax
import numpy as np
import pytest

from mhd_jax.algorithm import evaluate
from mhd_jax.data import digits
from mhd_jax.network import topology
from mhd_jax.outputs import report
from mhd_jax.outputs import workdir as wd
from mhd_jax.outputs import writers
from mhd_jax.population import groups as groups_lib
from mhd_jax.population import state as state_lib
from mhd_jax.run import progress
from mhd_jax.run import train
from tests.conftest import short_config


def test_client_keys_are_the_fold_ins_of_each_client_id():
  rng = jax.random.PRNGKey(3)
  want = np.stack([jax.random.fold_in(rng, 7 + i) for i in range(5)])
  np.testing.assert_array_equal(state_lib.client_keys(rng, 7, 5), want)


def test_the_initialisation_program_does_not_grow_with_the_clients():
  """One vmapped fold_in, not one per client: the lowered program is the same size for 4
  and 2,000 clients (written out, 1,000 clients took 4 minutes to compile)."""
  def size(n):
    config = short_config(num_clients=n)
    specs = groups_lib.make_specs(config, 10)
    lowered = jax.jit(lambda rng: state_lib.init_state(specs, (8, 8, 1), rng)).lower(
        jax.random.PRNGKey(0))
    return len(lowered.as_text().splitlines())
  assert size(2000) == size(4)


def _accuracies(n):
  acc_NxH = np.linspace(0, 1, 2 * n).reshape(n, 2)
  return evaluate.Accuracies(acc_NxH, 1 - acc_NxH, None, None)


def test_tables_list_the_first_clients_then_say_how_many_more_and_the_mean_of_all():
  assert _accuracies(evaluate.TABLE_CLIENTS).hidden() is None
  acc = _accuracies(250)
  rows = acc.rows()
  assert [r[0] for r in rows] == [str(i) for i in range(100)] + ['mean']
  np.testing.assert_array_equal(rows[-1][1], acc.private_NxH.mean(0))  # the mean over all 250
  log = progress.client_table(acc, np.arange(250)).splitlines()
  assert len(log) == 1 + 100 + 2 and log[-2].startswith('... and 150 more clients')
  assert log[-1].split()[-1] == f'{np.arange(250).mean():.1f}' and log[100].split()[-1] == '99'
  assert report.markdown_table(acc).endswith('... and 150 more clients (every client is in '
                                             'summary.json); the mean is over all 250.')


def test_tensorboard_gets_per_client_tags_up_to_a_hundred_clients_then_the_mean():
  assert len(writers.per_client('loss', np.ones(writers.TAG_CLIENTS))) == 1 + 100
  assert writers.per_client('loss', np.arange(101.0)) == {'mean/loss': 50.0}


def test_the_graph_is_drawn_for_a_few_hundred_clients_and_links_at_most():
  assert report.drawable(topology.ring(report.GRAPH_CLIENTS))
  assert not report.drawable(topology.ring(report.GRAPH_CLIENTS + 1))
  assert report.drawable(topology.complete(32))  # 496 links
  assert not report.drawable(topology.complete(33))  # 528 links


def test_plots_of_many_clients_show_their_spread_not_a_line_or_a_bar_each():
  acc, steps = _accuracies(250), np.arange(3)
  fig = report.plot_accuracy_over_steps(steps, np.stack([acc.private_NxH] * 3),
                                        np.stack([acc.shared_NxH] * 3))
  assert all(len(ax.lines) == 1 and len(ax.collections) == 1 for ax in fig.axes)  # mean, band
  fig = report.plot_private_vs_shared(acc)
  assert all(len(ax.patches) == 2 * 40 for ax in fig.axes)  # two histograms of 40 bins
  few = _accuracies(report.PLOT_CLIENTS)
  fig = report.plot_accuracy_over_steps(steps, np.stack([few.private_NxH] * 3),
                                        np.stack([few.shared_NxH] * 3))
  assert all(len(ax.lines) == 100 + 1 for ax in fig.axes)  # a line per client, and the mean


@pytest.mark.slow
def test_two_thousand_clients_start_train_and_finish(tmp_path, monkeypatch, caplog):
  """Through train_and_evaluate, 2 steps (42 s on 2 busy cores): the log says how long start-up
  and the end of run took, the table is cut, the graph is not drawn and the report says so."""
  real = digits._load_digits  # pylint: disable=protected-access
  def tiled(seed, fraction):
    (x, y), test = real(seed, fraction)
    return (np.tile(x, (40, 1, 1, 1)), np.tile(y, 40)), test
  monkeypatch.setattr(digits, '_load_digits', tiled)
  caplog.set_level(logging.INFO)
  config = short_config(**{'num_clients': 2000, 'topology': 'ring', 'num_steps': 2,
                           'log_every': 1, 'eval_every': 2, 'checkpoint.every': 0,
                           'data.batch_size': 4, 'data.public_batch_size': 8,
                           'data.eval_batch_size': 128, 'model.width': 8, 'model.depth': 1})
  workdir = str(tmp_path / 'run')
  summary = train.train_and_evaluate(config, workdir)
  lines = caplog.messages
  assert len(summary['clients']) == 2000
  assert any(line.startswith('start-up: ') for line in lines)
  assert any(line.startswith('end of run: ') for line in lines)
  table = next(line for line in lines if line.startswith('final accuracies'))
  assert '... and 1,900 more clients' in table and len(table.splitlines()) == 1 + 1 + 100 + 2
  text = open(os.path.join(wd.path(workdir, wd.REPORT), 'report.md')).read()
  assert 'The communication graph is not drawn' in text
  assert not os.path.exists(os.path.join(wd.path(workdir, wd.REPORT), 'graph.png'))
