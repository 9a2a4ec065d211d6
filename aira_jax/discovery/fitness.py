"""Fitness computed in code, in ASI-Arch's form, with the seed's own seed-to-seed noise as the yardstick.

    loss term       sigmoid(k * clip((L_base - L) / (band * L_base), -1, 1))       lower loss is better
    benchmark term  sigmoid(k * clip((B - B_base) / (band * B_base), -1, 1))       higher score is better
    judge term      (s - 1) / 9                                                    s on the judge's 1-10 scale
    fitness         mean (or sum) of the configured terms                          k = 6, band = 0.1

A term whose metric is missing or not finite scores 0 and is named in `FitnessReport.missing`, so a broken
run can never look good; with no finite loss at all (when loss is a term) the candidate is discarded. A loss more than `leakage_fraction` below the baseline is implausible for a small
architecture change at a fixed budget (ASI-Arch treats it as evaluation leakage): the candidate is flagged
and discarded (fitness 0, `discarded` set). The baseline is the seed design trained over k seeds; the std of
those runs is the noise floor, and every delta is also reported in units of it (z-score style).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

import numpy as np

from aira_jax.discovery.records import JudgeScore, Result

TERMS = ("loss", "benchmark", "judge")


class FitnessError(ValueError):
    """Bad fitness configuration or baseline."""


@dataclasses.dataclass(frozen=True)
class FitnessConfig:
    terms: tuple[str, ...] = TERMS
    combine: str = "mean"            # 'mean' keeps fitness in [0, 1]; 'sum' is ASI-Arch's unnormalised total
    steepness: float = 6.0           # k in sigmoid(k * clip(...))
    relative_band: float = 0.1       # a relative change of this size saturates the clip
    leakage_fraction: float = 0.1    # loss this far below baseline is treated as leakage
    detect_leakage: bool = True

    def __post_init__(self):
        terms = tuple(self.terms)
        bad = [t for t in terms if t not in TERMS]
        if not terms or bad or len(set(terms)) != len(terms):
            raise FitnessError(f"fitness terms must be distinct names from {TERMS}, got {self.terms!r}")
        object.__setattr__(self, "terms", terms)
        if self.combine not in ("mean", "sum"):
            raise FitnessError(f"fitness combine must be 'mean' or 'sum', got {self.combine!r}")
        for name in ("steepness", "relative_band", "leakage_fraction"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise FitnessError(f"fitness {name} must be a positive number, got {v!r}")


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The seed design's validation losses (and benchmark means) over its seeds."""
    losses: tuple[float, ...]
    benchmarks: tuple[float, ...] = ()

    def __post_init__(self):
        losses = tuple(float(x) for x in self.losses)
        benchmarks = tuple(float(x) for x in self.benchmarks)
        if not losses:
            raise FitnessError("baseline needs at least one seed run's validation loss")
        if not all(math.isfinite(x) and x > 0 for x in losses):
            raise FitnessError(f"baseline losses must be finite and positive, got {losses}")
        if not all(math.isfinite(x) and x > 0 for x in benchmarks):
            raise FitnessError(f"baseline benchmark means must be finite and positive, got {benchmarks}")
        object.__setattr__(self, "losses", losses)
        object.__setattr__(self, "benchmarks", benchmarks)

    @classmethod
    def from_results(cls, results: Iterable[Result]) -> "Baseline":
        """Pools every finite per-seed loss and benchmark mean of the seed's results (NaN runs are dropped)."""
        losses, benchmarks = [], []
        for r in results:
            losses.extend(x for x in r.seed_losses if x is not None and math.isfinite(x))
            b = r.benchmark_mean
            if b is not None and math.isfinite(b):
                benchmarks.append(b)
        return cls(tuple(losses), tuple(benchmarks))

    @property
    def num_seeds(self) -> int:
        return len(self.losses)

    @property
    def loss_mean(self) -> float:
        return float(np.mean(self.losses))

    @property
    def loss_std(self) -> float | None:
        """Sample std over seeds: the noise floor. None with a single run (the floor is unknown)."""
        return float(np.std(self.losses, ddof=1)) if len(self.losses) > 1 else None

    @property
    def benchmark_mean(self) -> float | None:
        return float(np.mean(self.benchmarks)) if self.benchmarks else None

    @property
    def benchmark_std(self) -> float | None:
        return float(np.std(self.benchmarks, ddof=1)) if len(self.benchmarks) > 1 else None


@dataclasses.dataclass(frozen=True)
class Metrics:
    """What fitness reads about one candidate (aggregated over its runs)."""
    val_loss: float | None = None
    benchmark_mean: float | None = None
    judge: float | None = None     # judge total on the 1-10 scale
    num_evals: int = 0             # runs behind these numbers (confidence)

    @classmethod
    def from_records(cls, results: Sequence[Result], judge_scores: Sequence[JudgeScore] = ()) -> "Metrics":
        """Means over the candidate's runs; a NaN in any run makes that metric NaN (and so scored as missing)."""
        losses = [x for r in results for x in (r.seed_losses or (math.nan,))]
        bench = [r.benchmark_mean for r in results if r.benchmark_mean is not None]
        judges = [s.total for s in judge_scores]
        return cls(val_loss=float(np.mean(losses)) if losses else None,
                   benchmark_mean=float(np.mean(bench)) if bench else None,
                   judge=float(np.mean(judges)) if judges else None,
                   num_evals=len(losses))


@dataclasses.dataclass(frozen=True)
class FitnessReport:
    fitness: float                          # 0 when discarded
    terms: dict[str, float]                 # per-term scores in [0, 1]
    missing: tuple[str, ...]                # terms whose metric was missing or not finite (scored 0)
    leakage: bool                           # loss implausibly far below baseline
    discarded: bool                         # excluded from the pool (leakage)
    loss_delta: float | None                # L_base - L (positive = better)
    loss_delta_z: float | None              # loss_delta / baseline loss std
    benchmark_delta: float | None           # B - B_base (positive = better)
    benchmark_delta_z: float | None
    fitness_delta: float                    # fitness minus the fitness of the baseline's own metrics
    fitness_delta_z: float | None           # fitness_delta / the seed-to-seed std of that fitness
    flags: tuple[str, ...] = ()             # marks on the candidate ('missing:loss', 'leakage: ...')
    # z fields are None when the baseline has a single run (noise floor unknown)

    @property
    def marked(self) -> bool:
        return bool(self.flags)


def relative_score(value: float | None, reference: float, *, higher_is_better: bool,
                   cfg: FitnessConfig) -> float | None:
    """ASI-Arch's squashed relative improvement; None when `value` is missing or not finite."""
    if value is None or not math.isfinite(value):
        return None
    gain = (value - reference) if higher_is_better else (reference - value)
    x = min(1.0, max(-1.0, gain / (cfg.relative_band * reference)))
    return 1.0 / (1.0 + math.exp(-cfg.steepness * x))


def judge_score(total: float | None) -> float | None:
    """Maps a 1-10 judge total to [0, 1]; None when missing."""
    if total is None or not math.isfinite(total):
        return None
    if not 1.0 <= total <= 10.0:
        raise FitnessError(f"judge total must be on the 1-10 scale, got {total}")
    return (total - 1.0) / 9.0


def _combine(values: Sequence[float], cfg: FitnessConfig) -> float:
    return float(sum(values) / len(values)) if cfg.combine == "mean" else float(sum(values))


def _term_scores(m: Metrics, base: Baseline, cfg: FitnessConfig) -> dict[str, float | None]:
    scores: dict[str, float | None] = {}
    for t in cfg.terms:
        if t == "loss":
            scores[t] = relative_score(m.val_loss, base.loss_mean, higher_is_better=False, cfg=cfg)
        elif t == "benchmark":
            if base.benchmark_mean is None:
                raise FitnessError("fitness has a 'benchmark' term but the baseline has no benchmark scores")
            scores[t] = relative_score(m.benchmark_mean, base.benchmark_mean, higher_is_better=True, cfg=cfg)
        else:
            scores[t] = judge_score(m.judge)
    return scores


def _fitness_noise(m: Metrics, base: Baseline, cfg: FitnessConfig) -> tuple[float, float | None]:
    """Fitness of the baseline's own metrics (with the candidate's judge) and its seed-to-seed std.

    The judge term is the candidate's in both, so the delta measures only what training changed. Each baseline
    seed run is scored against the baseline mean; the std of those fitnesses is the noise floor in fitness units.
    """
    def fit(loss, bench):
        vals = _term_scores(dataclasses.replace(m, val_loss=loss, benchmark_mean=bench), base, cfg)
        return _combine([v if v is not None else 0.0 for v in vals.values()], cfg)

    ref = fit(base.loss_mean, base.benchmark_mean)
    if base.num_seeds < 2:
        return ref, None
    # Pair losses with benchmark means where both exist; otherwise vary the loss alone.
    benches = base.benchmarks if len(base.benchmarks) == len(base.losses) else [base.benchmark_mean] * base.num_seeds
    per_seed = [fit(l, b) for l, b in zip(base.losses, benches)]
    return ref, float(np.std(per_seed, ddof=1))


def _z(delta: float | None, std: float | None) -> float | None:
    if delta is None or std is None:
        return None
    if std == 0:
        return math.copysign(math.inf, delta) if delta else 0.0
    return delta / std


def compute_fitness(metrics: Metrics, baseline: Baseline, cfg: FitnessConfig = FitnessConfig()) -> FitnessReport:
    scores = _term_scores(metrics, baseline, cfg)
    missing = tuple(t for t, v in scores.items() if v is None)
    terms = {t: (0.0 if v is None else v) for t, v in scores.items()}
    fitness = _combine(list(terms.values()), cfg)

    finite_loss = metrics.val_loss is not None and math.isfinite(metrics.val_loss)
    loss_delta = baseline.loss_mean - metrics.val_loss if finite_loss else None
    finite_bench = metrics.benchmark_mean is not None and math.isfinite(metrics.benchmark_mean)
    bench_delta = (metrics.benchmark_mean - baseline.benchmark_mean
                   if finite_bench and baseline.benchmark_mean is not None else None)
    leakage = bool(cfg.detect_leakage and loss_delta is not None
                   and loss_delta > cfg.leakage_fraction * baseline.loss_mean)

    ref_fitness, fitness_std = _fitness_noise(metrics, baseline, cfg)
    flags = [f"missing:{t}" for t in missing]
    if leakage:
        flags.append(f"leakage: loss {metrics.val_loss:.4g} is more than {cfg.leakage_fraction:.0%} below "
                     f"baseline {baseline.loss_mean:.4g}")
    # A run with no finite loss (diverged, crashed, never evaluated) is no candidate at all: however well its
    # other terms look, it is discarded rather than allowed to outrank measured designs.
    no_loss = "loss" in cfg.terms and "loss" in missing
    if no_loss:
        flags.append("discarded: no finite validation loss")
    discarded = leakage or no_loss
    final = 0.0 if discarded else fitness
    return FitnessReport(
        fitness=final, terms=terms, missing=missing, leakage=leakage, discarded=discarded,
        loss_delta=loss_delta, loss_delta_z=_z(loss_delta, baseline.loss_std),
        benchmark_delta=bench_delta, benchmark_delta_z=_z(bench_delta, baseline.benchmark_std),
        fitness_delta=final - ref_fitness, fitness_delta_z=_z(final - ref_fitness, fitness_std),
        flags=tuple(flags))
