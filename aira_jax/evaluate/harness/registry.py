"""Task registry: `@register_task` on a Task subclass makes it available by name everywhere.

A new task is one small file (see tasks/arc.py); built-in tasks register on import of the tasks package, a
user's file through `load_task_module(path)` (the CLI's --task_modules).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TypeVar

from aira_jax.evaluate.harness.task import Task

_REGISTRY: dict[str, type[Task]] = {}
T = TypeVar('T', bound=type)


def register_task(cls: T) -> T:
  """Class decorator: registers `cls` under cls.name (re-registering the same name replaces it)."""
  if not isinstance(cls, type) or not issubclass(cls, Task):
    raise TypeError(f'register_task expects a Task subclass, got {cls!r}')
  if not cls.name:
    raise ValueError(f'task class {cls.__name__} has no name')
  _REGISTRY[cls.name] = cls
  return cls


def _ensure_builtins() -> None:
  import aira_jax.evaluate.harness.tasks  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import


def task_names() -> list[str]:
  _ensure_builtins()
  return sorted(_REGISTRY)


def get_task(name: str) -> Task:
  """A fresh instance of the registered task `name`."""
  _ensure_builtins()
  if name not in _REGISTRY:
    raise ValueError(f"unknown task '{name}'; registered tasks: {', '.join(sorted(_REGISTRY))}")
  return _REGISTRY[name]()


def load_task_module(path: str | Path) -> None:
  """Imports a Python file that defines and registers tasks."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'task module {path} does not exist')
  module_name = f'aira_user_tasks_{abs(hash(str(path.resolve())))}'
  spec = importlib.util.spec_from_file_location(module_name, path)
  if spec is None or spec.loader is None:
    raise ImportError(f'cannot import task module {path}')
  module = importlib.util.module_from_spec(spec)
  sys.modules[module_name] = module
  spec.loader.exec_module(module)
