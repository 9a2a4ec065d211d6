"""The compose search space: an architecture as a fixed-depth sequence of primitive sublayers.

A composition is a tuple of primitive names, one per pre-norm residual sublayer (models/compose.py builds it):
'attention' (full causal softmax), 'swa' (sliding window), 'mlp' (SwiGLU), 'mamba2', 'deltanet', 'gated_deltanet',
and 'design:<name>' for accepted design programs from the store. The search runs at a narrowed proxy depth
(`num_sublayers`); aggregation keeps that depth and extrapolation (extrapolate.py) takes it to the target depth.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence

from aira_jax.models import compose as model_compose

BUILTIN = ('attention', 'swa', 'mlp', 'mamba2', 'deltanet', 'gated_deltanet')
MIXERS = frozenset({'attention', 'swa', 'mamba2', 'deltanet', 'gated_deltanet'})
# One letter per builtin primitive: design names and logs stay readable ('cmp-SMAMDMGM').
CODES = {'attention': 'A', 'swa': 'W', 'mlp': 'M', 'mamba2': 'S', 'deltanet': 'D', 'gated_deltanet': 'G'}
_NAME_LIMIT = 100

Composition = tuple[str, ...]


class CompositionError(ValueError):
    """A composition outside the search space; the message says what to change."""


def is_mixer(primitive: str) -> bool:
    """Sequence mixers move information across positions; an MLP does not."""
    return primitive in MIXERS or primitive.startswith(model_compose.DESIGN_PREFIX)


@dataclasses.dataclass(frozen=True)
class ComposeSpace:
    primitives: tuple[str, ...] = BUILTIN
    num_sublayers: int = 16            # proxy depth in sublayers (a 'layer' of a Transformer is two: mixer + mlp)
    min_mixers: int = 1                # a model without a sequence mixer cannot use context
    min_mlps: int = 0
    max_fraction: Mapping[str, float] = dataclasses.field(default_factory=dict)  # e.g. {'attention': 0.5}
    programs: Mapping[str, str] = dataclasses.field(default_factory=dict)  # 'design:<name>' -> program source

    def __post_init__(self):
        if not isinstance(self.num_sublayers, int) or self.num_sublayers < 2:
            raise CompositionError(f'compose.num_sublayers must be an integer >= 2, got {self.num_sublayers!r}')
        prims = tuple(self.primitives)
        if not prims:
            raise CompositionError('compose.primitives is empty')
        for p in prims:
            try:
                model_compose.check_primitive(p, self.programs)
            except ValueError as e:
                raise CompositionError(f'compose.primitives: {e}') from None
        if len(set(prims)) != len(prims):
            raise CompositionError(f'compose.primitives has duplicates: {list(prims)}')
        if not any(is_mixer(p) for p in prims):
            raise CompositionError(f'compose.primitives {list(prims)} has no sequence mixer')
        if self.min_mixers < 0 or self.min_mlps < 0 or self.min_mixers + self.min_mlps > self.num_sublayers:
            raise CompositionError(f'compose.min_mixers ({self.min_mixers}) + min_mlps ({self.min_mlps}) must fit in '
                                   f'{self.num_sublayers} sublayers')
        for p, frac in dict(self.max_fraction).items():
            if p not in prims or not 0 < float(frac) <= 1:
                raise CompositionError(f'compose.max_fraction[{p!r}] = {frac!r}: must name a primitive of the space '
                                       'and be in (0, 1]')
        object.__setattr__(self, 'primitives', prims)
        object.__setattr__(self, 'programs', dict(self.programs))

    @property
    def mixers(self) -> tuple[str, ...]:
        return tuple(p for p in self.primitives if is_mixer(p))

    def problems(self, layers: Sequence[str], *, depth: int | None = None) -> list[str]:
        """What is wrong with `layers` (empty when it is in the space); `depth` overrides the proxy depth."""
        depth = self.num_sublayers if depth is None else depth
        out = []
        if len(layers) != depth:
            out.append(f'has {len(layers)} sublayers; the search depth is {depth}')
        unknown = sorted({p for p in layers if p not in self.primitives})
        if unknown:
            out.append(f'uses {unknown}, not in the space {list(self.primitives)}')
        mixers = sum(is_mixer(p) for p in layers)
        if mixers < self.min_mixers:
            out.append(f'has {mixers} sequence mixer(s); at least {self.min_mixers} needed so tokens see context')
        mlps = sum(p == model_compose.MLP for p in layers)
        if mlps < self.min_mlps:
            out.append(f'has {mlps} mlp sublayer(s); at least {self.min_mlps} needed')
        for p, frac in self.max_fraction.items():
            n = sum(q == p for q in layers)
            if layers and n > frac * len(layers) + 1e-9:
                out.append(f'has {n} {p!r} sublayers, above the allowed fraction {frac}')
        return out

    def check(self, layers: Sequence[str], *, depth: int | None = None) -> Composition:
        problems = self.problems(layers, depth=depth)
        if problems:
            raise CompositionError(f'composition {to_pattern(layers)!r} ' + '; '.join(problems))
        return tuple(layers)

    def code(self, primitive: str) -> str:
        if primitive in CODES:
            return CODES[primitive]
        names = sorted(p for p in self.primitives if p not in CODES)
        return f'P{names.index(primitive)}' if primitive in names else '?'


def to_pattern(layers: Sequence[str]) -> str:
    """A pattern string of models/compose.py, runs compressed: ('mamba2','mamba2','mlp') -> 'mamba2*2,mlp'."""
    out, i = [], 0
    layers = list(layers)
    while i < len(layers):
        j = i
        while j < len(layers) and layers[j] == layers[i]:
            j += 1
        out.append(layers[i] if j - i == 1 else f'{layers[i]}*{j - i}')
        i = j
    return ','.join(out)


def from_pattern(pattern: str | Sequence[str]) -> Composition:
    """Parses a pattern string (or list) into the expanded tuple of primitive names."""
    try:
        return tuple(model_compose.parse_pattern(pattern))
    except ValueError as e:
        raise CompositionError(str(e)) from None


def runs(layers: Sequence[str]) -> list[tuple[str, int]]:
    """[(primitive, run length), ...] in order."""
    out: list[tuple[str, int]] = []
    for p in layers:
        if out and out[-1][0] == p:
            out[-1] = (p, out[-1][1] + 1)
        else:
            out.append((p, 1))
    return out


def composition_name(layers: Sequence[str], space: ComposeSpace, prefix: str = 'cmp') -> str:
    """A store name that says what the composition is, e.g. 'cmp-SMSMAMGM' (hashed when very deep)."""
    body = ''.join(space.code(p) for p in layers)
    if len(prefix) + 1 + len(body) > _NAME_LIMIT or '?' in body:
        body = f'{len(layers)}x' + hashlib.sha256(','.join(layers).encode()).hexdigest()[:12]
    return re.sub(r'[^A-Za-z0-9_.\-]', '_', f'{prefix}-{body}')


def describe(layers: Sequence[str]) -> str:
    """Counts per primitive, e.g. '4 mamba2, 3 mlp, 1 attention'."""
    counts: dict[str, int] = {}
    for p in layers:
        counts[p] = counts.get(p, 0) + 1
    return ', '.join(f'{n} {p}' for p, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
