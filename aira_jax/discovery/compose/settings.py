"""The `compose` section of a compose config, typed and validated (a bad field is named in the error)."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from aira_jax.discovery.compose.extrapolate import STRATEGIES
from aira_jax.discovery.compose.space import ComposeSpace, CompositionError


class ComposeConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class ComposeSettings:
    primitives: tuple[str, ...] = ('attention', 'swa', 'mlp', 'mamba2', 'deltanet', 'gated_deltanet')
    store_designs: tuple[str, ...] = ()    # accepted design programs of a discovery store to offer as primitives
    design_store: str = ''                 # that store (path or URL); '' = none
    proxy_sublayers: int = 16
    min_mixers: int = 1
    min_mlps: int = 0
    max_fraction: dict[str, float] = dataclasses.field(default_factory=dict)
    num_patterns: int = 12                 # proxy evaluations of the search stage (trained or failed)
    batch_size: int = 4                    # proposals per round (trained in parallel by `workers`)
    max_seconds: float = 0.0               # no new search round after this (0 = no limit)
    proxy_scale: str = 'proxy'             # the experiments' scale name in the store
    # Offline evolution.
    seed: int = 0
    init_random: int = 6
    use_references: bool = True
    tournament: int = 3
    crossover_rate: float = 0.4
    # Aggregation over the top-k of the search.
    top_k: int = 6
    n_clusters: int = 2
    aggregate: bool = True
    # Extrapolation to depth.
    target_sublayers: int = 32
    strategies: tuple[str, ...] = STRATEGIES
    extrapolate_top: int = 1               # best proxy compositions extrapolated with every strategy
    baseline: str = 'attention,mlp'        # block stacked to the target depth: the ladder's baseline
    run_ladder: bool = True                # False: stop after extrapolation (the `ladder` section is not used)
    # After the ladder.
    export_top: int = 0                    # gallery entries for the best designs of the ladder's last rung
    workers: int = 1                       # training threads (each trains in its own child process)

    def validate(self) -> 'ComposeSettings':
        for name in ('proxy_sublayers', 'num_patterns', 'batch_size', 'top_k', 'n_clusters', 'target_sublayers',
                     'extrapolate_top', 'workers', 'init_random', 'tournament'):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ComposeConfigError(f'compose.{name} must be an integer >= 1, got {v!r}')
        if self.export_top < 0:
            raise ComposeConfigError(f'compose.export_top must be >= 0, got {self.export_top}')
        if not 0 <= self.crossover_rate <= 1:
            raise ComposeConfigError(f'compose.crossover_rate must be in [0, 1], got {self.crossover_rate}')
        if self.target_sublayers < self.proxy_sublayers:
            raise ComposeConfigError(f'compose.target_sublayers ({self.target_sublayers}) must be >= proxy_sublayers '
                                     f'({self.proxy_sublayers})')
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad or not self.strategies:
            raise ComposeConfigError(f'compose.strategies {list(self.strategies)}: each must be one of {STRATEGIES}')
        if 'stack' in self.strategies and self.target_sublayers % self.proxy_sublayers:
            raise ComposeConfigError(f'compose.strategies has stack, so target_sublayers ({self.target_sublayers}) '
                                     f'must be a multiple of proxy_sublayers ({self.proxy_sublayers})')
        if self.max_seconds < 0:
            raise ComposeConfigError(f'compose.max_seconds must be >= 0, got {self.max_seconds}')
        return self

    def space(self, programs: Mapping[str, str] | None = None) -> ComposeSpace:
        try:
            return ComposeSpace(primitives=tuple(self.primitives), num_sublayers=self.proxy_sublayers,
                                min_mixers=self.min_mixers, min_mlps=self.min_mlps,
                                max_fraction=dict(self.max_fraction), programs=dict(programs or {}))
        except CompositionError as e:
            raise ComposeConfigError(str(e)) from None


def compose_settings(section: Any) -> ComposeSettings:
    values = section.to_dict() if hasattr(section, 'to_dict') else dict(section or {})
    known = {f.name for f in dataclasses.fields(ComposeSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ComposeConfigError(f'compose: unknown field(s) {unknown}; known: {sorted(known)}')
    for f in dataclasses.fields(ComposeSettings):
        if isinstance(values.get(f.name), list):
            values[f.name] = tuple(values[f.name])
    try:
        return ComposeSettings(**values).validate()
    except TypeError as e:
        raise ComposeConfigError(f'compose: {e}') from None
