"""Extrapolation of a proxy composition to a deeper model (AIRA-Compose / Composer's two strategies).

- `stack`: repeat the whole proxy block (a 16-sublayer proxy becomes 32 = the block twice). Keeps the proxy's
  local interleaving and its global order within each copy.
- `stretch`: lengthen every run of one primitive in proportion (a run of 2 mamba2 becomes 4). Keeps the global
  order of the proxy (what comes first, what last) and its ratios, rounding run lengths so the total is exact.
"""
from __future__ import annotations

from collections.abc import Sequence

from aira_jax.discovery.compose.space import Composition, runs

STRATEGIES = ('stack', 'stretch')


def stack(layers: Sequence[str], depth: int) -> Composition:
    layers = tuple(layers)
    if depth < len(layers) or depth % len(layers):
        raise ValueError(f'stack: the target depth {depth} must be a multiple of the proxy depth {len(layers)} '
                         '(use stretch for other depths)')
    return layers * (depth // len(layers))


def stretch(layers: Sequence[str], depth: int) -> Composition:
    """Each run scaled by depth/len(layers), largest-remainder rounding, every run at least one sublayer."""
    layers = tuple(layers)
    rs = runs(layers)
    if depth < len(rs):
        raise ValueError(f'stretch: the target depth {depth} is below the number of runs ({len(rs)}) of the proxy')
    factor = depth / len(layers)
    exact = [n * factor for _, n in rs]
    sizes = [max(1, int(e)) for e in exact]
    order = sorted(range(len(rs)), key=lambda i: (-(exact[i] - int(exact[i])), i))
    i = 0
    while sum(sizes) < depth:  # hand out the remainder to the largest fractional parts
        sizes[order[i % len(order)]] += 1
        i += 1
    while sum(sizes) > depth:  # the max(1, .) floor overshot: take from the longest runs
        j = max(range(len(sizes)), key=lambda k: (sizes[k], -k))
        sizes[j] -= 1
    return tuple(p for (p, _), n in zip(rs, sizes) for _ in range(n))


def extrapolate(layers: Sequence[str], depth: int, strategy: str) -> Composition:
    if strategy == 'stack':
        return stack(layers, depth)
    if strategy == 'stretch':
        return stretch(layers, depth)
    raise ValueError(f'unknown extrapolation strategy {strategy!r}; expected one of {STRATEGIES}')
