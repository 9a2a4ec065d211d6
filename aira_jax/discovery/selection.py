"""Pluggable policies that pick a parent and references from the ranked candidate pool.

- `asi_arch` (default): parent uniformly from the top `parent_top`, references from ranks parent_top+1..size
  (ASI-Arch: top-10 parents, 4 references from ranks 11-50).
- `uct`: parent maximising fitness + c * sqrt(ln(1 + N) / (1 + n_i)), n_i the design's children in the lineage
  (how often it has been expanded) and N their sum, so well-scored but rarely expanded designs get their turn.
- `quadrant` (Genesys): split the pool by fitness (above / below the median) and by confidence (more / fewer
  evaluations than the median), pick a quadrant by weight among the non-empty ones, then a parent uniformly
  inside it; references are drawn round-robin across quadrants so the Researcher sees varied designs.

Policies are pure functions of (ranked candidates, rng): the pool hands them a generator seeded by
(seed, draw index), so a selection is reproducible. Register new ones with `register_policy`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from aira_jax.discovery.pool import Candidate, PoolConfig


class SelectionPolicy:
    """Base policy: subclasses choose the parent; references default to ASI-Arch's lower-rank sampling."""
    name = "base"

    def select_parent(self, ranked: Sequence["Candidate"], rng: np.random.Generator,
                      cfg: "PoolConfig") -> "Candidate":
        raise NotImplementedError

    def select_references(self, ranked: Sequence["Candidate"], parent: "Candidate", rng: np.random.Generator,
                          cfg: "PoolConfig") -> tuple["Candidate", ...]:
        """Samples from ranks parent_top+1..size; tops up from the other members when those are too few."""
        lower = [c for c in ranked[cfg.parent_top:cfg.size] if c.name != parent.name]
        picked = _sample(lower, cfg.num_references, rng)
        if len(picked) < cfg.num_references:
            rest = [c for c in ranked[:cfg.parent_top] if c.name != parent.name]
            picked += _sample(rest, cfg.num_references - len(picked), rng)
        return tuple(picked)


class ASIArchPolicy(SelectionPolicy):
    name = "asi_arch"

    def select_parent(self, ranked, rng, cfg):
        top = ranked[:cfg.parent_top]
        return top[int(rng.integers(len(top)))]


class UCTPolicy(SelectionPolicy):
    name = "uct"

    def __init__(self, c: float = 1.0):
        if not (math.isfinite(c) and c >= 0):
            raise ValueError(f"UCT exploration constant must be finite and >= 0, got {c}")
        self.c = c

    def scores(self, ranked: Sequence["Candidate"]) -> list[float]:
        total = sum(c.children for c in ranked)
        return [c.fitness + self.c * math.sqrt(math.log(1 + total) / (1 + c.children)) for c in ranked]

    def select_parent(self, ranked, rng, cfg):
        scores = self.scores(ranked)
        best = max(scores)
        ties = [c for c, s in zip(ranked, scores) if s >= best - 1e-12]
        return ties[int(rng.integers(len(ties)))]  # the seeded rng breaks exact ties


class QuadrantPolicy(SelectionPolicy):
    """Genesys-style selection over (fitness, confidence) quadrants."""
    name = "quadrant"
    QUADRANTS = ("good_confident", "good_unconfident", "poor_unconfident", "poor_confident")

    def __init__(self, weights: Sequence[float] = (0.4, 0.3, 0.2, 0.1)):
        weights = tuple(float(w) for w in weights)
        if len(weights) != 4 or any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"quadrant weights must be 4 non-negative numbers with a positive sum, got {weights}")
        self.weights = dict(zip(self.QUADRANTS, weights))

    def quadrants(self, ranked: Sequence["Candidate"]) -> dict[str, list["Candidate"]]:
        out: dict[str, list] = {q: [] for q in self.QUADRANTS}
        if not ranked:
            return out
        # `ranked` is sorted by fitness, so the better half by rank is the above-median half (ties resolved
        # the way the pool ranks them); confidence is strictly more evaluations than the median candidate.
        half = math.ceil(len(ranked) / 2)
        eval_median = float(np.median([c.metrics.num_evals for c in ranked]))
        for i, c in enumerate(ranked):
            good = i < half
            confident = c.metrics.num_evals > eval_median
            out[("good_" if good else "poor_") + ("confident" if confident else "unconfident")].append(c)
        return out

    def select_parent(self, ranked, rng, cfg):
        quads = self.quadrants(ranked[:cfg.size])
        names = [q for q in self.QUADRANTS if quads[q] and self.weights[q] > 0]
        if not names:  # every populated quadrant has weight 0: fall back to the whole pool
            return ranked[int(rng.integers(len(ranked)))]
        p = np.array([self.weights[q] for q in names])
        q = names[int(rng.choice(len(names), p=p / p.sum()))]
        return quads[q][int(rng.integers(len(quads[q])))]

    def select_references(self, ranked, parent, rng, cfg):
        quads = self.quadrants(ranked[:cfg.size])
        pools = [list(_sample([c for c in quads[q] if c.name != parent.name], len(quads[q]), rng))
                 for q in self.QUADRANTS]
        picked = []
        while len(picked) < cfg.num_references and any(pools):
            for pool in pools:  # one from each quadrant in turn
                if pool and len(picked) < cfg.num_references:
                    picked.append(pool.pop(0))
        return tuple(picked)


def _sample(items: Sequence, k: int, rng: np.random.Generator) -> list:
    if k <= 0 or not items:
        return []
    idx = rng.permutation(len(items))[:k]
    return [items[int(i)] for i in idx]


_REGISTRY: dict[str, Callable[..., SelectionPolicy]] = {
    "asi_arch": ASIArchPolicy, "uct": UCTPolicy, "quadrant": QuadrantPolicy,
}


def register_policy(name: str, factory: Callable[..., SelectionPolicy]) -> None:
    _REGISTRY[name] = factory


def make_policy(name: str, **kwargs) -> SelectionPolicy:
    if name not in _REGISTRY:
        raise ValueError(f"unknown selection policy {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)
