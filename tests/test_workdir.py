"""The workdir's files through `workdir.py` and `writers.py`: the formats of existing runs read
back unchanged, and each process writes what it should."""

import json
import os

import numpy as np
from tensorboard.backend.event_processing import plugin_event_accumulator

from mhd_jax.outputs import summary as summary_lib
from mhd_jax.outputs import workdir as wd
from mhd_jax.outputs import writers
from tests.conftest import short_config

# summary.json as `train` wrote it before `summary.Summary` existed (2 clients, 2 heads).
OLD_SUMMARY = {
    'num_clients': 2, 'num_heads': 2, 'steps': 40, 'wall_seconds': 12.5,
    'mean_private_acc': [0.75, 0.5], 'mean_shared_acc': [0.25, 0.375],
    'clients': [{'id': 0, 'private_acc': [0.5, 0.25], 'shared_acc': [0.125, 0.25],
                 'bytes_sent_per_step': 100},
                {'id': 1, 'private_acc': [1.0, 0.75], 'shared_acc': [0.375, 0.5],
                 'bytes_sent_per_step': 140}],
    'bytes_sent_per_step': 240, 'fedavg_bytes_per_round': 9000,
}


def test_an_existing_summary_reads_typed_and_writes_back_byte_for_byte(tmp_path):
  old = json.dumps(OLD_SUMMARY, indent=1)  # how train.py wrote it: json.dump(..., indent=1)
  (tmp_path / 'summary.json').write_text(old)
  summary = summary_lib.read_summary(str(tmp_path))
  assert summary.clients[1].private_acc == [1.0, 0.75] and summary.clients[1].id == 1
  assert summary.mean_shared_acc == [0.25, 0.375] and summary.fedavg_bytes_per_round == 9000
  out = tmp_path / 'again'
  out.mkdir()
  summary_lib.write_summary(str(out), summary)
  assert (out / 'summary.json').read_text() == old  # same keys, order and values


def test_a_summary_from_before_fedavg_was_recorded_reads_as_zero(tmp_path):
  older = {k: v for k, v in OLD_SUMMARY.items() if k != 'fedavg_bytes_per_round'}
  (tmp_path / 'summary.json').write_text(json.dumps(older))
  assert summary_lib.read_summary(str(tmp_path)).fedavg_bytes_per_round == 0


def test_per_class_keeps_the_npz_keys_and_arrays(tmp_path):
  rng = np.random.default_rng(0)
  pc = summary_lib.PerClass(correct_NxHxC=rng.integers(0, 9, (3, 2, 4)), count_C=np.full(4, 9),
                            primary_NxC=rng.random((3, 4)) < 0.5)
  summary_lib.write_per_class(str(tmp_path), pc)
  with np.load(tmp_path / 'per_class.npz') as z:  # what studies and notebooks have read
    assert sorted(z.files) == ['correct_NxHxC', 'count_C', 'primary_NxC']
  back = summary_lib.read_per_class(str(tmp_path))
  for name in ('correct_NxHxC', 'count_C', 'primary_NxC'):
    np.testing.assert_array_equal(getattr(back, name), getattr(pc, name))
    assert getattr(back, name).dtype == getattr(pc, name).dtype


def test_only_the_lead_writes_and_records_reach_their_files(tmp_path):
  config = short_config()
  other = tmp_path / 'other'
  other.mkdir()
  w = writers.create(str(other), lead=False, config=config, start_step=0)
  w.write_record({'step': 1})
  w.write_scalars(1, {'mean/loss': 1.0})
  w.close()
  assert os.listdir(other) == []  # a non-lead process writes nothing

  lead = str(tmp_path / 'lead')
  os.makedirs(lead)
  w = writers.create(lead, lead=True, config=config, start_step=0)
  record = {'step': 10, 'loss': 0.5, 'clients': {'loss': [0.25, 0.75]}}
  w.write_record(record)
  w.write_scalars(10, {'mean/loss': 0.5})
  w.close()
  assert wd.read_metrics(lead) == [record]  # the nested record, as written
  acc = plugin_event_accumulator.EventAccumulator(wd.path(lead, wd.TENSORBOARD))
  acc.Reload()
  assert set(acc.Tags()['tensors']) == {'mean/loss', '_hparams_/session_start_info'}
  assert [e.step for e in acc.Tensors('mean/loss')] == [10]


def test_a_resumed_writer_keeps_records_up_to_its_step_and_writes_no_second_hparams(tmp_path):
  workdir = str(tmp_path)
  config = short_config()
  first = writers.create(workdir, True, config, 0)
  for s in (10, 20, 30):
    first.write_record({'step': s})
  first.close()
  again = writers.create(workdir, True, config, 20)  # resumed from the checkpoint of step 20
  again.write_record({'step': 21})
  again.close()
  assert [r['step'] for r in wd.read_metrics(workdir)] == [10, 20, 21]
  acc = plugin_event_accumulator.EventAccumulator(wd.path(workdir, wd.TENSORBOARD))
  acc.Reload()
  assert len(acc.Tensors('_hparams_/session_start_info')) == 1


def test_a_dp_summary_round_trips_and_an_old_one_has_no_epsilon(tmp_path):
  assert summary_lib.Summary.from_json(OLD_SUMMARY).clients[0].epsilon is None
  dp = dict(OLD_SUMMARY, dp={'delta': 1e-5, 'noise_multiplier': 1.0, 'clip_norm': 1.0,
                             'accountant': 'pld'},
            clients=[dict(c, epsilon=3.5 + c['id']) for c in OLD_SUMMARY['clients']])
  summary = summary_lib.Summary.from_json(dp)
  assert summary.clients[1].epsilon == 4.5 and summary.dp['delta'] == 1e-5
  assert summary.to_json() == dp
  assert summary_lib.Summary.from_json(OLD_SUMMARY).to_json() == OLD_SUMMARY
