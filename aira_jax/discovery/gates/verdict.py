"""Verdicts: what one gate, and a whole check, say about a design program.

Plain dataclasses that round-trip through JSON: the sandboxed child sends them to the parent as JSON lines.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any


@dataclasses.dataclass
class GateVerdict:
  """One gate's answer: ok, which gate, an actionable reason (empty when ok) and measurements."""
  ok: bool
  gate: str
  reason: str = ''
  details: dict[str, Any] = dataclasses.field(default_factory=dict)
  seconds: float = 0.0

  def to_dict(self) -> dict[str, Any]:
    return {'ok': self.ok, 'gate': self.gate, 'reason': self.reason, 'details': _jsonable(self.details),
            'seconds': round(self.seconds, 3)}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> 'GateVerdict':
    return cls(ok=bool(d['ok']), gate=str(d['gate']), reason=str(d.get('reason', '')),
               details=dict(d.get('details') or {}), seconds=float(d.get('seconds', 0.0)))


@dataclasses.dataclass
class Verdict:
  """A whole check: ok, the failing gate (None when accepted), its reason, and every gate that ran."""
  ok: bool
  gate: str | None
  reason: str
  details: dict[str, Any] = dataclasses.field(default_factory=dict)
  gates: list[GateVerdict] = dataclasses.field(default_factory=list)
  seconds: float = 0.0

  @classmethod
  def from_gates(cls, gates: list[GateVerdict], seconds: float = 0.0) -> 'Verdict':
    failed = next((g for g in gates if not g.ok), None)
    details = {}
    for g in gates:  # facts later stages use, surfaced at the top level
      for key in ('mlp_hidden', 'total_params', 'target_params', 'cost_exponent'):
        if key in g.details:
          details[key] = g.details[key]
    if failed is None:
      ran = ', '.join(g.gate for g in gates)
      return cls(True, None, f'accepted ({ran})', details, gates, seconds)
    details.update(failed.details)
    return cls(False, failed.gate, failed.reason, details, gates, seconds)

  @property
  def mlp_hidden(self) -> int | None:
    """The block MLP width the budget gate chose (auto_fit), if any."""
    return self.details.get('mlp_hidden')

  def to_dict(self) -> dict[str, Any]:
    return {'ok': self.ok, 'gate': self.gate, 'reason': self.reason, 'details': _jsonable(self.details),
            'gates': [g.to_dict() for g in self.gates], 'seconds': round(self.seconds, 3)}

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=False)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> 'Verdict':
    return cls(ok=bool(d['ok']), gate=d.get('gate'), reason=str(d.get('reason', '')),
               details=dict(d.get('details') or {}), gates=[GateVerdict.from_dict(g) for g in d.get('gates', [])],
               seconds=float(d.get('seconds', 0.0)))


def _jsonable(value: Any) -> Any:
  """Numbers from numpy/JAX and tuples made JSON-safe; non-finite floats become strings."""
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, bool) or value is None or isinstance(value, str):
    return value
  if isinstance(value, int):
    return value
  if hasattr(value, 'item') and getattr(value, 'ndim', 1) == 0:
    value = value.item()
  if isinstance(value, float):
    return value if math.isfinite(value) else str(value)
  if isinstance(value, int):
    return value
  return str(value)
