"""Structural operators over compositions (offline search; Genesys' unit mutation and crossover).

Every operator returns a new composition of the same depth plus a short description of what it did, which
becomes the design's motivation in the store. Randomness comes only from the `rng` passed in (seeded by the
search), so a search is reproducible.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aira_jax.discovery.compose.space import ComposeSpace, Composition, describe, is_mixer

Op = tuple[Composition, str]


def _pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def reference_compositions(space: ComposeSpace) -> list[tuple[Composition, str]]:
    """Known hand designs adapted to the proxy depth (those whose primitives the space has): the first proposals,
    so the search starts from what people use (Llama's 1:1 interleaving, Jamba / Nemotron-H style SSM hybrids,
    Gated DeltaNet with sliding-window attention)."""
    n, prims = space.num_sublayers, set(space.primitives)
    templates = [
        (('attention', 'mlp'), 'Transformer (Llama): attention and MLP interleaved 1:1'),
        (('mamba2', 'mlp', 'mamba2', 'mlp', 'mamba2', 'mlp', 'attention', 'mlp'),
         'Jamba-style hybrid: one attention sublayer per three Mamba2, MLPs between'),
        (('mamba2', 'mamba2', 'mlp', 'mamba2', 'attention', 'mlp'), 'Nemotron-H style: mostly Mamba2, sparse attention'),
        (('gated_deltanet', 'mlp', 'swa', 'mlp'), 'Gated DeltaNet interleaved with sliding-window attention'),
        (('deltanet', 'mlp'), 'DeltaNet with MLPs (ASI-Arch baseline as a composition)'),
    ]
    out = []
    for block, why in templates:
        if not set(block) <= prims:
            continue
        layers = tuple((block * (n // len(block) + 1))[:n])
        if not space.problems(layers):
            out.append((layers, why))
    return out


def random_draft(space: ComposeSpace, rng: np.random.Generator, *, mlp_share: float = 0.5) -> Op:
    """A random composition: each slot an MLP with probability `mlp_share` (if the space has one), else a mixer."""
    has_mlp = 'mlp' in space.primitives
    for _ in range(100):
        layers = tuple('mlp' if has_mlp and rng.random() < mlp_share else _pick(rng, space.mixers)
                       for _ in range(space.num_sublayers))
        if not space.problems(layers):
            return layers, f'random draft ({describe(layers)})'
    raise RuntimeError('could not draw a valid random composition; the space constraints may be too tight')


def mutate_unit(layers: Composition, space: ComposeSpace, rng: np.random.Generator) -> Op:
    """Genesys' mutation of one unit: one sublayer becomes another primitive."""
    i = int(rng.integers(len(layers)))
    choices = [p for p in space.primitives if p != layers[i]]
    new = _pick(rng, choices)
    out = layers[:i] + (new,) + layers[i + 1:]
    return out, f'mutated sublayer {i}: {layers[i]} -> {new}'


def swap_adjacent(layers: Composition, space: ComposeSpace, rng: np.random.Generator) -> Op:
    """Changes the interleaving without changing the ratio (Sandwich-Transformer style reordering)."""
    candidates = [i for i in range(len(layers) - 1) if layers[i] != layers[i + 1]]
    if not candidates:
        return mutate_unit(layers, space, rng)
    i = _pick(rng, candidates)
    out = list(layers)
    out[i], out[i + 1] = out[i + 1], out[i]
    return tuple(out), f'swapped sublayers {i} and {i + 1} ({layers[i]} <-> {layers[i + 1]})'


def replace_mixer_kind(layers: Composition, space: ComposeSpace, rng: np.random.Generator) -> Op:
    """Every sublayer of one mixer kind becomes another mixer kind (changes the hybrid's ingredient, not its shape)."""
    present = sorted({p for p in layers if is_mixer(p)})
    others = [m for m in space.mixers if m not in present] or [m for m in space.mixers]
    if not present or len(space.mixers) < 2:
        return mutate_unit(layers, space, rng)
    old = _pick(rng, present)
    new = _pick(rng, [m for m in others if m != old] or [m for m in space.mixers if m != old])
    return tuple(new if p == old else p for p in layers), f'replaced every {old} sublayer by {new}'


def crossover(a: Composition, b: Composition, rng: np.random.Generator, *, a_name: str = 'A',
              b_name: str = 'B') -> Op:
    """Structural crossover of two parents of equal depth: one-point (keeps each parent's local interleaving) or
    uniform per sublayer, chosen at random."""
    if len(a) != len(b):
        raise ValueError(f'crossover needs parents of equal depth, got {len(a)} and {len(b)}')
    if rng.random() < 0.5:
        cut = int(rng.integers(1, len(a)))
        return a[:cut] + b[cut:], f'one-point crossover: sublayers 0-{cut - 1} of {a_name}, {cut}- of {b_name}'
    mask = rng.random(len(a)) < 0.5
    child = tuple(y if m else x for x, y, m in zip(a, b, mask))
    return child, f'uniform crossover of {a_name} and {b_name} ({int(mask.sum())} sublayers from {b_name})'


MUTATIONS = {'mutate_unit': mutate_unit, 'swap_adjacent': swap_adjacent, 'replace_mixer_kind': replace_mixer_kind}
