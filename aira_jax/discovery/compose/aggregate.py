"""Aggregation of the top compositions of a search into new candidates (AIRA-Compose / Composer).

- `majority_vote`: per sublayer, the primitive most of the top-k chose (ties go to the better-ranked pattern).
- `cluster_vote`: Composer's clustering aggregation as we implement it: the top-k are grouped into `n_clusters`
  clusters by Hamming distance (k-medoids, seeded with the best pattern and then farthest points, so it is
  deterministic), and each cluster gives its own per-sublayer majority. One candidate per cluster keeps distinct
  good families apart instead of averaging them into a pattern none of them resembles.
Inputs are ranked best first; all must have the proxy depth.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aira_jax.discovery.compose.space import ComposeSpace, Composition


def _check(ranked: Sequence[Composition]) -> None:
    if not ranked:
        raise ValueError('aggregation needs at least one composition')
    depths = {len(c) for c in ranked}
    if len(depths) != 1:
        raise ValueError(f'aggregation needs compositions of one depth, got depths {sorted(depths)}')


def majority_vote(ranked: Sequence[Composition], space: ComposeSpace | None = None) -> Composition:
    """Per-sublayer majority over `ranked` (best first). When the vote breaks a space constraint (e.g. leaves no
    mixer), the best pattern's primitive is kept at the contested positions until the result is valid."""
    _check(ranked)
    depth = len(ranked[0])
    out, margins = [], []
    for i in range(depth):
        counts: dict[str, int] = {}
        for c in ranked:
            counts[c[i]] = counts.get(c[i], 0) + 1
        top = max(counts.values())
        # Tie: the primitive of the best-ranked pattern among the tied ones.
        winner = next(c[i] for c in ranked if counts[c[i]] == top)
        out.append(winner)
        margins.append(top / len(ranked))
    result = tuple(out)
    if space is not None and space.problems(result, depth=depth):
        best = list(ranked[0])
        for i in np.argsort(margins, kind='stable'):  # least certain positions first
            out[i] = best[i]
            if not space.problems(tuple(out), depth=depth):
                break
        result = tuple(out)
    return result


def hamming(a: Composition, b: Composition) -> int:
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


def cluster(ranked: Sequence[Composition], n_clusters: int, *, iterations: int = 20) -> list[list[int]]:
    """k-medoids on Hamming distance; returns clusters as lists of indices into `ranked`, each sorted, clusters
    ordered by their best member's rank."""
    _check(ranked)
    n = len(ranked)
    k = max(1, min(n_clusters, n))
    dist = np.array([[hamming(a, b) for b in ranked] for a in ranked])
    medoids = [0]
    while len(medoids) < k:
        far = int(np.argmax(dist[:, medoids].min(axis=1)))
        if far in medoids:
            break
        medoids.append(far)
    for _ in range(iterations):
        assign = np.argmin(dist[:, medoids], axis=1)  # ties -> the earlier (better) medoid
        new = []
        for j in range(len(medoids)):
            members = np.flatnonzero(assign == j)
            if members.size == 0:
                new.append(medoids[j])
                continue
            costs = dist[np.ix_(members, members)].sum(axis=1)
            new.append(int(members[np.argmin(costs)]))
        if new == medoids:
            break
        medoids = new
    assign = np.argmin(dist[:, medoids], axis=1)
    groups = [sorted(np.flatnonzero(assign == j).tolist()) for j in range(len(medoids))]
    groups = [g for g in groups if g]
    return sorted(groups, key=lambda g: g[0])


def cluster_vote(ranked: Sequence[Composition], n_clusters: int,
                 space: ComposeSpace | None = None) -> list[tuple[Composition, list[int]]]:
    """One aggregated composition per cluster, with the member indices it came from; best cluster first."""
    return [(majority_vote([ranked[i] for i in g], space), g) for g in cluster(ranked, n_clusters)]
