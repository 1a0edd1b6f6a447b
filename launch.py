"""Runs one config: python launch.py --config=configs/default.py --workdir=DIR.

Exit status: 0 done; 1 a loss became NaN or Inf (the last good checkpoint is
kept); 2 a bad config or a workdir holding a run of another config (one line
per problem on stderr); 143 (128 + SIGTERM) preempted, after saving a
checkpoint: run the same command again to resume.
"""

import logging as std_logging
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from mhd_jax import config_check
from mhd_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/default.py', 'Config file; override fields with --config.FIELD=VALUE.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', '/tmp/mhd_jax', 'Where logs and results are written.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Start afresh on a workdir that holds an earlier run (even of another '
    'config), deleting its checkpoints, logs and report.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  # Orbax logs every save at INFO; keep the progress lines readable.
  logging.get_absl_logger().addFilter(
      lambda r: r.levelno >= std_logging.WARNING or '/orbax/' not in r.pathname)
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)
  except config_check.ConfigError as e:
    for problem in e.problems:
      print(f'config error: {problem}', file=sys.stderr)
    sys.exit(2)
  except train.NonFiniteLossError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  except train.Preempted as e:
    logging.warning('%s Run the same command again to resume.', e)
    sys.exit(128 + 15)


if __name__ == '__main__':
  app.run(main)
