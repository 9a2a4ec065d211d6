"""Loading design programs: a Python source text that defines `class Mixer(nnx.Module)`.

The loader compiles the text in a fresh module and checks the Mixer's shape of contract; it does not enforce
the import policy (the Checker's static gate does). Sources are registered with linecache so tracebacks from a
program show its lines, which the Debugger reads.
"""
from __future__ import annotations

import importlib.resources
import inspect
import itertools
import linecache
import sys
import traceback
import types

from flax import nnx

BASELINES: tuple[str, ...] = ('attention', 'deltanet', 'gated_deltanet', 'mamba2')

_counter = itertools.count()


class ProgramError(ValueError):
  """A design program that cannot be loaded; `lineno` is the offending line (None when not tied to one)."""

  def __init__(self, name: str, problem: str, lineno: int | None = None, line: str | None = None):
    where = f' at line {lineno}' if lineno else ''
    text = f"design program '{name}'{where}: {problem}"
    if line:
      text += f'\n    {line.strip()}'
    super().__init__(text)
    self.name, self.problem, self.lineno, self.line = name, problem, lineno, line


def baseline_source(name: str) -> str:
  """The source text of a baseline design program shipped with the package."""
  if name not in BASELINES:
    raise ValueError(f"unknown baseline '{name}'; expected one of {', '.join(BASELINES)}")
  # importlib.resources reads package data from a source tree, an installed wheel or a zip alike.
  return importlib.resources.files('aira_jax.models').joinpath('baselines', f'{name}.py').read_text('utf-8')


def _filename(name: str) -> str:
  return f'<design:{name}>'


def _error_line(exc: BaseException, filename: str) -> int | None:
  """The deepest traceback line that lies in the program itself."""
  lineno = None
  for frame in traceback.extract_tb(exc.__traceback__):
    if frame.filename == filename:
      lineno = frame.lineno
  return lineno


def _check_mixer(cls: object, name: str, source_lines: list[str]) -> type:
  if not isinstance(cls, type):
    raise ProgramError(name, f'`Mixer` must be a class, got {type(cls).__name__}')
  if not issubclass(cls, nnx.Module):
    raise ProgramError(name, '`Mixer` must subclass flax.nnx.Module')
  owner = next((c for c in cls.__mro__ if '__call__' in vars(c)), object)
  if owner is object or owner.__module__.startswith('flax.'):
    raise ProgramError(name, '`Mixer` must define __call__(self, x)')
  lineno = None
  try:
    lineno = inspect.getsourcelines(cls)[1]
  except (OSError, TypeError):
    pass
  line = source_lines[lineno - 1] if lineno and lineno <= len(source_lines) else None
  params = inspect.signature(cls.__init__).parameters
  positional = [p for p in params.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][1:]  # drop self
  if [p.name for p in positional[:2]] != ['d_model', 'num_heads'] or any(
      p.default is inspect.Parameter.empty for p in positional[2:]):
    raise ProgramError(name, 'Mixer.__init__ must be (self, d_model, num_heads, *, rngs, **kwargs)', lineno, line)
  has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
  if 'rngs' not in params and not has_var_kw:
    raise ProgramError(name, 'Mixer.__init__ must take the keyword argument rngs', lineno, line)
  call_params = [p for p in inspect.signature(cls.__call__).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][1:]
  if not call_params or any(p.default is inspect.Parameter.empty for p in call_params[1:]):
    raise ProgramError(name, 'Mixer.__call__ must take exactly one required argument x', lineno, line)
  return cls


def load_program(source: str, name: str) -> type:
  """Compiles `source` in a fresh module and returns its `Mixer` class.

  Raises ProgramError (a ValueError) naming the problem and the line: a syntax error, an exception while the
  module runs (e.g. a failed import), no `Mixer`, or a `Mixer` that breaks the contract's signature.
  """
  if not isinstance(source, str):
    raise ProgramError(name, f'source must be a str, got {type(source).__name__}')
  filename = _filename(name)
  lines = source.splitlines(keepends=True)
  try:
    code = compile(source, filename, 'exec', dont_inherit=True)
  except SyntaxError as e:
    raise ProgramError(name, f'syntax error: {e.msg}', e.lineno, e.text) from e
  linecache.cache[filename] = (len(source), None, lines, filename)
  module_name = f'aira_jax_design_{next(_counter)}'
  module = types.ModuleType(module_name)
  module.__file__ = filename
  # Registered so dataclasses, pickling and inspect resolve the program's own names.
  sys.modules[module_name] = module
  try:
    exec(code, module.__dict__)  # pylint: disable=exec-used
  except Exception as e:  # any failure while the module body runs is the program's
    sys.modules.pop(module_name, None)
    lineno = _error_line(e, filename)
    line = lines[lineno - 1] if lineno and lineno <= len(lines) else None
    raise ProgramError(name, f'failed while loading: {type(e).__name__}: {e}', lineno, line) from e
  if 'Mixer' not in module.__dict__:
    sys.modules.pop(module_name, None)
    raise ProgramError(name, 'defines no `Mixer` class')
  try:
    return _check_mixer(module.__dict__['Mixer'], name, lines)
  except ProgramError:
    sys.modules.pop(module_name, None)
    raise
