"""Typed records of the discovery loop.

Records are immutable dataclasses that validate themselves on construction, so a bad value fails where it is
made, with a message naming the field, and never reaches the store. The store (`store.py`) is the only place
records are persisted; ids and timestamps are assigned there and come back on the returned copies.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
from typing import Any, Mapping, Sequence

from aira_jax.discovery.record_fields import (Record, as_str, float_dict, json_dict, names, opt_float, opt_int,
                                              set_field, validate_name)
from aira_jax.discovery.status import (LEGAL_TRANSITIONS, STATUSES_NEEDING_REASON, TERMINAL_STATUSES,  # noqa: F401
                                       IllegalTransitionError, RecordError, Status, check_transition, parse_status)


class DesignKind(str, enum.Enum):
    PROGRAM = "program"          # source is a design program (a Python file defining `Mixer`)
    COMPOSITION = "composition"  # source is a layer pattern of named primitives, e.g. 'mamba2,mlp,attention,mlp'


def program_hash(source: str) -> str:
    """Content address of a program text (sha256 of its UTF-8 bytes)."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------------- records
@dataclasses.dataclass(frozen=True)
class Design(Record):
    """A candidate architecture: a design program or a composition, with its place in the lineage."""
    name: str
    kind: DesignKind
    source: str                       # program text, or the composition pattern
    motivation: str = ""
    parent: str | None = None         # name of the design this one was derived from (None for a seed)
    references: tuple[str, ...] = ()  # names of designs shown to the Researcher as inspiration
    summary: str = ""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    id: int | None = None
    created_at: float | None = None

    def __post_init__(self):
        validate_name(self.name)
        try:
            set_field(self, "kind", DesignKind(self.kind))
        except ValueError:
            raise RecordError(f"design kind must be 'program' or 'composition', got {self.kind!r}") from None
        as_str(self.source, "design source", required=True)
        as_str(self.motivation, "motivation")
        as_str(self.summary, "summary")
        if self.parent is not None:
            validate_name(self.parent, "parent name")
            if self.parent == self.name:
                raise RecordError(f"design {self.name!r} cannot be its own parent")
        set_field(self, "references", names(self.references, "references"))
        if self.name in self.references:
            raise RecordError(f"design {self.name!r} cannot reference itself")
        set_field(self, "meta", json_dict(self.meta, "design meta"))

    @property
    def program_hash(self) -> str:
        return program_hash(self.source)


@dataclasses.dataclass(frozen=True)
class Experiment(Record):
    """One training-and-evaluation run of a design at one scale; the unit of work workers claim."""
    design: str
    status: Status = Status.PROPOSED
    reason: str = ""                  # why it was rejected / failed (and the last note otherwise)
    scale: str = "explore"            # which rung of the ladder ('explore', '340M', ...)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)  # overrides for the training config
    priority: int = 0                 # higher is claimed first
    attempts: int = 0                 # number of claims so far (grows when a dead worker's claim is re-taken)
    claimed_by: str | None = None
    lease_expires_at: float | None = None
    id: int | None = None
    created_at: float | None = None
    updated_at: float | None = None

    def __post_init__(self):
        validate_name(self.design)
        set_field(self, "status", parse_status(self.status, "experiment status"))
        as_str(self.reason, "reason")
        validate_name(self.scale, "scale")
        set_field(self, "config", json_dict(self.config, "experiment config"))
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise RecordError(f"priority must be an integer, got {self.priority!r}")
        opt_int(self.attempts, "attempts")

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclasses.dataclass(frozen=True)
class Result(Record):
    """Measured outcome of an experiment (aggregated over its seeds)."""
    loss_curve: tuple[tuple[int, float], ...] = ()  # (step, training loss)
    val_loss: float | None = None                   # mean over seeds; NaN = diverged, None = not measured
    bpb: float | None = None                        # validation bits per byte
    benchmark_scores: dict[str, float] = dataclasses.field(default_factory=dict)  # task -> accuracy in [0, 1]
    num_params: int | None = None
    tokens: int | None = None                       # training tokens seen
    throughput: float | None = None                 # training tokens per second
    wall_time_s: float | None = None
    seeds: tuple[int, ...] = ()
    val_loss_per_seed: tuple[float, ...] = ()       # same order as `seeds` when given (feeds the noise floor)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    experiment_id: int | None = None
    id: int | None = None
    created_at: float | None = None

    def __post_init__(self):
        curve = []
        for i, point in enumerate(self.loss_curve or ()):
            if not isinstance(point, Sequence) or len(point) != 2:
                raise RecordError(f"loss_curve[{i}] must be a (step, loss) pair, got {point!r}")
            curve.append((opt_int(point[0], f"loss_curve[{i}] step"), opt_float(point[1], f"loss_curve[{i}] loss")))
        set_field(self, "loss_curve", tuple(curve))
        set_field(self, "val_loss", opt_float(self.val_loss, "val_loss", nonneg=True))
        set_field(self, "bpb", opt_float(self.bpb, "bpb", nonneg=True))
        set_field(self, "benchmark_scores", float_dict(self.benchmark_scores, "benchmark_scores"))
        set_field(self, "num_params", opt_int(self.num_params, "num_params"))
        set_field(self, "tokens", opt_int(self.tokens, "tokens"))
        set_field(self, "throughput", opt_float(self.throughput, "throughput", nonneg=True))
        set_field(self, "wall_time_s", opt_float(self.wall_time_s, "wall_time_s", nonneg=True))
        seeds = tuple(self.seeds or ())
        for s in seeds:
            if isinstance(s, bool) or not hasattr(s, "__index__"):
                raise RecordError(f"seeds must be integers, got {s!r}")
        set_field(self, "seeds", tuple(s.__index__() for s in seeds))
        per_seed = tuple(opt_float(v, "val_loss_per_seed", nonneg=True) for v in (self.val_loss_per_seed or ()))
        if per_seed and len(per_seed) != len(seeds):
            raise RecordError(f"val_loss_per_seed has {len(per_seed)} values for {len(seeds)} seeds")
        set_field(self, "val_loss_per_seed", per_seed)
        set_field(self, "meta", json_dict(self.meta, "result meta"))

    @property
    def benchmark_mean(self) -> float | None:
        """Mean benchmark score; None when nothing was measured, NaN when a task's score is NaN."""
        if not self.benchmark_scores:
            return None
        values = [v if v is not None else math.nan for v in self.benchmark_scores.values()]
        return sum(values) / len(values)

    @property
    def seed_losses(self) -> tuple[float, ...]:
        """The per-run validation losses this result stands for (one value when seeds were not kept apart)."""
        if self.val_loss_per_seed:
            return self.val_loss_per_seed
        return () if self.val_loss is None else (self.val_loss,)


@dataclasses.dataclass(frozen=True)
class Analysis(Record):
    """The Analyst's reading of an experiment against its parent and siblings."""
    text: str
    compared_with: tuple[str, ...] = ()  # names of the designs it was compared against
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    experiment_id: int | None = None
    id: int | None = None
    created_at: float | None = None

    def __post_init__(self):
        as_str(self.text, "analysis text", required=True)
        set_field(self, "compared_with", names(self.compared_with, "compared_with"))
        set_field(self, "meta", json_dict(self.meta, "analysis meta"))


@dataclasses.dataclass(frozen=True)
class JudgeScore(Record):
    """An LLM judge's sub-scores on the 1-10 scale and their weighted total (the weighted mean)."""
    sub_scores: dict[str, float]
    weights: dict[str, float] = dataclasses.field(default_factory=dict)  # empty = equal weights
    rationale: str = ""
    judge: str = ""                   # which model judged
    experiment_id: int | None = None
    id: int | None = None
    created_at: float | None = None

    def __post_init__(self):
        scores = float_dict(self.sub_scores, "sub_scores")
        if not scores:
            raise RecordError("a judge score needs at least one sub-score")
        clean = {}
        for k, v in scores.items():
            if v is None or not 1.0 <= v <= 10.0:  # NaN fails this comparison too
                raise RecordError(f"sub-score {k!r} must be in [1, 10], got {v}")
            clean[str(k)] = v
        set_field(self, "sub_scores", clean)
        weights = float_dict(self.weights, "weights")
        if weights:
            if set(weights) != set(clean):
                raise RecordError(f"weights keys {sorted(weights)} must match sub-score keys {sorted(clean)}")
            if not all(w is not None and math.isfinite(w) and w >= 0 for w in weights.values()) \
                    or sum(weights.values()) <= 0:
                raise RecordError(f"weights must be finite with a positive sum, got {weights}")
        set_field(self, "weights", weights)
        as_str(self.rationale, "rationale")
        as_str(self.judge, "judge")

    @property
    def total(self) -> float:
        w = self.weights or {k: 1.0 for k in self.sub_scores}
        return sum(w[k] * s for k, s in self.sub_scores.items()) / sum(w.values())


KERNEL_FAULT = "fault"      # the run trained with the kernel set aside: later runs in its scope set it aside
KERNEL_CLEARED = "cleared"  # the run failed the same way without it: the failure was the design's


@dataclasses.dataclass(frozen=True)
class KernelVerdict(Record):
    """What a retry without a Pallas kernel found about it (see aira_jax.discovery.kernel_faults), in a scope: the
    device kind and the jax, jaxlib and aira-jax versions of the run."""
    op: str                  # the op whose kernel ran, e.g. 'delta_rule'
    scope: str
    verdict: str             # KERNEL_FAULT | KERNEL_CLEARED
    reason: str = ""         # the failure that started the retry
    worker: str = ""
    experiment_id: int | None = None
    id: int | None = None
    created_at: float | None = None

    def __post_init__(self):
        validate_name(self.op, "kernel op")
        as_str(self.scope, "kernel verdict scope", required=True)
        if self.verdict not in (KERNEL_FAULT, KERNEL_CLEARED):
            raise RecordError(f"kernel verdict must be {KERNEL_FAULT!r} or {KERNEL_CLEARED!r}, got {self.verdict!r}")
        as_str(self.reason, "kernel verdict reason")
        as_str(self.worker, "kernel verdict worker")


@dataclasses.dataclass(frozen=True)
class CognitionEntry(Record):
    entry_id: str
    text: str
    score: float | None = None  # retrieval similarity

    def __post_init__(self):
        as_str(self.entry_id, "cognition entry_id", required=True)
        as_str(self.text, "cognition text")
        set_field(self, "score", opt_float(self.score, "cognition score"))


@dataclasses.dataclass(frozen=True)
class CognitionRetrieval(Record):
    """Which knowledge entries were retrieved for an experiment, at which stage, for which query."""
    entries: tuple[CognitionEntry, ...]
    stage: str = "proposal"  # 'proposal' | 'analysis' | any other agent step
    query: str = ""
    experiment_id: int | None = None
    id: int | None = None
    created_at: float | None = None

    def __post_init__(self):
        entries = []
        for e in self.entries or ():
            if isinstance(e, Mapping):
                e = CognitionEntry.from_dict(e)
            if not isinstance(e, CognitionEntry):
                raise RecordError(f"cognition entries must be CognitionEntry or mappings, got {e!r}")
            entries.append(e)
        set_field(self, "entries", tuple(entries))
        validate_name(self.stage, "cognition stage")
        as_str(self.query, "cognition query")


@dataclasses.dataclass(frozen=True)
class Claim:
    """A worker's hold on an experiment until `lease_expires_at` (renewed by heartbeats)."""
    experiment_id: int
    worker: str
    token: str       # unique per claim, so a worker whose lease was re-taken cannot write through a stale claim
    attempt: int
    lease_expires_at: float
    lease_s: float   # lease length; heartbeats renew by this much unless told otherwise


@dataclasses.dataclass(frozen=True)
class StatusEvent:
    """One status change of an experiment, as the store's audit trail keeps it."""
    experiment_id: int
    from_status: Status | None  # None for the creation event
    to_status: Status
    reason: str
    worker: str | None
    at: float
