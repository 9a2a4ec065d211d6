"""The discovery config: its sections, their typed forms, and the checks that name a bad field.

A discovery config (configs/discover_*.py) is one ConfigDict with sections:
    seed      the seed design (a baseline name or a .py path) and its baseline seeds
    loop      iterations, time budget, rewrites, novelty / review switches, context sizes
    pool      PoolConfig fields (size, parent_top, num_references, cold_start, update_every, policy, ...)
    fitness   FitnessConfig fields (terms, combine, steepness, relative_band, leakage_fraction, detect_leakage)
    engineer  EngineerSettings fields, with `train` the trainer config of the scale
    check     the gates' settings (aira_jax.discovery.gates.config)
    llm       the LLM layer (aira_jax.discovery.llm.config.default_llm_config)
    offline   the offline proposer (ProposerConfig fields)
    cognition extra JSONL files of research notes (`paths`), retrieval k
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import ml_collections

from aira_jax.discovery import fitness as fitness_lib
from aira_jax.discovery.pool import PoolConfig


class ConfigError(ValueError):
    """A discovery config with a missing section or a bad value."""


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    seed_design: str = "deltanet"        # a baseline name or a path to a design program
    seed_name: str = ""                  # the seed's name in the store ('' = the baseline name or the file stem)
    baseline_seeds: tuple[int, ...] = (0, 1, 2)
    scale: str = "explore"
    max_iterations: int = 8
    max_seconds: float = 0.0             # no new iteration starts after this wall time of the session (0 = none)
    max_rewrites: int = 2                # Researcher rewrites after a rejection, per iteration
    novelty: bool = True
    break_pattern: bool = True
    novelty_top_k: int = 5
    code_checker: bool = True
    recent_attempts: int = 8
    evidence_history: int = 100          # past designs listed in the Researcher's evidence (outcomes per edit)
    max_consecutive_failures: int = 4    # iterations in a row without a trainable design before the loop stops
    poll_s: float = 2.0
    worker_id: str = "loop-0"
    # Genesys' operators for the Researcher: per iteration, a crossover of the parent with one reference (both
    # programs in the workspace) with this chance, else a mutation of exactly one unit with `unit_mutation_rate`,
    # else ASI-Arch's free evolution of the parent.
    crossover_rate: float = 0.0
    unit_mutation_rate: float = 0.0

    def validate(self) -> "LoopSettings":
        for name in ("max_iterations", "max_rewrites", "novelty_top_k", "recent_attempts", "evidence_history",
                     "max_consecutive_failures"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"loop.{name} must be an integer >= 0, got {v!r}")
        if self.max_consecutive_failures < 1:
            raise ConfigError("loop.max_consecutive_failures must be >= 1")
        if not isinstance(self.max_seconds, (int, float)) or self.max_seconds < 0:
            raise ConfigError(f"loop.max_seconds must be >= 0, got {self.max_seconds!r}")
        for name in ("crossover_rate", "unit_mutation_rate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ConfigError(f"loop.{name} must be a probability in [0, 1], got {v!r}")
        if not self.baseline_seeds or len(set(self.baseline_seeds)) != len(self.baseline_seeds):
            raise ConfigError(f"seed.baseline_seeds must be distinct and non-empty, got {self.baseline_seeds}")
        if not self.seed_design:
            raise ConfigError("seed.design must name a baseline or a design program path")
        return self

    @property
    def seed_is_file(self) -> bool:
        return self.seed_design.endswith(".py") or os.sep in self.seed_design


def _section(cfg: Any, name: str) -> dict[str, Any]:
    if name not in cfg or cfg[name] is None:
        raise ConfigError(f"the discovery config has no `{name}` section (see configs/discover_tiny.py)")
    value = cfg[name]
    return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else dict(value)


def _typed(cls, values: Mapping[str, Any], where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    out = dict(values)
    for f in dataclasses.fields(cls):
        if f.name in out and isinstance(out[f.name], list):
            out[f.name] = tuple(out[f.name])
    try:
        return cls(**out)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def loop_settings(cfg: Any) -> LoopSettings:
    seed = _section(cfg, "seed")
    loop = _section(cfg, "loop")
    values = {**loop, "seed_design": seed.get("design", "deltanet"), "seed_name": seed.get("name", ""),
              "baseline_seeds": tuple(seed.get("baseline_seeds", (0, 1, 2)))}
    unknown = sorted(set(seed) - {"design", "name", "baseline_seeds"})
    if unknown:
        raise ConfigError(f"seed: unknown field(s) {unknown}; known: ['baseline_seeds', 'design', 'name']")
    return _typed(LoopSettings, values, "loop").validate()


def pool_config(cfg: Any, *, seed_name: str, scale: str) -> PoolConfig:
    values = {**_section(cfg, "pool"), "baseline": seed_name, "scale": scale}
    try:
        return _typed(PoolConfig, values, "pool")
    except Exception as e:  # PoolError from its own validation
        raise ConfigError(f"pool: {e}") from None


def fitness_config(cfg: Any) -> fitness_lib.FitnessConfig:
    try:
        return _typed(fitness_lib.FitnessConfig, _section(cfg, "fitness"), "fitness")
    except fitness_lib.FitnessError as e:
        raise ConfigError(f"fitness: {e}") from None
