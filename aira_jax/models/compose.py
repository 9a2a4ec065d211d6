"""Compositions: a layer pattern over named primitives, each a pre-norm residual sublayer.

Pattern grammar (one string, so a whole hybrid is a single config value):
    pattern := item (',' item)*        item := atom ('*' N)?        atom := NAME | '(' pattern ')'
e.g. 'attention,mlp' or Jamba-like '((mamba2,mlp)*3,attention,mlp)*2'. A list of names is accepted too.

Primitives: 'attention' (RoPE softmax attention), 'swa' (sliding-window attention), 'mlp' (SwiGLU), 'mamba2',
'deltanet', 'gated_deltanet' (the baseline design programs), 'design' (the config's own design program) and
'design:<name>' (a design program looked up in a mapping of names to source).
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

from flax import nnx

MLP = 'mlp'
DESIGN = 'design'
DESIGN_PREFIX = 'design:'
DEFAULT_SWA_WINDOW = 512
# Mixer primitives -> (baseline program, default kwargs).
MIXER_PRIMITIVES: dict[str, tuple[str, dict[str, Any]]] = {
    'attention': ('attention', {}),
    'swa': ('attention', {'sliding_window': DEFAULT_SWA_WINDOW}),
    'mamba2': ('mamba2', {}),
    'deltanet': ('deltanet', {}),
    'gated_deltanet': ('gated_deltanet', {}),
}
PRIMITIVES: tuple[str, ...] = (*MIXER_PRIMITIVES, MLP)
# Passed to every mixer whose __init__ can take them; a program without **kwargs only gets those it names.
CONTEXT_KWARGS = ('init_std', 'out_init_std', 'norm_eps')
MAX_PATTERN_LENGTH = 4096

_TOKEN = re.compile(r'\s*(?:(?P<name>[A-Za-z0-9_.:\-]+)|(?P<sym>[(),*])|(?P<bad>\S))')


def _tokenize(pattern: str) -> list[str]:
  tokens = []
  for m in _TOKEN.finditer(pattern):
    if m.group('bad'):
      raise ValueError(f"pattern {pattern!r}: unexpected character {m.group('bad')!r} at {m.start('bad')}")
    tokens.append(m.group('name') or m.group('sym'))
  return tokens


class _Parser:
  """Recursive descent over the pattern grammar; expands repetitions."""

  def __init__(self, pattern: str):
    self.pattern = pattern
    self.tokens = _tokenize(pattern)
    self.pos = 0

  def _peek(self) -> str | None:
    return self.tokens[self.pos] if self.pos < len(self.tokens) else None

  def _fail(self, what: str):
    raise ValueError(f'pattern {self.pattern!r}: {what} (token {self.pos + 1})')

  def parse(self) -> list[str]:
    out = self._items()
    if self._peek() is not None:
      self._fail(f'unexpected {self._peek()!r}')
    return out

  def _items(self) -> list[str]:
    out = self._item()
    while self._peek() == ',':
      self.pos += 1
      out += self._item()
    return out

  def _item(self) -> list[str]:
    tok = self._peek()
    if tok == '(':
      self.pos += 1
      atom = self._items()
      if self._peek() != ')':
        self._fail("missing ')'")
      self.pos += 1
    elif tok is None or tok in '),*':
      self._fail(f'expected a primitive name, got {tok!r}' if tok else 'ends where a primitive name is expected')
    else:
      self.pos += 1
      atom = [tok]
    while self._peek() == '*':
      self.pos += 1
      count = self._peek()
      if count is None or not count.isdigit() or int(count) < 1:
        self._fail(f"'*' must be followed by a positive integer, got {count!r}")
      self.pos += 1
      atom = atom * int(count)
      if len(atom) > MAX_PATTERN_LENGTH:
        self._fail(f'expands to more than {MAX_PATTERN_LENGTH} sublayers')
    return atom


def parse_pattern(pattern: str | Sequence[str]) -> list[str]:
  """Expands a pattern into the list of sublayer primitive names (not yet checked against the known ones)."""
  if isinstance(pattern, str):
    names = _Parser(pattern).parse()
  else:
    names = [str(p).strip() for p in pattern]
  if not names:
    raise ValueError('pattern is empty')
  return names


def check_primitive(name: str, programs: Mapping[str, str]) -> None:
  """Raises a ValueError naming `name` when it is not a known primitive or registered design program."""
  if name in PRIMITIVES or name == DESIGN:
    return
  if name.startswith(DESIGN_PREFIX):
    key = name[len(DESIGN_PREFIX):]
    if key not in programs:
      known = ', '.join(sorted(programs)) or 'none given'
      raise ValueError(f"pattern names design program '{key}' but no source was given for it (programs: {known})")
    return
  raise ValueError(f"unknown primitive '{name}' in pattern; expected one of {', '.join(PRIMITIVES)}, "
                   f"'{DESIGN}' or '{DESIGN_PREFIX}<name>'")


def make_mixer(cls: type, kind: str, d_model: int, num_heads: int, kwargs: Mapping[str, Any],
               context: Mapping[str, Any], rngs: nnx.Rngs) -> nnx.Module:
  """Constructs a Mixer, passing `kwargs` (must be accepted) and the context kwargs it can take."""
  params = inspect.signature(cls.__init__).parameters
  var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
  unknown = [k for k in kwargs if k not in params and not var_kw]
  if unknown:
    raise ValueError(f"mixer '{kind}' does not accept keyword argument(s) {unknown}")
  full = {k: v for k, v in context.items() if var_kw or k in params}
  full.update(kwargs)
  return cls(d_model, num_heads, rngs=rngs, **full)
