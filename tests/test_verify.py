"""Checkpoints carry checksums; a corrupt one is never restored, the newest that verifies is."""

import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest

import mhd_jax
from mhd_jax.outputs import checkpoint
from mhd_jax.run import config_check
from mhd_jax.run import train
from tests.conftest import short_config


def _data_file(step_dir) -> str:
  """The largest file of the state item (the arrays' data)."""
  files = [f for f in glob.glob(os.path.join(step_dir, 'state', '**'), recursive=True)
           if os.path.isfile(f)]
  return max(files, key=os.path.getsize)


def _flip(path):
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    chunk = f.read(64)
    f.seek(os.path.getsize(path) // 2)
    f.write(bytes(b ^ 0xFF for b in chunk))


def _truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


CORRUPTIONS = {
    'byte-flipped data': (lambda d: _flip(_data_file(d)), 'does not match its sha256'),
    'truncated data': (lambda d: _truncate(_data_file(d)), 'bytes,'),
    'deleted data': (lambda d: os.remove(_data_file(d)), 'is missing'),
    'deleted orbax manifest': (lambda d: os.remove(os.path.join(d, 'state', 'manifest.ocdbt')),
                               'manifest.ocdbt is missing'),
    'deleted meta': (lambda d: shutil.rmtree(os.path.join(d, 'meta')), 'is missing'),
    'missing checksums': (lambda d: os.remove(os.path.join(d, checkpoint.CHECKSUMS)),
                          'no checksums.json'),
}


@pytest.mark.parametrize('name', sorted(CORRUPTIONS))
def test_verify_names_each_corruption(short_run, tmp_path, name):
  step_dir = str(tmp_path / '40')
  shutil.copytree(os.path.join(short_run[0], 'checkpoints', '40'), step_dir)
  assert checkpoint.verify(step_dir) is None
  listed = json.load(open(os.path.join(step_dir, checkpoint.CHECKSUMS)))
  assert any(k.startswith('state/') for k in listed) and any(k.startswith('meta/') for k in listed)
  corrupt, reason = CORRUPTIONS[name]
  corrupt(step_dir)
  assert reason in checkpoint.verify(step_dir)


def test_resume_skips_a_byte_flipped_checkpoint_and_resumes_exactly_from_the_older(
    short_run, tmp_path, caplog):
  workdir = str(tmp_path / 'run')
  shutil.copytree(short_run[0], workdir)
  _flip(_data_file(os.path.join(workdir, 'checkpoints', '40')))
  summary = train.train_and_evaluate(short_config(), workdir)
  skipped = [r.getMessage() for r in caplog.records if 'skipping the checkpoint' in r.getMessage()]
  assert len(skipped) == 1 and 'step 40' in skipped[0] and 'sha256' in skipped[0]
  assert os.path.isdir(os.path.join(workdir, checkpoint.SKIPPED, '40'))
  # Steps 21..40 again from step 20 give the uninterrupted run's state, bit for bit.
  again, first = mhd_jax.load(workdir), mhd_jax.load(short_run[0])
  assert again.step == 40
  for a, b in zip(jax.tree.leaves(again.state), jax.tree.leaves(first.state)):
    np.testing.assert_array_equal(a, b)
  assert summary['mean_private_acc'] == short_run[1]['mean_private_acc']


def test_restore_refuses_a_corrupt_checkpoint_and_none_verifying_is_refused(short_run, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(short_run[0], workdir)
  for step in (20, 40):
    _truncate(_data_file(os.path.join(workdir, 'checkpoints', str(step))))
  with pytest.raises(checkpoint.CorruptCheckpointError, match='step 40'):
    mhd_jax.load(workdir)
  with pytest.raises(config_check.ConfigError, match=r'no checkpoint .* verifies \(steps \[20, 40\]'):
    train.train_and_evaluate(short_config(), workdir)
