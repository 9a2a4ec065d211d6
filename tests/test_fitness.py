"""Fitness in code: ASI-Arch's squashed relative scores, missing metrics, leakage, noise-floor units."""
import math

import numpy as np
import pytest

from aira_jax.discovery import Baseline, FitnessConfig, JudgeScore, Metrics, Result, compute_fitness
from aira_jax.discovery.fitness import FitnessError, judge_score, relative_score


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


BASE = Baseline(losses=(3.0, 3.1, 2.9), benchmarks=(0.50, 0.52, 0.48))  # means 3.0 and 0.5; stds 0.1 and 0.02
LOSS_ONLY = FitnessConfig(terms=("loss",))


@pytest.mark.parametrize("loss, expected", [
    (3.0, 0.5),              # equal to baseline
    (2.85, sig(3.0)),        # 5% better: half the band
    (2.76, sig(4.8)),        # 8% better
    (3.15, sig(-3.0)),       # 5% worse
    (3.6, sig(-6.0)),        # 20% worse: clipped at -1
    (30.0, sig(-6.0)),
])
def test_loss_term_at_known_points(loss, expected):
    r = compute_fitness(Metrics(val_loss=loss), BASE, LOSS_ONLY)
    assert r.terms["loss"] == pytest.approx(expected, rel=1e-9)
    assert r.fitness == pytest.approx(expected, rel=1e-9) and not r.missing and not r.leakage


def test_benchmark_term_rewards_higher_scores():
    cfg = FitnessConfig(terms=("benchmark",))
    assert compute_fitness(Metrics(benchmark_mean=0.525), BASE, cfg).fitness == pytest.approx(sig(3.0))
    assert compute_fitness(Metrics(benchmark_mean=0.475), BASE, cfg).fitness == pytest.approx(sig(-3.0))
    assert compute_fitness(Metrics(benchmark_mean=0.9), BASE, cfg).fitness == pytest.approx(sig(6.0))


def test_judge_term_and_combination():
    assert judge_score(1) == 0.0 and judge_score(10) == 1.0 and judge_score(5.5) == pytest.approx(0.5)
    with pytest.raises(FitnessError, match="1-10"):
        judge_score(0.5)
    m = Metrics(val_loss=2.85, benchmark_mean=0.5, judge=10.0)
    mean = compute_fitness(m, BASE, FitnessConfig(combine="mean"))
    total = compute_fitness(m, BASE, FitnessConfig(combine="sum"))
    assert mean.terms == pytest.approx({"loss": sig(3.0), "benchmark": 0.5, "judge": 1.0})
    assert mean.fitness == pytest.approx((sig(3.0) + 0.5 + 1.0) / 3)
    assert total.fitness == pytest.approx(sig(3.0) + 0.5 + 1.0)


def test_missing_and_nan_metrics_never_score_well():
    cfg = FitnessConfig()
    worst_finite = compute_fitness(Metrics(val_loss=100.0, benchmark_mean=0.0001, judge=1.0), BASE, cfg)
    for m in [Metrics(val_loss=math.nan, benchmark_mean=0.9, judge=10.0),
              Metrics(val_loss=math.inf, benchmark_mean=0.9, judge=10.0),
              Metrics(val_loss=None, benchmark_mean=0.9, judge=10.0)]:
        r = compute_fitness(m, BASE, cfg)
        assert r.terms["loss"] == 0.0 and r.missing == ("loss",) and "missing:loss" in r.flags and r.marked
        # No finite loss: discarded with fitness 0, even with perfect benchmark and judge terms.
        assert r.fitness == 0.0 and r.discarded and "discarded: no finite validation loss" in r.flags
        assert r.terms["benchmark"] == pytest.approx(sig(6.0)) and r.terms["judge"] == pytest.approx(1.0)
        assert r.loss_delta is None and r.loss_delta_z is None and not r.leakage
    nothing = compute_fitness(Metrics(), BASE, cfg)
    assert nothing.fitness == 0.0 and set(nothing.missing) == {"loss", "benchmark", "judge"}
    assert nothing.fitness < worst_finite.fitness  # a broken run scores below any measured one
    # A NaN in any run of a candidate makes its aggregated loss missing.
    m = Metrics.from_records([Result(val_loss=2.0), Result(val_loss=math.nan)])
    assert compute_fitness(m, BASE, LOSS_ONLY).missing == ("loss",)
    m = Metrics.from_records([Result(val_loss=None)])
    assert compute_fitness(m, BASE, LOSS_ONLY).fitness == 0.0


def test_leakage_is_flagged_and_discarded():
    r = compute_fitness(Metrics(val_loss=2.6, benchmark_mean=0.5, judge=8), BASE)  # 13% below baseline
    assert r.leakage and r.discarded and r.fitness == 0.0 and any("leakage" in f for f in r.flags)
    assert r.terms["loss"] == pytest.approx(sig(6.0))  # the term is still shown
    ok = compute_fitness(Metrics(val_loss=2.76), BASE)  # 8%: plausible
    assert not ok.leakage and not ok.discarded
    loose = FitnessConfig(leakage_fraction=0.2)
    assert not compute_fitness(Metrics(val_loss=2.6), BASE, loose).leakage
    off = FitnessConfig(detect_leakage=False, terms=("loss",))
    assert compute_fitness(Metrics(val_loss=2.0), BASE, off).fitness == pytest.approx(sig(6.0))


def test_deltas_in_noise_floor_units():
    assert BASE.loss_std == pytest.approx(0.1) and BASE.benchmark_std == pytest.approx(0.02)
    r = compute_fitness(Metrics(val_loss=2.8, benchmark_mean=0.53, judge=5.5), BASE)
    assert r.loss_delta == pytest.approx(0.2) and r.loss_delta_z == pytest.approx(2.0)
    assert r.benchmark_delta == pytest.approx(0.03) and r.benchmark_delta_z == pytest.approx(1.5)
    worse = compute_fitness(Metrics(val_loss=3.05), BASE, LOSS_ONLY)
    assert worse.loss_delta_z == pytest.approx(-0.5)

    # Fitness delta: against the baseline's own metrics with the same judge; its noise is the seed-to-seed
    # spread of the baseline runs' fitness, each run scored against the baseline mean.
    cfg = FitnessConfig()
    per_seed = [(relative_score(l, 3.0, higher_is_better=False, cfg=cfg)
                 + relative_score(b, 0.5, higher_is_better=True, cfg=cfg) + 0.5) / 3
                for l, b in zip(BASE.losses, BASE.benchmarks)]
    ref = (0.5 + 0.5 + 0.5) / 3
    assert r.fitness_delta == pytest.approx(r.fitness - ref)
    assert r.fitness_delta_z == pytest.approx((r.fitness - ref) / np.std(per_seed, ddof=1))
    assert r.fitness_delta_z > 0 and worse.fitness_delta_z < 0

    single = Baseline(losses=(3.0,))
    one = compute_fitness(Metrics(val_loss=2.9), single, LOSS_ONLY)
    assert one.loss_delta == pytest.approx(0.1) and one.loss_delta_z is None and one.fitness_delta_z is None


def test_baseline_from_results_pools_seeds_and_drops_nan():
    base = Baseline.from_results([
        Result(val_loss=3.0, seeds=[0, 1], val_loss_per_seed=[2.9, 3.1], benchmark_scores={"a": 0.4, "b": 0.6}),
        Result(val_loss=3.2, seeds=[2]),
        Result(val_loss=math.nan, seeds=[3]),  # a diverged seed run is not part of the baseline
    ])
    assert base.losses == (2.9, 3.1, 3.2) and base.benchmarks == (0.5,) and base.num_seeds == 3
    assert base.loss_mean == pytest.approx(3.0666666, rel=1e-6)
    with pytest.raises(FitnessError, match="at least one"):
        Baseline.from_results([Result(val_loss=math.nan)])
    with pytest.raises(FitnessError, match="benchmark"):
        compute_fitness(Metrics(val_loss=3.0), Baseline(losses=(3.0,)), FitnessConfig())


def test_metrics_from_records_aggregate_runs_and_judges():
    m = Metrics.from_records(
        [Result(val_loss=3.0, seeds=[0, 1], val_loss_per_seed=[2.8, 3.2], benchmark_scores={"x": 0.5}),
         Result(val_loss=3.3, benchmark_scores={"x": 0.7})],
        [JudgeScore({"a": 4}), JudgeScore({"a": 8})])
    assert m.val_loss == pytest.approx(3.1) and m.benchmark_mean == pytest.approx(0.6)
    assert m.judge == pytest.approx(6.0) and m.num_evals == 3


@pytest.mark.parametrize("kwargs", [
    {"terms": ()}, {"terms": ("loss", "loss")}, {"terms": ("speed",)}, {"combine": "max"},
    {"steepness": 0}, {"relative_band": -0.1}, {"leakage_fraction": math.nan},
])
def test_bad_fitness_config(kwargs):
    with pytest.raises(FitnessError):
        FitnessConfig(**kwargs)
