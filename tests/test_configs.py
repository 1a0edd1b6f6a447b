"""Every config holds its design values and passes the checks; the TFDS configs' small forms
build their data and step under mock data, and one of them runs end to end."""

import glob
import importlib
import io
import os
import re
import tokenize

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from mhd_jax import data as data_lib
from mhd_jax.network import topology
from mhd_jax.outputs import checkpoint
from mhd_jax.population import groups as groups_lib
from mhd_jax.run import config_check
from mhd_jax.run import fields
from mhd_jax.run import programs
from mhd_jax.run import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
                 if not p.endswith('__init__.py'))
TFDS_CONFIGS = ['imagenet_resnet18', 'imagenet_resnet34', 'imagenet_hetero', 'cifar100_resnet18']


def get_config(name, arg=None):
  return importlib.import_module(f'configs.{name}').get_config(arg)


# The design settings of every config (README, "Configs"; each config's docstring): a change
# must be deliberate.
# (num_clients, num_heads, topology, skew, public_fraction, dataset, backbone, num_steps)
DESIGN = {
    'default': (5, 3, 'complete', 0.9, 0.3, 'digits', 'mlp', 1500),
    'digits_hetero': (8, 3, 'complete', 0.9, 0.3, 'digits', 'mlp', 2000),
    'digits_cohorts': (64, 3, 'complete', 0.9, 0.3, 'digits', 'resnet18_cifar', 20),
    'mnist1d': (10, 3, 'complete', 0.9, 0.3, 'mnist1d', 'mnist1d_cnn', 1500),
    'mnist1d_hetero': (10, 3, 'complete', 0.9, 0.3, 'mnist1d', 'mnist1d_cnn', 1500),
    'population': (1024, 3, 'torus', 1.0, 0.3, 'mnist1d', 'mnist1d_mlp', 400),
    'cifar100_resnet18': (10, 3, 'complete', 0.9, 0.1, 'cifar100', 'resnet18_cifar', 30000),
    'imagenet_hetero': (8, 4, 'complete', 0.9, 0.1, 'imagenet2012', 'resnet18', 100000),
    'imagenet_resnet18': (8, 4, 'complete', 0.9, 0.1, 'imagenet2012', 'resnet18', 100000),
    'imagenet_resnet34': (8, 4, 'complete', 0.9, 0.1, 'imagenet2012', 'resnet34', 100000),
}


def _leaves(tree, prefix=''):
  """Dotted names of a config dict's leaves; an empty dict (`groups`) is a leaf."""
  if not isinstance(tree, dict) or not tree:
    return [prefix[:-1]]
  return [leaf for k, v in tree.items() for leaf in _leaves(v, f'{prefix}{k}.')]


def test_every_default_field_has_a_comment():
  """configs/default.py is the config reference: each field's assignment carries a trailing
  comment, or sits right under a comment block at its own indentation (a continuation line
  of the field above, indented to the comment column, does not count)."""
  source = open(os.path.join(ROOT, 'configs', 'default.py')).read()
  lines = source.splitlines()
  trailing = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
              if tok.type == tokenize.COMMENT and lines[tok.start[0] - 1].lstrip()[0] != '#'}
  leaves = _leaves(get_config('default').to_dict())
  assert len(leaves) == len(fields.FIELDS) + 1  # + groups, checked by its own rules
  undocumented = []
  for field in leaves:
    at = [i for i, line in enumerate(lines, 1)
          if re.match(rf'(\s*)c\.{re.escape(field)} = ', line)]
    assert len(at) == 1, f'c.{field} is assigned {len(at)} times in configs/default.py'
    indent = re.match(r'\s*', lines[at[0] - 1]).group()
    above = lines[at[0] - 2]
    if at[0] not in trailing and not above.startswith(indent + '#'):
      undocumented.append(field)
  assert undocumented == []


def test_every_config_is_listed():
  assert sorted(DESIGN) == CONFIGS


@pytest.mark.parametrize('name', CONFIGS)
def test_config_values_follow_the_design_and_pass_the_checks(name):
  c = get_config(name)
  assert (c.num_clients, c.num_heads, c.topology, c.skew, c.public_fraction, c.data.name,
          c.model.name, c.num_steps) == DESIGN[name]
  # The MHD recipe: both distillation terms on, confidence-weighted targets (most confident
  # for mixed architectures, where mixtures collapsed), T = 1.
  target = 'most_confident' if 'hetero' in name else 'confidence_weighted'
  assert (c.nu_main, c.nu_aux, c.nu_emb, c.temperature, c.target, c.include_self, c.seed) == (
      1.0, 1.0, 0.0, 1.0, target, False, 0)
  assert config_check.problems(c, num_devices=1) == []


@pytest.mark.parametrize('name', [  # the paper's main config in the fast set, the rest slow
    n if n == 'imagenet_resnet18' else pytest.param(n, marks=pytest.mark.slow)
    for n in TFDS_CONFIGS])
def test_tfds_config_small_form_builds_its_data_and_traces_its_step(name):
  """Every TFDS config's small form: mock data in the promised shapes, and its train step
  traced abstractly (`jax.eval_shape`: nothing compiled) on those batches."""
  config = get_config(name, 'small')
  assert config.data.name != 'digits' and config.num_steps == 2
  config.num_devices = 1  # the small form's batches are sized for one device, not 8 fake ones
  config_check.validate(config)
  with tfds.testing.mock_data(num_examples=64):
    data = data_lib.get_data(config)
    batch = next(data.train_batches(0))
  n, size = config.num_clients, config.data.image_size
  assert batch['private']['image'].shape == (n, config.data.batch_size, size, size, 3)
  assert batch['public']['image'].shape == (config.data.public_batch_size, size, size, 3)
  specs = groups_lib.make_specs(config, data.num_classes)
  state = checkpoint.abstract_state(specs, data.image_shape)
  # Traced once for all clients ('vmap'); the strategies agree (test_strategies.py).
  step = programs.make_train_step(specs, topology.build(config).toarray(), config, 'vmap')
  new_state, metrics = jax.eval_shape(step, state, batch, jax.random.PRNGKey(0))
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert jax.tree.leaves(state.groups[0].batch_stats)  # ResNets carry batch statistics
  assert all(m.shape == (n,) for m in jax.tree.leaves(metrics))


@pytest.mark.slow  # compiles the ResNet-18 step and predict of a real config
def test_one_tfds_config_runs_end_to_end_under_mock_data(tmp_path):
  config = get_config('cifar100_resnet18', 'small')
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
