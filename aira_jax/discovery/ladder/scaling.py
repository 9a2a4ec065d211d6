"""Scaling-law fits of loss against training compute, and AIRA-Compose's "scales X% faster" figure.

    fit = fit_power_law(compute, loss)        # L(C) = E + A * C^-alpha   (>= 4 points; else L = A * C^-alpha)
    row = compute_speedup('arch', fit, base_fit, target_loss=L_star)
    row.faster_pct                             # (C_base(L*) / C_arch(L*) - 1) * 100; > 0: the arch needs less

C = 6 * N * D training FLOPs (N parameters, D training tokens). The fit is least squares in log space: for each
asymptote E on a grid below the smallest loss (then refined by golden-section search), log(L - E) is linear in
log C, so A and alpha come from a linear solve; the E whose curve best matches log L wins. numpy only.
Degenerate inputs (one point, one compute value, flat or rising losses, a target below the asymptote) give
None with a reason, never a crash or a meaningless number.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

MIN_POINTS_WITH_ASYMPTOTE = 4
_GRID = 200
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_FLAT = 1e-9  # losses equal to this relative precision are flat
_MIN_ALPHA = 1e-6  # a smaller exponent is a flat curve that cannot be inverted meaningfully
_EXTRAPOLATION_SLACK = 1.05  # a C within 5% beyond the measured range still counts as measured


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
  """L(C) = E + A * C^-alpha over `points` (compute, loss) pairs; `ok` False means no usable fit (see reason)."""
  ok: bool
  A: float | None = None
  alpha: float | None = None
  E: float | None = None  # 0.0 for the pure power law
  r2: float | None = None  # coefficient of determination of log L
  points: int = 0
  form: str = ''  # 'E + A*C^-alpha' | 'A*C^-alpha'
  c_min: float | None = None
  c_max: float | None = None
  reason: str = ''

  def loss(self, compute: float | np.ndarray) -> float | np.ndarray:
    if not self.ok:
      raise ValueError(f'no usable fit: {self.reason}')
    return self.E + self.A * np.power(compute, -self.alpha)

  def compute_for(self, loss: float) -> tuple[float | None, str]:
    """The compute at which the fitted curve reaches `loss` (the inverse); (None, why) when it never does."""
    if not self.ok:
      return None, f'no usable fit: {self.reason}'
    if not math.isfinite(loss) or loss <= 0:
      return None, f'target loss {loss} is not a positive number'
    if loss <= self.E:
      return None, f'target loss {loss:.4g} is at or below the fitted asymptote E={self.E:.4g}'
    c = (self.A / (loss - self.E)) ** (1.0 / self.alpha)
    if not math.isfinite(c) or c <= 0:
      return None, f'the inverse of the fit overflows at loss {loss:.4g}'
    return float(c), ''

  def measured(self, compute: float) -> bool:
    """Whether `compute` lies within the fitted points' range (else the fit is extrapolated there)."""
    return (self.c_min is not None and self.c_max is not None
            and self.c_min / _EXTRAPOLATION_SLACK <= compute <= self.c_max * _EXTRAPOLATION_SLACK)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def training_flops(num_params: float, tokens: float) -> float:
  """C = 6 N D: forward and backward FLOPs of training N parameters on D tokens (Kaplan et al.)."""
  return 6.0 * float(num_params) * float(tokens)


def _linear_fit(logc: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """Least squares y = a + b * logc; returns (a, b)."""
  design = np.stack([np.ones_like(logc), logc], axis=1)
  (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
  return float(a), float(b)


def _fit_given_e(logc: np.ndarray, logl: np.ndarray, loss: np.ndarray, e: float) -> tuple[float, float, float]:
  """(log A, alpha, SSE of log L) for a fixed asymptote e."""
  a, b = _linear_fit(logc, np.log(loss - e))
  pred = np.log(e + np.exp(a + b * logc))
  return a, -b, float(np.sum((logl - pred) ** 2))


def _golden(f, lo: float, hi: float, iters: int = 80) -> float:
  a, b = lo, hi
  c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
  fc, fd = f(c), f(d)
  for _ in range(iters):
    if fc < fd:
      b, d, fd = d, c, fc
      c = b - _GOLDEN * (b - a)
      fc = f(c)
    else:
      a, c, fc = c, d, fd
      d = a + _GOLDEN * (b - a)
      fd = f(d)
  return (a + b) / 2.0


def fit_power_law(compute: Sequence[float], loss: Sequence[float], *, with_asymptote: bool | None = None) -> PowerLawFit:
  """Fits L(C) = E + A C^-alpha (E >= 0) by least squares on log L; `with_asymptote` None: when >= 4 points."""
  c = np.asarray(compute, dtype=np.float64).ravel()
  l = np.asarray(loss, dtype=np.float64).ravel()
  if c.shape != l.shape:
    return PowerLawFit(False, reason=f'{c.size} compute values for {l.size} losses')
  keep = np.isfinite(c) & np.isfinite(l) & (c > 0) & (l > 0)
  c, l = c[keep], l[keep]
  n = int(c.size)
  if n < 2:
    return PowerLawFit(False, points=n, reason=f'{n} usable point(s); a fit needs at least 2')
  if np.unique(c).size < 2:
    return PowerLawFit(False, points=n, reason='all points have the same compute')
  logc, logl = np.log(c), np.log(l)
  rng = dict(points=n, c_min=float(c.min()), c_max=float(c.max()))
  b_free = _linear_fit(logc, logl)[1]
  if float(l.max() - l.min()) <= _FLAT * float(l.mean()) or b_free >= 0:
    return PowerLawFit(False, reason='loss does not decrease with compute (flat or rising)', **rng)
  use_e = n >= MIN_POINTS_WITH_ASYMPTOTE if with_asymptote is None else bool(with_asymptote)
  if use_e and n < 3:
    return PowerLawFit(False, reason=f'{n} points cannot fix the three parameters of E + A*C^-alpha', **rng)
  e = 0.0
  if use_e:
    top = float(l.min()) * (1.0 - 1e-6)
    grid = np.linspace(0.0, top, _GRID, endpoint=False)
    sse = [_fit_given_e(logc, logl, l, g)[2] for g in grid]
    i = int(np.argmin(sse))
    lo, hi = grid[max(i - 1, 0)], (grid[i + 1] if i + 1 < len(grid) else top)
    e = _golden(lambda x: _fit_given_e(logc, logl, l, x)[2], float(lo), float(hi))
    if _fit_given_e(logc, logl, l, e)[2] > sse[i]:
      e = float(grid[i])
  log_a, alpha, sse = _fit_given_e(logc, logl, l, e)
  if not alpha > _MIN_ALPHA:
    return PowerLawFit(False, reason=f'fitted exponent alpha={alpha:.3g} is not positive', **rng)
  sst = float(np.sum((logl - logl.mean()) ** 2))
  r2 = 1.0 - sse / sst if sst > 0 else (1.0 if sse < 1e-24 else 0.0)
  return PowerLawFit(True, A=float(math.exp(log_a)), alpha=float(alpha), E=float(e), r2=float(r2),
                     form='E + A*C^-alpha' if use_e else 'A*C^-alpha', **rng)


@dataclasses.dataclass(frozen=True)
class Speedup:
  """How much less compute an architecture needs than the baseline to reach the target loss L*."""
  arch: str
  target_loss: float | None
  c_base: float | None = None  # C_base(L*)
  c_arch: float | None = None  # C_arch(L*)
  ratio: float | None = None  # C_base / C_arch
  faster_pct: float | None = None  # (ratio - 1) * 100; > 0: the architecture needs less compute
  gap_compute: float | None = None  # the largest compute both fits cover
  loss_gap: float | None = None  # L_base(C) - L_arch(C) there; > 0: the architecture's loss is lower
  extrapolating: bool = False  # some figure uses a fit outside its measured compute range
  reason: str = ''  # why a figure is None, or what is extrapolated

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def compute_speedup(arch: str, fit: PowerLawFit, base_fit: PowerLawFit, *, target_loss: float | None) -> Speedup:
  """X = (C_base(L*) / C_arch(L*) - 1) * 100 from the fitted curves, and the loss gap at the largest common C."""
  notes: list[str] = []
  extrapolating = False
  out: dict = {}
  if not fit.ok or not base_fit.ok:
    which = arch if not fit.ok else 'the baseline'
    return Speedup(arch, target_loss, reason=f'no fit for {which}: {(fit if not fit.ok else base_fit).reason}')
  gap_c = min(fit.c_max, base_fit.c_max)
  gap = float(base_fit.loss(gap_c) - fit.loss(gap_c))
  out.update(gap_compute=gap_c, loss_gap=gap if math.isfinite(gap) else None)
  if not (fit.measured(gap_c) and base_fit.measured(gap_c)):
    extrapolating = True
    notes.append(f'the compute ranges do not overlap: the loss gap at C={gap_c:.3g} is extrapolated')
  if target_loss is None or not math.isfinite(target_loss):
    notes.append('no target loss')
    return Speedup(arch, target_loss, extrapolating=extrapolating, reason='; '.join(notes), **out)
  c_base, why_base = base_fit.compute_for(target_loss)
  c_arch, why_arch = fit.compute_for(target_loss)
  if c_base is None or c_arch is None:
    notes.append(f'baseline: {why_base}' if c_base is None else f'{arch}: {why_arch}')
    return Speedup(arch, target_loss, c_base=c_base, c_arch=c_arch, extrapolating=extrapolating,
                   reason='; '.join(notes), **out)
  for name, f, c in (('baseline', base_fit, c_base), (arch, fit, c_arch)):
    if not f.measured(c):
      extrapolating = True
      notes.append(f'{name} reaches L*={target_loss:.4g} at C={c:.3g}, outside its measured '
                   f'[{f.c_min:.3g}, {f.c_max:.3g}]')
  ratio = c_base / c_arch
  return Speedup(arch, target_loss, c_base=c_base, c_arch=c_arch, ratio=ratio, faster_pct=(ratio - 1.0) * 100.0,
                 extrapolating=extrapolating, reason='; '.join(notes), **out)
