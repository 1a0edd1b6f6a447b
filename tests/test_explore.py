"""The notebook API (`mhd_jax.load`), the notebook itself, the report and TensorBoard."""

import json
import os
import sys

import jax
import nbformat
from nbclient import NotebookClient
import numpy as np
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.util import tensor_util

import mhd_jax
from mhd_jax import data as data_lib
from mhd_jax.outputs import checkpoint
from mhd_jax.outputs import workdir as wd
from tests.conftest import ROOT, hand_accuracies, read_records


def test_load_restores_the_final_population_and_its_accuracies(short_run):
  workdir, summary = short_run
  run = mhd_jax.load(workdir)
  assert run.step == 40 and run.config.num_clients == 5 and run.config.num_heads == 3
  assert int(run.state.step) == 40
  np.testing.assert_array_equal(run.adjacency, 1 - np.eye(5))
  acc = run.accuracies()
  # The loaded population scores what the run reported, and what a hand count gives.
  np.testing.assert_array_equal(acc.private_NxH.mean(0), summary['mean_private_acc'])
  np.testing.assert_array_equal(acc.shared_NxH.mean(0), summary['mean_shared_acc'])
  private, shared = hand_accuracies(workdir)
  np.testing.assert_allclose(acc.private_NxH, private, atol=1e-6)
  np.testing.assert_allclose(acc.shared_NxH, shared, atol=1e-6)
  assert run.client_accuracy(3) == {'private': summary['clients'][3]['private_acc'],
                                    'shared': summary['clients'][3]['shared_acc']}
  assert run.primary_mask()[1].nonzero()[0].tolist() == [2, 3]


def test_per_client_predictions_use_that_client_and_head(short_run):
  run = mhd_jax.load(short_run[0])
  batch = next(data_lib.get_data(run.config).eval_batches())
  images = batch['image'][:32]
  for client in range(5):
    logits = run.logits(client, images)
    assert logits.shape == (3, 32, 10)
    # By hand: the client's parameters sliced from the stacked population.
    one = jax.tree.map(lambda x, c=client: x[c], run.state.groups[0])
    expected, _ = run.specs[0].model.apply(
        {'params': one.params, 'batch_stats': one.batch_stats}, images, train=False)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(run.predict(client, 1, images), np.argmax(expected[1], -1))


def test_load_an_earlier_checkpoint(short_run):
  """The step-20 checkpoint scores what the run's own evaluation at step 20 recorded.

  (test_durability checks it bit for bit against a 20-step run.)"""
  run = mhd_jax.load(short_run[0], step=20)
  assert run.step == 20 and int(run.state.step) == 20
  (record,) = [r['eval'] for r in read_records(short_run[0]) if r['step'] == 20 and 'eval' in r]
  acc = run.accuracies()
  assert acc.private_NxH.tolist() == record['private_acc']
  assert acc.shared_NxH.tolist() == record['shared_acc']


def test_metadata_beside_the_checkpoints(short_run):
  workdir, _ = short_run
  facts = wd.read_partition(workdir)
  assert facts['num_classes'] == 10 and facts['image_shape'] == [8, 8, 1]
  counts = np.array(facts['label_counts'])
  assert counts.shape == (5, 10) and counts.sum(1).tolist() == facts['client_sizes']
  indices = np.load(os.path.join(workdir, 'partition_indices.npz'))
  assert sorted(indices) == ['client_0', 'client_1', 'client_2', 'client_3', 'client_4',
                             'public']
  assert [len(indices[f'client_{i}']) for i in range(5)] == facts['client_sizes']
  assert wd.read_config(workdir).num_steps == 40


def _kernel_spec(tmp_path, monkeypatch) -> str:
  """A Jupyter kernel spec for this interpreter, found through JUPYTER_PATH (works on a
  machine where only `pip install -r requirements.txt` ran)."""
  spec_dir = tmp_path / 'jupyter' / 'kernels' / 'mhd_test'
  spec_dir.mkdir(parents=True)
  (spec_dir / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
      'display_name': 'mhd_jax test', 'language': 'python'}))
  monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter'))
  return 'mhd_test'


def test_notebook_runs_headless_on_a_short_run(short_run, tmp_path, monkeypatch):
  workdir, summary = short_run
  monkeypatch.setenv('MHD_WORKDIR', workdir)
  monkeypatch.setenv('PYTHONPATH', ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  nb = nbformat.read(os.path.join(ROOT, 'notebooks', 'explore_checkpoint.ipynb'), as_version=4)
  NotebookClient(nb, kernel_name=_kernel_spec(tmp_path, monkeypatch), timeout=180,
                 resources={'metadata': {'path': os.path.join(ROOT, 'notebooks')}}).execute()
  outputs = [o for cell in nb.cells if cell.cell_type == 'code' for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  text = ''.join(o.get('text', '') for o in outputs)
  assert f'{workdir}: checkpoint of step 40 (of 40); 5 clients, 3 heads' in text
  images = [o for o in outputs if 'image/png' in o.get('data', {})]
  assert len(images) >= 4  # private vs shared, heat map, graph, accuracy over steps
  table = ''.join(o['data'].get('text/markdown', '') for o in outputs if 'data' in o)
  assert f'| **mean** | {100 * summary["mean_private_acc"][0]:.1f} |' in table


def test_report_files(short_run):
  workdir, summary = short_run
  report_dir = os.path.join(workdir, 'report')
  for name in ('accuracy_over_steps.png', 'private_vs_shared.png', 'graph.png'):
    with open(os.path.join(report_dir, name), 'rb') as f:
      data = f.read()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 10_000, name
  text = open(os.path.join(report_dir, 'report.md')).read()
  rows = [line for line in text.splitlines() if line.startswith('| ')]
  assert len(rows) == 1 + 5 + 1  # header, clients, mean
  c3 = summary['clients'][3]
  assert rows[1 + 3] == '| 3 | ' + ' | '.join(
      f'{100 * p:.1f} | {100 * s:.1f}' for p, s in zip(c3['private_acc'], c3['shared_acc'])) + ' |'
  assert '![graph](graph.png)' in text


def test_tensorboard_scalars_and_hparams(short_run):
  workdir, _ = short_run
  acc = plugin_event_accumulator.EventAccumulator(os.path.join(workdir, 'tensorboard'),
                                                 size_guidance={'tensors': 0})
  acc.Reload()
  tags = set(acc.Tags()['tensors'])
  for metric in ('loss', 'ce', 'kd_main', 'kd_aux', 'emb', 'train_acc', 'bytes_sent',
                 'private_acc_head0', 'shared_acc_head2'):
    assert f'mean/{metric}' in tags and {f'{metric}/client_{i}' for i in range(5)} <= tags
  assert 'mean/steps_per_sec' in tags
  assert '_hparams_/session_start_info' in tags
  records = {r['step']: r for r in read_records(workdir) if 'eval' not in r}
  loss = {e.step: tensor_util.make_ndarray(e.tensor_proto)
          for e in acc.Tensors('loss/client_4')}
  assert sorted(loss) == [10, 20, 30, 40]
  for step, v in loss.items():
    assert v == np.float32(records[step]['clients']['loss'][4])
  hp = acc.PluginTagToContent('hparams')['_hparams_/session_start_info']
  assert b'num_heads' in hp and b'optimizer.learning_rate' in hp
