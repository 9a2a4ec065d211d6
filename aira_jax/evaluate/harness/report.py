"""Result tables (markdown, as lm-eval prints them) and JSON files."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from aira_jax.evaluate.harness.runner import HarnessResult


def _fmt(v: Any) -> str:
  if v is None:
    return ''
  if isinstance(v, float):
    if math.isnan(v) or math.isinf(v):
      return str(v)
    return f'{v:.4f}' if abs(v) < 1e4 else f'{v:.4g}'
  return str(v)


def format_table(result: HarnessResult) -> str:
  rows = ['| task | group | n | metric | value | stderr |', '|---|---|---:|---|---:|---:|']
  for name, r in result.tasks.items():
    group = 'held-out' if name in result.held_out_tasks else 'fitness'
    for i, m in enumerate(r.metrics):
      arrow = '↑' if r.higher_is_better.get(m, True) else '↓'
      rows.append(f'| {name if i == 0 else ""} | {group if i == 0 else ""} | {r.num_docs if i == 0 else ""} '
                  f'| {m} {arrow} | {_fmt(r.metrics[m])} | {_fmt(r.stderr.get(m))} |')
  t = result.timing
  rows.append('')
  rows.append(f"{t['docs']} docs, {t['rows']} forward rows, {t['scored_tokens']} tokens in "
              f"{t['total_seconds']:.1f} s ({t['docs_per_second']:.1f} docs/s; scoring {t['score_seconds']:.1f} s)")
  return '\n'.join(rows)


def write_json(result: HarnessResult | dict, path: str | os.PathLike, extra: dict | None = None) -> Path:
  """Writes the result (plus `extra` top-level fields) atomically."""
  data = result.to_dict() if isinstance(result, HarnessResult) else dict(result)
  if extra:
    data.update(extra)
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(json.dumps(data, indent=2, default=str), encoding='utf-8')
  os.replace(tmp, path)
  return path
