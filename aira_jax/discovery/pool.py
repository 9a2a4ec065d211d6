"""The candidate pool: the best designs so far, from which parents and references are drawn.

The pool is derived from the store, never kept apart from it: the results in arrival order, with the batch
and cold-start rules below, determine it completely, so every worker that reads the same store sees the same
pool. Rules (ASI-Arch):
- cold start: until `cold_start` proposals (results of non-seed designs) have arrived, the pool holds only the
  seed design(s), so early exploration branches from the seed;
- batched updates: afterwards the pool is rebuilt only each time `update_every` more results have arrived;
- membership: the top `size` designs by fitness (a design's runs are aggregated); leakage-flagged candidates
  are discarded.
Selection is seeded: draw i uses a generator seeded with (seed, i).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Mapping, Sequence

import numpy as np
from absl import logging

from aira_jax.discovery import fitness as fitness_lib
from aira_jax.discovery import selection
from aira_jax.discovery.records import Design, Experiment, JudgeScore, Result


class PoolError(RuntimeError):
    """The pool cannot be built or is empty."""


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    size: int = 50
    parent_top: int = 10
    num_references: int = 4
    cold_start: int = 200           # proposals before the pool first updates (ASI-Arch: 200)
    update_every: int = 50          # rebuild the pool every this many new results
    policy: str = "asi_arch"        # 'asi_arch' | 'uct' | 'quadrant' | a registered name
    policy_kwargs: dict = dataclasses.field(default_factory=dict)  # e.g. {'c': 1.4} for uct
    seed: int = 0
    scale: str = "explore"          # only results at this ladder rung count
    baseline: str | None = None     # seed design whose runs are the baseline; None = the only seed

    def __post_init__(self):
        for name in ("size", "parent_top", "update_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise PoolError(f"pool {name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("num_references", "cold_start"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise PoolError(f"pool {name} must be a non-negative integer, got {getattr(self, name)!r}")
        if self.parent_top > self.size:
            raise PoolError(f"pool parent_top ({self.parent_top}) cannot exceed size ({self.size})")


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str
    fitness: float
    rank: int                         # 1 = best
    report: fitness_lib.FitnessReport
    metrics: fitness_lib.Metrics
    children: int                     # children in the lineage (times expanded)
    experiment_ids: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Selection:
    parent: Candidate
    references: tuple[Candidate, ...]
    policy: str
    draw: int


class CandidatePool:
    """A ranked snapshot of the pool plus the seeded selection over it."""

    def __init__(self, members: Sequence[Candidate], *, cfg: PoolConfig, baseline: fitness_lib.Baseline,
                 num_proposals: int, num_visible: int, policy: selection.SelectionPolicy | None = None):
        self.members = list(members)
        self.cfg = cfg
        self.baseline = baseline
        self.num_proposals = num_proposals  # results of non-seed designs so far
        self.num_visible = num_visible      # of those, how many the pool reflects
        self.policy = policy or selection.make_policy(cfg.policy, **cfg.policy_kwargs)
        self._next_draw = 0

    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def from_store(cls, store, cfg: PoolConfig = PoolConfig(),
                   fitness_cfg: fitness_lib.FitnessConfig = fitness_lib.FitnessConfig(), *,
                   policy: selection.SelectionPolicy | None = None) -> "CandidatePool":
        history = store.evaluated(scale=cfg.scale)
        names = {e.design for e, _ in history}
        designs = {d.name: d for d in store.designs() if d.name in names}
        judges: dict[int, list[JudgeScore]] = collections.defaultdict(list)
        for s in store.judge_scores():
            judges[s.experiment_id].append(s)
        return cls.from_history(history, designs, judges, store.children_counts(), cfg, fitness_cfg,
                                policy=policy)

    @classmethod
    def from_history(cls, history: Sequence[tuple[Experiment, Result]], designs: Mapping[str, Design],
                     judge_scores: Mapping[int, Sequence[JudgeScore]], children: Mapping[str, int],
                     cfg: PoolConfig = PoolConfig(),
                     fitness_cfg: fitness_lib.FitnessConfig = fitness_lib.FitnessConfig(), *,
                     policy: selection.SelectionPolicy | None = None) -> "CandidatePool":
        """Builds the pool from results in arrival order (pure: the same inputs give the same pool)."""
        missing = sorted({e.design for e, _ in history} - set(designs))
        if missing:
            raise PoolError(f"results refer to designs that are not given: {missing}")
        history = [(e, r) for e, r in history if e.scale == cfg.scale]
        is_seed = {n: d.parent is None for n, d in designs.items()}
        baseline = cls._baseline(history, is_seed, cfg)
        num_proposals = sum(not is_seed[e.design] for e, _ in history)
        num_visible = visible_count(num_proposals, cfg)
        visible, seen = [], 0
        for e, r in history:  # seeds always; proposals up to the last completed batch
            if is_seed[e.design]:
                visible.append((e, r))
            elif seen < num_visible:
                visible.append((e, r))
                seen += 1
        members = cls._rank(visible, judge_scores, children, baseline, cfg, fitness_cfg)
        logging.info("candidate pool: %d members from %d/%d proposals (cold start %d, batch %d)",
                     len(members), num_visible, num_proposals, cfg.cold_start, cfg.update_every)
        return cls(members, cfg=cfg, baseline=baseline, num_proposals=num_proposals, num_visible=num_visible,
                   policy=policy)

    @staticmethod
    def _baseline(history, is_seed: Mapping[str, bool], cfg: PoolConfig) -> fitness_lib.Baseline:
        name = cfg.baseline
        if name is None:
            seeds = sorted({e.design for e, _ in history if is_seed[e.design]})
            if len(seeds) != 1:
                raise PoolError(f"cannot pick the baseline: seed designs with results are {seeds}; "
                                f"set PoolConfig.baseline")
            name = seeds[0]
        runs = [r for e, r in history if e.design == name]
        if not runs:
            raise PoolError(f"baseline design {name!r} has no results at scale {cfg.scale!r}; train it first")
        return fitness_lib.Baseline.from_results(runs)

    @staticmethod
    def _rank(visible, judge_scores, children, baseline, cfg, fitness_cfg) -> list[Candidate]:
        by_design: dict[str, list] = collections.defaultdict(list)
        first_seen: dict[str, int] = {}
        for i, (e, r) in enumerate(visible):
            by_design[e.design].append((e, r))
            first_seen.setdefault(e.design, i)
        scored = []
        for name, runs in by_design.items():
            judges = [s for e, _ in runs for s in judge_scores.get(e.id, ())]
            metrics = fitness_lib.Metrics.from_records([r for _, r in runs], judges)
            report = fitness_lib.compute_fitness(metrics, baseline, fitness_cfg)
            if report.discarded:
                logging.info("pool discards %s: %s", name, "; ".join(report.flags))
                continue
            scored.append((name, metrics, report, tuple(e.id for e, _ in runs)))
        # Best fitness first; ties go to the design that arrived first, so ranking never depends on dict order.
        scored.sort(key=lambda s: (-s[2].fitness, first_seen[s[0]], s[0]))
        return [Candidate(name=n, fitness=rep.fitness, rank=i + 1, report=rep, metrics=m,
                          children=int(children.get(n, 0)), experiment_ids=ids)
                for i, (n, m, rep, ids) in enumerate(scored[:cfg.size])]

    # ------------------------------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.members)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.members]

    @property
    def in_cold_start(self) -> bool:
        return self.num_proposals < self.cfg.cold_start

    @property
    def next_update_at(self) -> int:
        """Number of proposals at which the pool next changes."""
        if self.in_cold_start:
            return self.cfg.cold_start
        return self.num_visible + self.cfg.update_every

    def select(self, draw: int | None = None) -> Selection:
        """Parent and references for one proposal; `draw` (default: this pool's own counter) seeds it."""
        if not self.members:
            raise PoolError("the candidate pool is empty: train and evaluate the seed design first")
        if draw is None:
            draw, self._next_draw = self._next_draw, self._next_draw + 1
        rng = np.random.default_rng([self.cfg.seed, draw])
        parent = self.policy.select_parent(self.members, rng, self.cfg)
        refs = self.policy.select_references(self.members, parent, rng, self.cfg)
        return Selection(parent=parent, references=refs, policy=self.policy.name, draw=draw)


def visible_count(num_proposals: int, cfg: PoolConfig) -> int:
    """How many proposals the pool reflects: none in the cold start, then whole batches only."""
    if num_proposals < cfg.cold_start:
        return 0
    return cfg.cold_start + (num_proposals - cfg.cold_start) // cfg.update_every * cfg.update_every
