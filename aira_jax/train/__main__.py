"""Train a language model: `python -m aira_jax.train --config=configs/x.py[:variant] --workdir=DIR`.

Fields are overridden with `--config.train.lr=1e-3`; an unknown field, a config file that does
not load, or a bad data path ends the run with one `error:` line and exit status 2. Re-running the
same command with the same --workdir resumes from the latest checkpoint.
"""
from __future__ import annotations

import re
import sys
import traceback

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (path[:variant]) whose get_config() returns the '
    'train config; fields are overridable as --config.section.field=value.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Run directory: checkpoints, metrics.jsonl, TensorBoard, summary.')
_MULTIHOST = flags.DEFINE_bool('multihost', False,
                               'Call jax.distributed.initialize() first (same as config.multihost).')
_DEBUG_EXIT = flags.DEFINE_integer(
    'debug_exit_after_step', None,
    'Debug: hard-exit (os._exit) right after this step, to test resuming.')

EXIT_USAGE = 2


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(EXIT_USAGE)


def _explain_config_error(e: Exception, argv: list[str]) -> str:
  if isinstance(e, (AttributeError, KeyError)):
    name = str(e).strip('"\'')
    overrides = [a.split('=', 1)[0] for a in argv if re.match(r'--config\.', a)]
    bad = [o for o in overrides if o.split('.')[-1] == name] or overrides
    return (f'config override {", ".join(bad) or name!r} names a field that does not exist '
            f'({name!r}); see aira_jax/train/config.py base_config() for the fields')
  if isinstance(e, SyntaxError):
    return f'config file does not parse: {e.msg} ({e.filename}, line {e.lineno})'
  lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
  missing = [line for line in lines if 'No such file or directory' in line]
  if missing:
    return f'config file not found: {missing[-1]}'
  if any(line.startswith('Traceback') for line in lines):
    # config_flags wraps the config file's own exception: its last line says what went wrong.
    return f'{lines[0].split(":")[0]}: {lines[-1]}'
  return f'{type(e).__name__}: {" ".join(lines[:4])}'


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing that turns config-loading failures into one clear line."""
  try:
    rest = flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    _fail(_explain_config_error(e, argv))
  config = _CONFIG.value
  if config is None:
    _fail('--config is required (e.g. --config=configs/explore.py)')
  try:
    config.keys()  # a config file that failed to load raises here
  except Exception as e:  # pylint: disable=broad-except
    _fail(f'could not load --config: {_explain_config_error(e, argv)}')
  if not isinstance(config, ml_collections.ConfigDict):
    _fail(f'--config get_config() must return an ml_collections.ConfigDict, got '
          f'{type(config).__name__}')
  if not _WORKDIR.value:
    _fail('--workdir is required')
  return rest


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  # Imported here so that --help and flag errors stay fast.
  from aira_jax.train.trainer import train  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  if _MULTIHOST.value:
    with config.unlocked():
      config.multihost = True
  try:
    train(config, _WORKDIR.value, exit_after_step=_DEBUG_EXIT.value)
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, ImportError) as e:
    # Bad input (config values, data paths, design programs): one line; the traceback at -v 1.
    logging.vlog(1, '%s', traceback.format_exc())
    _fail(f'{type(e).__name__}: {e} (traceback with --verbosity=1)')


def run() -> None:
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  run()
