"""Runs one config: python launch.py --config=configs/default.py --workdir=DIR."""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from mhd_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/default.py', 'Config file; override fields with --config.FIELD=VALUE.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', '/tmp/mhd_jax', 'Where logs and results are written.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
