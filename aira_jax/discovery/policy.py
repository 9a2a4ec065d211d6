"""The import and capability policy for agent-written design programs: a static check and a runtime guard.

A design program may import jax, flax, einops, numpy, math, functools, typing, dataclasses and `aira_jax.ops`,
and may not touch files, the network, processes or threads. Two layers enforce this:

* `check_source` (static, ast): forbidden imports, builtins (open, exec, eval, ...), dunder escapes
  (__subclasses__, __globals__, ...), getattr tricks, module attributes that lead to the OS (typing.sys,
  numpy.load, jax.config, ...) and monkeypatching of imported modules. Pure Python, no JAX: the parent runs it.
* `aira_jax.discovery.runtime_guard.RuntimeGuard` (in the sandboxed child): an audit hook and an `__import__`
  wrapper that refuse the same things at run time, using the allow-list defined here.
"""
from __future__ import annotations

import ast
import dataclasses
import re

DESIGN_FILENAME_PREFIX = '<design:'
ALLOWED_MODULES = frozenset({'jax', 'flax', 'einops', 'numpy', 'math', 'functools', 'typing', 'dataclasses'})
ALLOWED_HINT = ('allowed imports: jax, flax, einops, numpy, math, functools, typing, dataclasses and '
                '`from aira_jax import ops`')
MAX_SOURCE_CHARS = 200_000

# Builtins that read files, run code, open a debugger or reach the interpreter's namespaces.
FORBIDDEN_NAMES = {
    'open': 'design programs may not access files',
    'exec': 'design programs may not run generated code',
    'eval': 'design programs may not run generated code',
    'compile': 'design programs may not compile code',
    '__import__': f'import only through import statements; {ALLOWED_HINT}',
    'input': 'design programs may not read standard input',
    'breakpoint': 'design programs may not start a debugger',
    'globals': 'namespace access is an escape route',
    'locals': 'namespace access is an escape route',
    'vars': 'namespace access is an escape route',
    'help': 'help() may start a pager process',
    'exit': 'design programs may not exit the process',
    'quit': 'design programs may not exit the process',
    'copyright': 'not available to design programs',
    'credits': 'not available to design programs',
    'license': 'not available to design programs',
    'memoryview': 'raw memory access is not available to design programs',
}
# Builtins that are harmless inside the sandbox (stdin is /dev/null, SystemExit is caught) and plausible variable
# names: a program that binds the name itself (`def f(self, input):`) may use it.
SHADOWABLE = frozenset({'input', 'help', 'exit', 'quit', 'copyright', 'credits', 'license'})
ATTR_FUNCS = ('getattr', 'setattr', 'delattr')  # hasattr only reads a bool: allowed
ALLOWED_DUNDERS = frozenset({'__init__', '__call__', '__name__', '__doc__', '__len__', '__getitem__',
                             '__post_init__', '__future__'})
# Attribute names that are (or lead to) modules with OS access; allowed modules re-export some (typing.sys).
FORBIDDEN_ATTRS = frozenset({
    'sys', 'os', 'posix', 'subprocess', 'socket', 'builtins', 'importlib', 'ctypes', 'shutil', 'pathlib', 'io',
    'threading', '_thread', 'multiprocessing', 'signal', 'pickle', 'marshal', 'inspect', 'gc', 'tempfile',
    'glob', 'urllib', 'http', 'resource', 'platform', 'copyreg', 'pty', 'mmap', 'operator', 'warnings',
    'tofile', 'fromfile', 'memmap', 'ctypeslib', 'f2py', 'distutils', 'system', 'popen'})
# Module paths (after alias resolution) that do I/O, serialise, reconfigure JAX or load native code.
FORBIDDEN_MODULE_PATHS = (
    'jax.config', 'jax.profiler', 'jax.ffi', 'jax.extend', 'jax.lib', 'jax.distributed', 'jax.dlpack',
    'jax.monitoring', 'jax.experimental.compilation_cache', 'jax.experimental.serialize_executable',
    'jax.experimental.jax2tf', 'numpy.lib', 'numpy.testing', 'numpy.ma.mrecords', 'flax.training',
    'flax.serialization')
IO_FUNCTIONS = frozenset({'load', 'save', 'savez', 'savez_compressed', 'savetxt', 'loadtxt', 'genfromtxt',
                          'fromregex', 'DataSource'})
_FORMAT_ESCAPE = re.compile(r'\{[^{}]*(\.|\[)\s*_')  # '{0.__globals__}'.format(f) reads attributes


@dataclasses.dataclass(frozen=True)
class PolicyViolation:
  """One broken rule: the line, what was found and what to do instead."""
  lineno: int
  what: str
  why: str

  def __str__(self) -> str:
    return f'line {self.lineno}: {self.what} ({self.why})'


def module_allowed(module: str) -> str | None:
  """None when `module` may be imported, else why not (shared with the runtime guard)."""
  parts = module.split('.')
  if parts[0] == 'aira_jax':
    if module == 'aira_jax.ops':
      return None
    return f'only `aira_jax.ops` may be imported from the project; {ALLOWED_HINT}'
  if parts[0] not in ALLOWED_MODULES:
    return f'`{parts[0]}` is not an allowed import; {ALLOWED_HINT}'
  if any(p.startswith('_') for p in parts[1:]):
    return 'private modules are not allowed; use the public API'
  if path_forbidden(module) or any(p in FORBIDDEN_ATTRS for p in parts[1:]):
    return 'this module does I/O, loads native code or reconfigures JAX'
  return None


def path_forbidden(path: str) -> bool:
  return any(path == p or path.startswith(p + '.') for p in FORBIDDEN_MODULE_PATHS)


class _Checker(ast.NodeVisitor):
  """Collects PolicyViolations; tracks aliases bound to modules so `np.load` resolves to numpy.load."""

  def __init__(self, bound: set[str] | None = None):
    self.violations: list[PolicyViolation] = []
    self.module_aliases: dict[str, str] = {}
    self._checked_calls: set[int] = set()
    self._bound = bound or set()

  def _bad(self, node: ast.AST, what: str, why: str) -> None:
    self.violations.append(PolicyViolation(getattr(node, 'lineno', 0), what, why))

  # Imports.
  def visit_Import(self, node: ast.Import) -> None:
    for alias in node.names:
      why = module_allowed(alias.name)
      if why:
        self._bad(node, f'`import {alias.name}`', why)
      elif alias.name == 'aira_jax.ops' and not alias.asname:
        self._bad(node, '`import aira_jax.ops`', 'binds the whole `aira_jax` package; write `from aira_jax import ops`')
      elif alias.asname:
        self.module_aliases[alias.asname] = alias.name
      else:
        self.module_aliases[alias.name.split('.')[0]] = alias.name.split('.')[0]

  def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
    module = node.module or ''
    if node.level:
      self._bad(node, 'a relative import', f'design programs are single files; {ALLOWED_HINT}')
      return
    if module == '__future__':
      return
    for alias in node.names:
      if alias.name == '*':
        self._bad(node, f'`from {module} import *`', 'import names explicitly')
        continue
      full = f'{module}.{alias.name}'
      if module == 'aira_jax':
        why = None if alias.name == 'ops' else f'only `ops` may be imported from aira_jax; {ALLOWED_HINT}'
      elif module == 'aira_jax.ops':
        why = None if not alias.name.startswith('_') and alias.name != 'dispatch' else 'not part of the ops API'
      else:
        why = module_allowed(module)
        if why is None and (alias.name.startswith('_') or path_forbidden(full) or alias.name in FORBIDDEN_ATTRS
                            or alias.name in IO_FUNCTIONS):
          why = 'this name does I/O, reaches the OS or is private'
      if why:
        self._bad(node, f'`from {module} import {alias.name}`', why)
      else:
        self.module_aliases[alias.asname or alias.name] = full

  # Names and attributes.
  def visit_Name(self, node: ast.Name) -> None:
    name = node.id
    if name in FORBIDDEN_NAMES and not (name in SHADOWABLE and name in self._bound):
      self._bad(node, f'`{name}`', FORBIDDEN_NAMES[name] + '; rename the variable if it is yours')
    elif name.startswith('__') and name.endswith('__') and name not in ALLOWED_DUNDERS:
      self._bad(node, f'`{name}`', 'dunder names are escape routes out of the sandbox')
    elif name in ATTR_FUNCS and id(node) not in self._checked_calls:
      self._bad(node, f'`{name}` used as a value', f'call {name}(obj, "name") directly with a literal name')

  def _dotted(self, node: ast.AST) -> str | None:
    """'numpy.lib.format' for `np.lib.format` when the root is a module alias, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
      parts.append(node.attr)
      node = node.value
    if isinstance(node, ast.Name) and node.id in self.module_aliases:
      return '.'.join([self.module_aliases[node.id], *reversed(parts)])
    return None

  def visit_Attribute(self, node: ast.Attribute) -> None:
    attr = node.attr
    if attr.startswith('__') and attr.endswith('__') and attr not in ALLOWED_DUNDERS:
      self._bad(node, f'`.{attr}`', 'dunder attributes are escape routes out of the sandbox')
    elif attr in FORBIDDEN_ATTRS and not _rooted_at_self(node):
      self._bad(node, f'`.{attr}`', 'leads to the OS, files or interpreter internals')
    else:
      path = self._dotted(node)
      if path is not None:
        if any(p.startswith('_') for p in path.split('.')[1:]):
          self._bad(node, f'`{path}`', 'private module attributes are not allowed; use the public API')
        elif path_forbidden(path) or attr in IO_FUNCTIONS:
          self._bad(node, f'`{path}`', 'does file I/O, loads native code or reconfigures JAX')
        elif isinstance(node.ctx, (ast.Store, ast.Del)):
          self._bad(node, f'assignment to `{path}`', 'design programs may not patch imported modules')
    self.generic_visit(node)

  def visit_Call(self, node: ast.Call) -> None:
    func = node.func
    if isinstance(func, ast.Name) and func.id in ATTR_FUNCS:
      self._checked_calls.add(id(func))
      name_arg = node.args[1] if len(node.args) > 1 else None
      if name_arg is None or not _literal_attr_name(name_arg):
        self._bad(node, f'`{func.id}` with a computed attribute name',
                  "use a string literal, or an f-string that starts with a letter (f'layer_{i}')")
      elif isinstance(name_arg, ast.Constant) and (name_arg.value in FORBIDDEN_ATTRS or
                                                   name_arg.value.startswith('__')):
        self._bad(node, f'`{func.id}(..., {name_arg.value!r})`', 'leads to the OS or interpreter internals')
      if len(node.args) > 0 and isinstance(node.args[0], ast.Name) and node.args[0].id in self.module_aliases \
          and func.id in ('setattr', 'delattr'):
        self._bad(node, f'`{func.id}` on module `{node.args[0].id}`', 'design programs may not patch modules')
    self.generic_visit(node)

  def visit_Constant(self, node: ast.Constant) -> None:
    if isinstance(node.value, str) and _FORMAT_ESCAPE.search(node.value):
      self._bad(node, 'a format string that reads private attributes', 'format fields may not access _names')

  def visit_MatchClass(self, node: ast.MatchClass) -> None:
    for attr in node.kwd_attrs:
      if attr.startswith('_'):
        self._bad(node, f'class pattern on `{attr}`', 'private attributes are not available to design programs')
    self.generic_visit(node)

  def visit_Global(self, node: ast.Global) -> None:
    for name in node.names:
      if name in FORBIDDEN_NAMES or name.startswith('__'):
        self._bad(node, f'`global {name}`', 'rebinding builtins is not allowed')


def _rooted_at_self(node: ast.Attribute) -> bool:
  """`self.signal` or `self.a.io`: the program's own attributes may use any non-dunder name."""
  while isinstance(node, ast.Attribute):
    node = node.value
  return isinstance(node, ast.Name) and node.id in ('self', 'cls')


def _bound_names(tree: ast.AST) -> set[str]:
  """Names the program binds itself: parameters, assignment / loop / with targets, defs."""
  bound = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.arg):
      bound.add(node.arg)
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
      bound.add(node.id)
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      bound.add(node.name)
  return bound


def _literal_attr_name(node: ast.AST) -> bool:
  """A str literal, or an f-string whose first part is a literal starting with a letter (never a dunder)."""
  if isinstance(node, ast.Constant):
    return isinstance(node.value, str)
  if isinstance(node, ast.JoinedStr) and node.values:
    first = node.values[0]
    return isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value[:1].isalpha()
  return False


def check_source(source: str) -> list[PolicyViolation]:
  """The static policy: all violations in `source` (empty when it passes). Never executes the source."""
  if not isinstance(source, str):
    return [PolicyViolation(0, f'source of type {type(source).__name__}', 'a design program is Python text')]
  if len(source) > MAX_SOURCE_CHARS:
    return [PolicyViolation(0, f'{len(source)} characters', f'design programs are limited to {MAX_SOURCE_CHARS}')]
  try:
    tree = ast.parse(source)
  except SyntaxError as e:
    return [PolicyViolation(e.lineno or 0, f'syntax error: {e.msg}', 'fix the Python syntax')]
  except (RecursionError, MemoryError, ValueError) as e:
    return [PolicyViolation(0, f'unparsable source ({type(e).__name__})', 'simplify deeply nested expressions')]
  checker = _Checker(_bound_names(tree))
  try:
    checker.visit(tree)
  except RecursionError:
    return [PolicyViolation(0, 'nesting too deep to check', 'simplify deeply nested expressions')]
  return sorted(checker.violations, key=lambda v: v.lineno)


def policy_reason(violations: list[PolicyViolation], limit: int = 8) -> str:
  """The static gate's rejection text: every violation (up to `limit`) with what to do instead."""
  listed = '; '.join(str(v) for v in violations[:limit])
  more = f' (+{len(violations) - limit} more)' if len(violations) > limit else ''
  return (f'the program breaks the design-program policy: {listed}{more}. Design programs may only compute: no '
          f'files, network, processes, threads or interpreter internals.')
