"""A standalone training worker: claims experiments from a shared store and trains them until the queue is empty.

    python -m aira_jax.discovery.worker --store=runs/store.sqlite --config=configs/discover_tiny.py --worker_id=w0
    python -m aira_jax.discovery.worker --store=postgresql://user:pw@host/db --config=... --noidle_exit

Run as many as there are accelerators (or hosts): they share the queue through the store's leased claims, so no
experiment is trained twice and a worker that dies (even by SIGKILL) has its experiment re-run by another once the
lease runs out. The config's `engineer` section sets the scale, seeds, limits and leases (see
aira_jax.discovery.engineer_settings). SIGTERM or SIGINT stops the worker: the training child is killed and the
experiment released to the queue at once. Exit status 0 when stopped or the queue is empty, 2 for bad input.
"""
from __future__ import annotations

import importlib
import os
import signal
import socket
import sys
import threading

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_STORE = flags.DEFINE_string('store', None, 'Store URL or SQLite path (default: $AIRA_STORE_URL, else '
                             'runs/aira_store.sqlite).')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Discovery config with an `engineer` section '
                                          '(fields overridable as --config.engineer.<field>=...).')
_WORKER_ID = flags.DEFINE_string('worker_id', None, 'Name of this worker in the store (default: <host>-<pid>).')
_MAX = flags.DEFINE_integer('max_experiments', 0, 'Stop after recording this many experiments (0: no limit).')
_IDLE_EXIT = flags.DEFINE_bool('idle_exit', True, 'Exit when no experiment is left to train (otherwise wait '
                               'for new ones).')
_DEBUGGER = flags.DEFINE_string('debugger', '', "Debugger factory 'package.module:function'; it is called with "
                                'the config and returns a callable DebugRequest -> fixed source or None.')

EXIT_USAGE = 2


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(EXIT_USAGE)


def load_debugger(spec: str, config):
  """The Debugger a 'module:function' factory builds from the config (None for an empty spec)."""
  if not spec:
    return None
  module_name, sep, attr = spec.partition(':')
  if not sep or not module_name or not attr:
    raise ValueError(f"--debugger must look like 'package.module:function', got {spec!r}")
  try:
    factory = getattr(importlib.import_module(module_name), attr)
  except (ImportError, AttributeError) as e:
    raise ValueError(f'--debugger {spec!r} cannot be loaded: {e}') from None
  debugger = factory(config)
  if debugger is not None and not callable(debugger):
    raise ValueError(f'--debugger {spec!r} returned {type(debugger).__name__}, not a callable')
  return debugger


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  config = _CONFIG.value
  if config is None:
    _fail('--config is required (a discovery config with an `engineer` section)')
  from aira_jax.discovery.engineer import Engineer, settings_from_config  # pylint: disable=import-outside-toplevel
  from aira_jax.discovery.store import ExperimentStore  # pylint: disable=import-outside-toplevel
  try:
    settings = settings_from_config(config)
    debugger = load_debugger(_DEBUGGER.value, config)
    store = ExperimentStore(_STORE.value)
  except (ValueError, TypeError, FileNotFoundError) as e:
    _fail(f'{type(e).__name__}: {e}')
  worker_id = _WORKER_ID.value or f'{socket.gethostname()}-{os.getpid()}'
  stop = threading.Event()

  def on_signal(signum, _frame):
    logging.warning('worker %s: %s received, stopping', worker_id, signal.Signals(signum).name)
    stop.set()

  signal.signal(signal.SIGTERM, on_signal)
  signal.signal(signal.SIGINT, on_signal)
  engineer = Engineer(store, settings, worker_id=worker_id, debugger=debugger)
  logging.info('worker %s on %s (scale %s, seeds %s)', worker_id, store.url, settings.scale or 'any',
               list(settings.seeds))
  try:
    done = engineer.work(stop=stop, max_experiments=_MAX.value or None, idle_exit=_IDLE_EXIT.value)
  finally:
    store.close()
  print(f'worker {worker_id}: recorded {done} experiment(s)' + (' (stopped)' if stop.is_set() else ''))


def run() -> None:
  app.run(main)


if __name__ == '__main__':
  run()
