"""The runtime guard for agent-written design programs, installed in a sandboxed child before the program runs.

An audit hook refuses open / socket / subprocess / os.system / exec / fork / thread creation events while the
program's code (compiled with a filename '<design:NAME>') is on the call stack, and an `__import__` wrapper applies
the import allow-list of `aira_jax.discovery.policy` to the program's own imports. Once installed it cannot be
removed, so it only ever runs in a throwaway child process. The static check (`policy.check_source`) runs first,
in the parent; this guard catches what slips past it at run time.
"""
from __future__ import annotations

import builtins
import os
import sys
from collections.abc import Iterable

from aira_jax.discovery.policy import (ALLOWED_HINT, DESIGN_FILENAME_PREFIX, FORBIDDEN_ATTRS, module_allowed,
                                       path_forbidden)

# Audit events refused whenever the program's code is anywhere on the call stack.
_DENY_PREFIXES = (
    'subprocess.', 'os.system', 'os.exec', 'os.posix_spawn', 'os.spawn', 'os.fork', 'os.forkpty', 'os.kill',
    'os.killpg', 'os.remove', 'os.unlink', 'os.rename', 'os.rmdir', 'os.mkdir', 'os.chmod', 'os.chown',
    'os.lchown', 'os.truncate', 'os.symlink', 'os.link', 'os.utime', 'os.listdir', 'os.scandir', 'os.chdir',
    'os.putenv', 'os.unsetenv', 'os.chflags', 'os.startfile', 'os.add_dll_directory', 'pty.', 'socket.',
    'ctypes.', '_thread.start_new_thread', 'shutil.', 'urllib.', 'http.client.', 'ftplib.', 'smtplib.',
    'poplib.', 'imaplib.', 'nntplib.', 'telnetlib.', 'webbrowser.', 'sqlite3.', 'mmap.', 'resource.setrlimit',
    'resource.prlimit', 'glob.', 'tempfile.', 'signal.', 'sys.settrace', 'sys.setprofile', 'sys._current_frames',
    'pickle.', 'code.__new__', 'function.__new__', 'cpython.remote_debugger_script')
# Refused only when the program itself is the direct caller: libraries legitimately use them (dataclasses
# execs generated code, frames are read for tracebacks).
_DIRECT_DENY = ('exec', 'compile', 'object.__getattr__', 'object.__setattr__', 'object.__delattr__')
# Frames of machinery that may read files on the program's behalf (lazy imports, source lines for tracebacks).
_TRUSTED_READERS = ('importlib', 'zipimport', 'linecache', 'tokenize', 'traceback')
# Directory listings the import machinery makes while it looks for a module (a namespace package, a lazy import
# of a library's submodule): allowed like its reads, inside the library roots only.
_LISTINGS = ('os.listdir', 'os.scandir')
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class PolicyError(PermissionError):
  """Raised inside the child when the program attempts something the policy forbids."""


def _is_program(frame) -> bool:
  # The loader sets the program module's __file__ to '<design:NAME>'. f_globals, unlike f_code, raises no audit
  # event, so the hook never re-enters itself.
  file = frame.f_globals.get('__file__')
  return isinstance(file, str) and file.startswith(DESIGN_FILENAME_PREFIX)


def _library_roots() -> tuple[str, ...]:
  """Directories lazy imports and traceback formatting may read from: the interpreter, site-packages, sys.path."""
  roots = {sys.prefix, sys.base_prefix, sys.exec_prefix}
  roots.update(p for p in sys.path if p and os.path.isabs(p))
  return tuple(os.path.join(os.path.realpath(r), '') for r in roots if r)


def _read_only(args: tuple) -> bool:
  mode = args[1] if len(args) > 1 else None
  flags = args[2] if len(args) > 2 else 0
  if isinstance(mode, str):
    return not any(c in mode for c in 'wax+')
  return not (isinstance(flags, int) and flags & _WRITE_FLAGS)


class RuntimeGuard:
  """Installs the audit hook and import wrapper once per process; records every refused attempt."""

  _installed: 'RuntimeGuard | None' = None

  def __init__(self):
    self.violations: list[str] = []
    self._real_import = builtins.__import__
    self._library_roots = _library_roots()

  @classmethod
  def install(cls) -> 'RuntimeGuard':
    """Idempotent: the audit hook is permanent, so a second install would only double the checks."""
    if cls._installed is None:
      # The backend's Pallas kernels are imported lazily by the first op that runs, which is inside the program's
      # code: under the guard that import (its file reads, directory scans, a GPU probe) would be refused and
      # every design would fail on a GPU or TPU. Import them now, while nothing is refused.
      from aira_jax.ops import dispatch  # pylint: disable=import-outside-toplevel
      dispatch.preload_kernels()
      guard = cls()
      sys.addaudithook(guard._audit)
      builtins.__import__ = guard._import
      cls._installed = guard
    return cls._installed

  def drain(self) -> list[str]:
    """The violations recorded since the last drain (a program may catch the PolicyError we raised)."""
    out, self.violations = self.violations, []
    return out

  def _refuse(self, what: str) -> None:
    self.violations.append(what)
    raise PolicyError(f'design program policy: {what} is not allowed (no files, network, processes or threads)')

  def _audit(self, event: str, args: tuple) -> None:
    # Fast path first: most events (sys._getframe, object.__getattr__ from libraries...) pass untouched.
    if event == 'open':
      self._check_open(args)
    elif event in _LISTINGS:
      self._check_open((args[0] if args else None, 'r'), event)
    elif event.startswith(_DENY_PREFIXES):
      if self._program_on_stack():
        self._refuse(f'{event}{_brief(args)}')
    elif event in _DIRECT_DENY:
      frame = sys._getframe(1)
      if frame is not None and _is_program(frame):
        self._refuse(f'{event}{_brief(args)}')

  def _program_on_stack(self) -> bool:
    frame = sys._getframe(2)
    while frame is not None:
      if _is_program(frame):
        return True
      frame = frame.f_back
    return False

  def _check_open(self, args: tuple, event: str = 'open') -> None:
    frame = sys._getframe(2)
    trusted = False
    while frame is not None:
      if _is_program(frame):
        if trusted and _read_only(args) and self._in_library(args[0] if args else None):
          return
        self._refuse(f'{event}({args[0]!r})' if args and args[0] is not None else event)
      module = frame.f_globals.get('__name__', '') or ''
      if module.startswith(_TRUSTED_READERS) or module.startswith('_frozen_importlib'):
        trusted = True
      frame = frame.f_back

  def _in_library(self, path) -> bool:
    if isinstance(path, bytes):
      path = os.fsdecode(path)
    if not isinstance(path, str):
      return False  # a file descriptor or an odd object: refuse
    return os.path.realpath(path).startswith(self._library_roots)

  def _import(self, name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002 (builtins signature)
    caller = sys._getframe(1)
    if _is_program(caller):
      if level:
        self._refuse(f'relative import of {name!r}')
      if name == 'aira_jax':
        bad = [n for n in (fromlist or ('aira_jax',)) if n != 'ops']
        why = f'importing {bad} from aira_jax ({ALLOWED_HINT})' if bad else None
      else:
        why = module_allowed(name)
      if why is None and fromlist and name not in ('aira_jax', 'aira_jax.ops'):
        bad = [n for n in fromlist if n.startswith('_') or path_forbidden(f'{name}.{n}') or n in FORBIDDEN_ATTRS]
        why = f'importing {bad} from {name}' if bad else None
      if why is not None:
        self._refuse(f'import {name!r} ({why})')
    return self._real_import(name, globals, locals, fromlist, level)


def _brief(args: Iterable) -> str:
  text = repr(tuple(args))
  return text if len(text) < 120 else text[:117] + '...'
