"""How a training run failed: the kinds, the loss watch that spots NaN and divergence, and the failure text.

Every failed experiment's reason starts with its kind and a colon ('nan: ...', 'oom: ...'), so the loop and the
Researcher can read the kind without parsing further; the diagnostics (last metrics, stderr tail, ...) follow as
JSON after a marker line and come back with `parse_failure_reason`.

Kinds:
  crash      the program raised (in init, tracing or a step); goes to the Debugger when one is attached
  nan        the training loss (or the final validation loss) was not finite
  divergence the training loss rose far above the best seen so far and stayed there
  oom        out of memory: over the worker's memory limit, XLA's RESOURCE_EXHAUSTED, or the OS OOM killer
  timeout    the run took longer than the hard limit
  policy     the program attempted an operation the design-program policy forbids (files, processes, ...)
  config     the training config or an experiment override is invalid (not the program's fault)
  attempts   the experiment was claimed too many times without finishing (workers died or lost the lease)
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

CRASH, NAN, DIVERGENCE, OOM, TIMEOUT, POLICY, CONFIG, ATTEMPTS = (
    'crash', 'nan', 'divergence', 'oom', 'timeout', 'policy', 'config', 'attempts')
KINDS = (CRASH, NAN, DIVERGENCE, OOM, TIMEOUT, POLICY, CONFIG, ATTEMPTS)
DEBUGGABLE = frozenset({CRASH})  # kinds a Debugger may fix by rewriting the program

DIAGNOSTICS_MARKER = '\n--- diagnostics (json) ---\n'
MAX_REASON_MESSAGE = 4000
_OOM_PATTERNS = re.compile(
    r'RESOURCE_EXHAUSTED|out of memory|Out of memory|OutOfMemory|std::bad_alloc|MemoryError|'
    r'Cannot allocate memory|failed to allocate', re.IGNORECASE)


@dataclasses.dataclass
class Failure:
  """A classified failure: its kind, one message for people and agents, and the diagnostics behind it."""
  kind: str
  message: str
  diagnostics: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'unknown failure kind {self.kind!r}; expected one of {KINDS}')

  @property
  def debuggable(self) -> bool:
    return self.kind in DEBUGGABLE

  def reason(self) -> str:
    """The experiment's reason text: '<kind>: <message>' then the diagnostics as JSON."""
    message = self.message.strip() or '(no message)'
    if len(message) > MAX_REASON_MESSAGE:
      message = message[:MAX_REASON_MESSAGE] + ' ...'
    return f'{self.kind}: {message}{DIAGNOSTICS_MARKER}{json.dumps(jsonable(self.diagnostics), sort_keys=True)}'


def parse_failure_reason(reason: str) -> Failure | None:
  """The Failure a failed experiment's reason was written from; None when the text is not in that form."""
  head, _, tail = (reason or '').partition(DIAGNOSTICS_MARKER)
  kind, sep, message = head.partition(': ')
  if not sep or kind not in KINDS:
    return None
  try:
    diagnostics = json.loads(tail) if tail else {}
  except ValueError:
    diagnostics = {'unparsed': tail}
  return Failure(kind, message, diagnostics if isinstance(diagnostics, dict) else {'value': diagnostics})


def classify_exception(exc_type: str, message: str, traceback_text: str = '') -> str:
  """The kind of an exception raised in the training child (by type name and text, across the process gap)."""
  text = f'{exc_type}: {message}\n{traceback_text}'
  if exc_type == 'MemoryError' or _OOM_PATTERNS.search(f'{exc_type}: {message}'):
    return OOM
  if exc_type == 'PolicyError' or 'design program policy:' in text:
    return POLICY
  if exc_type in ('ConfigError', 'ConfigOverrideError'):
    return CONFIG
  return CRASH


class LossWatch:
  """Watches the logged training losses of one run: non-finite -> 'nan'; above factor x best -> 'divergence'.

  Divergence needs `patience` consecutive logged points above `factor` times the lowest loss seen before them,
  so one noisy spike does not end a run. factor <= 0 turns the divergence check off.
  """

  def __init__(self, factor: float = 3.0, patience: int = 2):
    if patience < 1:
      raise ValueError(f'divergence patience must be >= 1, got {patience}')
    self.factor, self.patience = float(factor), int(patience)
    self.best: float | None = None
    self.above = 0
    self.last: dict[str, Any] | None = None

  def update(self, step: int, loss: Any, record: dict[str, Any] | None = None) -> Failure | None:
    self.last = dict(record or {'step': step, 'loss': loss})
    value = as_float(loss)
    if value is None or not math.isfinite(value):
      return Failure(NAN, f'training loss became {loss} at step {step}', {'step': step})
    if self.factor > 0 and self.best is not None and value > self.factor * self.best:
      self.above += 1
      if self.above >= self.patience:
        return Failure(DIVERGENCE, f'training loss diverged: {value:.4g} at step {step} is more than '
                       f'{self.factor:g}x the best loss so far ({self.best:.4g}) for {self.above} logged steps',
                       {'step': step, 'loss': value, 'best_loss': self.best})
    else:
      self.above = 0
    self.best = value if self.best is None else min(self.best, value)
    return None


def as_float(value: Any) -> float | None:
  """A logged value as a float: the metrics JSONL writes non-finite numbers as the strings 'nan' / 'inf'."""
  if isinstance(value, bool) or value is None:
    return None
  if isinstance(value, (int, float)):
    return float(value)
  if isinstance(value, str):
    try:
      return float(value)
    except ValueError:
      return None
  return None


def jsonable(value: Any) -> Any:
  """JSON-safe copy: non-finite floats become strings, unknown objects their repr."""
  if isinstance(value, dict):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, float):
    return value if math.isfinite(value) else str(value)
  if value is None or isinstance(value, (bool, int, str)):
    return value
  return repr(value)
