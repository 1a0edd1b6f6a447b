"""Every config builds; the TFDS configs run end to end in their small form under mock data."""

import glob
import importlib
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mhd_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
                 if not p.endswith('__init__.py'))
TFDS_CONFIGS = ['imagenet_resnet18', 'imagenet_resnet34', 'cifar100_resnet18']


def get_config(name, arg=None):
  return importlib.import_module(f'configs.{name}').get_config(arg)


@pytest.mark.parametrize('name', CONFIGS)
def test_config_fields_follow_the_design(name):
  c = get_config(name)
  for field in ('num_clients', 'num_heads', 'topology', 'skew', 'public_fraction', 'nu_main',
                'nu_aux', 'nu_emb', 'temperature', 'target', 'include_self', 'num_steps',
                'seed'):
    assert field in c, field


@pytest.mark.parametrize('name', TFDS_CONFIGS)
def test_tfds_config_runs_two_steps_in_small_form(name, tmp_path):
  config = get_config(name, 'small')
  assert config.data.name != 'digits' and config.num_steps == 2
  with tfds.testing.mock_data(num_examples=64):
    summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['steps'] == 2 and len(summary['clients']) == config.num_clients
  assert len(summary['mean_shared_acc']) == config.num_heads
  # The mock evaluation split has 64 examples: all of them are evaluated.
  assert np.load(tmp_path / 'per_class.npz')['count_C'].sum() == 64


def test_full_imagenet_config_is_the_documented_setting():
  c = get_config('imagenet_resnet18')
  assert (c.data.name, c.model.name, c.num_clients, c.data.image_size) == (
      'imagenet2012', 'resnet18', 8, 224)
  assert get_config('imagenet_resnet34').model.name == 'resnet34'
