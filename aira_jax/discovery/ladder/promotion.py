"""Which designs go up the ladder: read a rung's outcomes from the store, measure them against the baseline.

    outcomes = rung_outcomes(store, ['a', 'b', 'deltanet'], 'ladder-s')
    sigma = noise_floor(outcomes['deltanet'], prior=[...])
    decisions = decide_promotions(rung, outcomes, baseline='deltanet', sigma=sigma)

A design is promoted when it has a finite validation loss, beats the baseline at this rung by at least
`rung.min_delta_sigma` noise-floor sigmas (when that is > 0), and ranks within the rung's `promote` best by loss.
The noise floor is the std of the baseline's per-seed losses at this rung; with a single baseline seed it is
borrowed from an earlier rung as a relative spread (std / mean) times this rung's baseline mean. Failed runs are
reported with their reason and never promoted.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aira_jax.discovery.records import Experiment, Result, Status
from aira_jax.discovery.ladder.params import ParamCount, param_count_from_components
from aira_jax.discovery.ladder.settings import Rung

TRAINED, FAILED, PENDING, MISSING = 'trained', 'failed', 'pending', 'missing'
_DONE = (Status.TRAINED, Status.ANALYSED)
_DEAD = (Status.FAILED, Status.REJECTED)


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What the store says about one design at one rung."""
  design: str
  state: str  # 'trained' | 'failed' | 'pending' | 'missing'
  experiment_id: int | None = None
  val_loss: float | None = None  # mean over seeds
  val_loss_sd: float | None = None  # sample std over seeds (None with one seed)
  seed_losses: tuple[float, ...] = ()
  seeds: tuple[int, ...] = ()
  params: ParamCount | None = None  # from the run's own count (None when it never trained)
  num_params: int | None = None  # the total the trainer reported
  tokens: int | None = None  # training tokens seen
  steps: int | None = None  # steps trained (or planned, for a run without a result)
  reason: str = ''  # why it failed / is pending

  @property
  def finite(self) -> bool:
    return self.state == TRAINED and self.val_loss is not None and math.isfinite(self.val_loss)


def pick_experiment(experiments: Sequence[Experiment]) -> Experiment | None:
  """The experiment that stands for a (design, rung): the latest trained one, else the latest still queued,
  else the latest failed one (a rerun reuses it instead of retraining)."""
  for group in (_DONE, (Status.PROPOSED, Status.CHECKED, Status.TRAINING), _DEAD):
    found = [e for e in experiments if e.status in group]
    if found:
      return max(found, key=lambda e: e.id or 0)
  return None


def _summary(result: Result) -> Mapping[str, Any]:
  summaries = (result.meta or {}).get('summaries') or {}
  first = str(result.seeds[0]) if result.seeds else next(iter(summaries), None)
  return summaries.get(first) or {}


def outcome_of(design: str, exp: Experiment | None, result: Result | None) -> Outcome:
  planned = (exp.config.get('train') or {}).get('max_steps') if exp is not None else None
  if exp is None:
    return Outcome(design, MISSING, reason='no experiment at this rung')
  if exp.status in _DEAD:
    return Outcome(design, FAILED, exp.id, steps=planned, reason=exp.reason or exp.status.value)
  if exp.status not in _DONE or result is None:
    return Outcome(design, PENDING, exp.id, steps=planned, reason=f'experiment {exp.id} is {exp.status.value}')
  losses = tuple(x for x in result.seed_losses if x is not None)
  finite = [x for x in losses if math.isfinite(x)]
  sd = statistics.stdev(finite) if len(finite) >= 2 and len(finite) == len(losses) else None
  summary = _summary(result)
  steps = summary.get('steps', planned)
  loss = result.val_loss
  state, reason = TRAINED, ''
  if loss is None or not math.isfinite(loss):
    state, reason = FAILED, f'no finite validation loss ({loss})'
  return Outcome(design, state, exp.id, val_loss=loss, val_loss_sd=sd, seed_losses=losses, seeds=result.seeds,
                 params=param_count_from_components(summary.get('param_counts') or {}),
                 num_params=result.num_params, tokens=result.tokens,
                 steps=int(steps) if steps is not None else None, reason=reason)


def rung_outcomes(store, designs: Iterable[str], scale: str) -> dict[str, Outcome]:
  """Outcome of each design at the rung whose store scale is `scale`."""
  out = {}
  for name in designs:
    exp = pick_experiment(store.experiments(design=name, scale=scale))
    result = store.result(exp.id) if exp is not None and exp.status in _DONE else None
    out[name] = outcome_of(name, exp, result)
  return out


@dataclasses.dataclass(frozen=True)
class NoiseFloor:
  sigma: float | None
  source: str  # where sigma comes from, or why it is unknown


def noise_floor(baseline: Outcome, rung: str, prior: Sequence[tuple[str, float]] = ()) -> tuple[NoiseFloor, float | None]:
  """(the rung's noise floor, the relative spread std/mean this rung contributes for later rungs, or None).

  `prior`: (rung name, relative spread) of earlier rungs whose baseline had >= 2 seeds, latest last.
  """
  finite = [x for x in baseline.seed_losses if math.isfinite(x)] if baseline.finite else []
  if len(finite) >= 2:
    sd = statistics.stdev(finite)
    return NoiseFloor(sd, f'baseline std over {len(finite)} seeds at {rung}'), sd / statistics.fmean(finite)
  if not baseline.finite:
    return NoiseFloor(None, f'the baseline has no result at {rung}'), None
  if prior:
    name, rel = prior[-1]
    return NoiseFloor(rel * baseline.val_loss, f'relative spread ({rel:.3%}) of the baseline at {name}'), None
  return NoiseFloor(None, f'unknown: the baseline ran a single seed at {rung} and no earlier rung had more; '
                    f'give a rung seeds=(0, 1, 2)'), None


@dataclasses.dataclass(frozen=True)
class Decision:
  design: str
  delta: float | None  # L_base - L (> 0: better than the baseline)
  delta_sigma: float | None  # delta / noise floor
  promoted: bool
  reason: str


def _z(delta: float | None, sigma: float | None) -> float | None:
  if delta is None or sigma is None:
    return None
  if sigma == 0:
    return math.copysign(math.inf, delta) if delta else 0.0
  return delta / sigma


def decide_promotions(rung: Rung, outcomes: Mapping[str, Outcome], *, baseline: str,
                      floor: NoiseFloor) -> list[Decision]:
  """One Decision per design (the baseline excluded), best loss first, then the unmeasured in input order."""
  base = outcomes.get(baseline)
  base_loss = base.val_loss if base is not None and base.finite else None
  measured = sorted((o for n, o in outcomes.items() if n != baseline and o.finite), key=lambda o: o.val_loss)
  rest = [o for n, o in outcomes.items() if n != baseline and not o.finite]
  decisions, promoted = [], 0
  for o in measured:
    delta = None if base_loss is None else base_loss - o.val_loss
    z = _z(delta, floor.sigma)
    if rung.min_delta_sigma > 0 and z is None:
      why = ('the baseline has no result at this rung' if base_loss is None else
             f'noise floor {floor.source}') + f': cannot check min_delta_sigma={rung.min_delta_sigma:g}'
      decisions.append(Decision(o.design, delta, z, False, why))
    elif rung.min_delta_sigma > 0 and z < rung.min_delta_sigma:
      decisions.append(Decision(o.design, delta, z, False,
                                f'{z:+.2f} sigma vs baseline is below min_delta_sigma={rung.min_delta_sigma:g}'))
    elif promoted >= rung.promote:
      decisions.append(Decision(o.design, delta, z, False, f'not among the best {rung.promote} by loss'))
    else:
      promoted += 1
      decisions.append(Decision(o.design, delta, z, True, f'rank {promoted} by loss'))
  for o in rest:
    decisions.append(Decision(o.design, None, None, False, f'{o.state}: {o.reason}'.rstrip(': ')))
  return decisions
