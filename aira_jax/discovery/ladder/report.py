"""The ladder's report: per-rung tables, the scaling-law fits, the "X% faster" table; ladder.md and ladder.json.

    print(report.format_table())
    report.write(workdir)          # -> ladder.md, ladder.json (the plot, if any, is already in workdir)
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

from aira_jax.discovery.ladder.scaling import PowerLawFit, Speedup


@dataclasses.dataclass(frozen=True)
class DesignRow:
  """One design at one rung."""
  design: str
  baseline: bool
  state: str  # trained | failed | pending | missing
  experiment_id: int | None = None
  params: int | None = None  # total parameters
  n: int | None = None  # parameters on the report's basis (the N of C = 6ND)
  tokens: int | None = None  # trained (or planned) tokens
  steps: int | None = None
  val_loss: float | None = None  # mean over seeds
  val_loss_sd: float | None = None
  seeds: tuple[int, ...] = ()
  delta: float | None = None  # L_base - L (> 0: better)
  delta_sigma: float | None = None
  promoted: bool = False
  reused: bool = False  # the result was already in the store (not trained by this call)
  note: str = ''


@dataclasses.dataclass(frozen=True)
class RungReport:
  name: str
  rows: tuple[DesignRow, ...] = ()
  noise_floor: float | None = None
  noise_source: str = ''
  promoted: tuple[str, ...] = ()
  trained_now: int = 0  # experiments recorded (trained or failed) by this call's Engineer
  skipped: str = ''  # why the rung did not run ('' when it did)


@dataclasses.dataclass(frozen=True)
class ArchFit:
  arch: str
  fit: PowerLawFit
  points: tuple[tuple[str, float, float], ...] = ()  # (rung, compute C, val loss)


@dataclasses.dataclass
class LadderReport:
  baseline: str
  rungs: list[RungReport] = dataclasses.field(default_factory=list)
  fits: list[ArchFit] = dataclasses.field(default_factory=list)
  speedups: list[Speedup] = dataclasses.field(default_factory=list)
  param_basis: str = 'non_embedding'  # the N actually used for C = 6ND
  param_basis_note: str = ''
  target_loss: float | None = None
  target_source: str = ''
  winners: tuple[str, ...] = ()  # promoted at the top rung that ran
  plot_path: str | None = None
  plot_note: str = ''
  new_experiments: int = 0  # experiments this call added to the store
  stopped: bool = False
  md_path: str | None = None
  json_path: str | None = None

  @property
  def trained_now(self) -> int:
    return sum(r.trained_now for r in self.rungs)

  def to_dict(self) -> dict[str, Any]:
    return _jsonable(dataclasses.asdict(self))

  def format_table(self) -> str:
    out = []
    for r in self.rungs:
      out.append(f'== rung {r.name}' + (f' (skipped: {r.skipped})' if r.skipped else ''))
      if r.skipped:
        continue
      header = ['design', 'params', 'N', 'tokens', 'steps', 'val loss', 'Δ vs base (σ)', 'promoted', 'note']
      body = []
      for row in r.rows:
        loss = _f(row.val_loss, '.4f') + (f' ± {row.val_loss_sd:.4f}' if row.val_loss_sd is not None else '')
        name = row.design + (' (baseline)' if row.baseline else '')
        body.append([name, _f(row.params, ','), _f(row.n, ','), _f(row.tokens, ','), _f(row.steps, 'd'), loss,
                     _f(row.delta_sigma, '+.2f'), 'base' if row.baseline else ('yes' if row.promoted else 'no'),
                     ('reused; ' if row.reused else '') + row.note])
      out.append(_table(header, body))
      sigma = f'{r.noise_floor:.4f}' if r.noise_floor is not None else 'unknown'
      out.append(f'noise floor σ = {sigma} ({r.noise_source}); trained now: {r.trained_now}')
      out.append('')
    out.append(f'== scaling fits: L(C), C = 6·N·D training FLOPs, N = {self.param_basis} parameters'
               + (f' ({self.param_basis_note})' if self.param_basis_note else ''))
    body = [[f.arch + (' (baseline)' if f.arch == self.baseline else ''), f.fit.form or '-', _f(f.fit.A, '.4g'),
             _f(f.fit.alpha, '.4f'), _f(f.fit.E, '.4f'), _f(f.fit.r2, '.4f'), str(f.fit.points),
             _fit_note(f.fit)] for f in self.fits]
    out.append(_table(['arch', 'form', 'A', 'alpha', 'E', 'R² (log)', 'points', 'note'], body))
    out.append('')
    out.append(f'== compute to reach L* = {_f(self.target_loss, ".4f")} ({self.target_source}) vs {self.baseline}')
    body = [[s.arch, _f(s.c_arch, '.3e'), _f(s.c_base, '.3e'), _f(s.ratio, '.3f'), _f(s.faster_pct, '+.1f'),
             _f(s.loss_gap, '+.4f'), _f(s.gap_compute, '.3e'), ('EXTRAPOLATED; ' if s.extrapolating else '') + s.reason]
            for s in self.speedups]
    out.append(_table(['arch', 'C_arch(L*)', 'C_base(L*)', 'ratio', 'X% faster', 'loss gap', 'at C', 'note'], body))
    out.append('X% faster = (C_base(L*) / C_arch(L*) - 1) * 100: > 0 means the architecture needs less compute; '
               'loss gap = L_base - L_arch at the largest compute both fits cover (> 0: the architecture is lower).')
    if self.winners:
      out.append(f'winners (promoted at the top rung): {", ".join(self.winners)}')
    out.append(f'plot: {self.plot_path}' if self.plot_path else f'plot: none ({self.plot_note})')
    if self.stopped:
      out.append('the ladder was stopped before it finished')
    return '\n'.join(out)

  def write(self, workdir: str) -> tuple[str, str]:
    """ladder.md (the tables and the plot) and ladder.json (everything) in `workdir`."""
    os.makedirs(workdir, exist_ok=True)
    self.md_path, self.json_path = os.path.join(workdir, 'ladder.md'), os.path.join(workdir, 'ladder.json')
    text = '# Ladder of scales\n\n```\n' + self.format_table() + '\n```\n'
    if self.plot_path:
      text += f'\n![loss vs compute]({os.path.basename(self.plot_path)})\n'
    with open(self.md_path, 'w', encoding='utf-8') as f:
      f.write(text)
    with open(self.json_path, 'w', encoding='utf-8') as f:
      json.dump(self.to_dict(), f, indent=1)
    return self.md_path, self.json_path


def _fit_note(fit: PowerLawFit) -> str:
  if not fit.ok:
    return fit.reason
  free = 3 if fit.form.startswith('E') else 2
  return 'exact: no more points than parameters, R² says nothing' if fit.points <= free else ''


def _jsonable(value: Any) -> Any:
  """NaN and inf become None so ladder.json is strict JSON."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  return value


def _f(x: Any, fmt: str) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return '-'
  return format(x, fmt)


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
  widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(header)]
  lines = ['  '.join(h.ljust(w) for h, w in zip(header, widths)).rstrip(), '  '.join('-' * w for w in widths)]
  lines += ['  '.join(c.ljust(w) for c, w in zip(b, widths)).rstrip() for b in body]
  return '\n'.join(lines)
