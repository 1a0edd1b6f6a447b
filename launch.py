"""Runs one config: python launch.py --config=configs/default.py --workdir=DIR.

Exit status: 0 done; 1 a loss, parameter or optimizer value became NaN or Inf
(the last finite checkpoint is kept), or a checkpoint could not be saved (one
line on stderr); 2 a bad config, flag, config file or workdir (one line per
problem on stderr, nothing written), a workdir in use by another run, data that
is not prepared, or a full disk; 143 (128 + SIGTERM) preempted, after saving a
checkpoint: run the same command again to resume.

`main(argv)` does all of it and returns the status, so tests run it in-process.
Run as a script, a failed run (status 1 or 2) exits at once, without waiting
for threads a library left behind (`_exit`).
"""

import errno
import logging as std_logging
import os
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from mhd_jax.outputs import checkpoint
from mhd_jax.run import config_check
from mhd_jax.run import safety
from mhd_jax.run import train


def _flags(argv=None):
  """A fresh set of flags for `argv` (each `main` call parses its own: calls share nothing)."""
  values = flags.FlagValues()
  config = config_flags.DEFINE_config_file(
      'config', 'configs/default.py', 'Config file; override fields with --config.FIELD=VALUE.',
      lock_config=True, flag_values=values, sys_argv=list(argv or ['launch.py']))
  workdir = flags.DEFINE_string('workdir', '/tmp/mhd_jax', 'Where logs and results are written.',
                                flag_values=values)
  overwrite = flags.DEFINE_bool(
      'overwrite', False, 'Start afresh on a workdir that holds an earlier run (even of another '
      'config), deleting its checkpoints, logs and report.', flag_values=values)
  return values, config, workdir, overwrite


def _one_line(e: BaseException) -> str:
  text = ' '.join(str(e).split()) or type(e).__name__
  return text[:400]


def _disk_full(e: BaseException) -> str | None:
  """What could not be written, if `e` or one of its causes is ENOSPC (orbax and tensorstore
  wrap the writer's error, some only in their message), else None."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return str(e.filename or 'the workdir')
    if 'No space left on device' in str(e):
      return 'a checkpoint'
    e = e.__cause__ or e.__context__
  return None


def _parse(argv):
  """(config, workdir, overwrite), or raises ConfigError with one line."""
  try:
    values, config, workdir, overwrite = _flags(argv)
    rest = values(argv)
    if len(rest) > 1:
      raise config_check.ConfigError([f'unexpected arguments: {rest[1:]}'])
    value = config.value
    value.to_dict()  # a config file that failed to load raises here, on first use
    return value, workdir.value, overwrite.value
  except config_check.ConfigError:
    raise
  except (KeyError, AttributeError) as e:  # an override of a field the config lacks
    name = str(e).strip('"\'')
    raise config_check.ConfigError([
        f'unknown config field {name!r} in {[a for a in argv if a.startswith("--config.")]}: '
        'see the config file for the fields (groups.NAME holds num_clients and model).']) from None
  except flags.Error as e:  # unknown flag, bad override value, missing or broken config file
    cause = e.__cause__ or e.__context__
    raise config_check.ConfigError([_one_line(cause if cause else e)]) from None
  except Exception as e:  # pylint: disable=broad-except  # the config file's own code failed
    path = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')),
                'configs/default.py')
    if isinstance(e, OSError) and 'Failed loading config file' in str(e):
      raise config_check.ConfigError([
          f'cannot load the config file {path}: it does not exist or cannot be read '
          '(a path relative to the current directory, or absolute).']) from None
    raise config_check.ConfigError([f'the config file {path} failed: {type(e).__name__}: '
                                    f'{_one_line(e)}']) from None


_QUIET_ORBAX = False


def _orbax_filter(record) -> bool:
  """Orbax logs every save at INFO (dropped: the progress lines stay readable), and a failed
  save (a full disk, or any other error) as tracebacks from each of its threads (dropped: the
  error reaches the loop when it waits for the save, and `main` says it in one line)."""
  if '/orbax/' not in record.pathname:
    return True
  return record.levelno >= std_logging.WARNING and not record.exc_info


def main(argv) -> int:
  """Parses `argv`, runs the config; returns the exit status (see the module doc)."""
  global _QUIET_ORBAX
  if any(a in ('--help', '-h', '--helpfull') for a in argv[1:]):
    print(__doc__ + '\n' + _flags()[0].main_module_help())
    return 0
  if not flags.FLAGS.is_parsed():  # absl logging reads FLAGS; this parses its own flags
    flags.FLAGS.mark_as_parsed()
  logging.use_absl_handler()  # idempotent; what app.run would install
  logging.set_verbosity(logging.WARNING)  # no INFO line (JAX's backend search) before a refusal
  try:
    config, workdir, overwrite = _parse(argv)
    dist = config.get('distributed')
    if not (dist and dist.get('initialize') is True):  # else devices wait for jax.distributed
      config_check.validate(config)
  except config_check.ConfigError as e:
    for problem in e.problems:
      print(f'config error: {problem}', file=sys.stderr)
    return 2
  logging.set_verbosity(logging.INFO)
  if not _QUIET_ORBAX:
    logging.get_absl_logger().addFilter(_orbax_filter)
    _QUIET_ORBAX = True
  try:
    train.train_and_evaluate(config, workdir, overwrite=overwrite)
  except config_check.ConfigError as e:
    for problem in e.problems:
      print(f'config error: {problem}', file=sys.stderr)
    return 2
  except safety.NonFiniteLossError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except safety.Preempted as e:
    logging.warning('%s Run the same command again to resume.', e)
    return 128 + 15
  except Exception as e:  # pylint: disable=broad-except
    full = _disk_full(e)
    if full is not None:
      print(f'error: disk full (no space left on device) while writing {full} in {workdir}; '
            'free space and run the same command again to resume from the last checkpoint.',
            file=sys.stderr)
      return 2
    if isinstance(e, checkpoint.SaveError):
      print(f'error: {e}', file=sys.stderr)
      return 1
    raise
  return 0


def _exit(status: int) -> None:
  """Ends the process with `status`. A failed run (1, 2) ends at once: a save that failed
  may leave orbax threads that wait up to 300 s for a signal that never comes, and
  Python's exit would wait for them (everything of ours is written and closed by now)."""
  if status in (1, 2):
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # pylint: disable=protected-access
  sys.exit(status)


if __name__ == '__main__':
  _exit(main(sys.argv))
