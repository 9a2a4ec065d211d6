"""Typed records of the discovery loop.

Records are immutable dataclasses that validate themselves on construction, so a bad value fails where it is
made, with a message naming the field, and never reaches the store. The store (`store.py`) is the only place
records are persisted; ids and timestamps are assigned there and come back on the returned copies.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import re
from typing import Any, Mapping, Sequence

from aira_jax.discovery.status import (LEGAL_TRANSITIONS, STATUSES_NEEDING_REASON, TERMINAL_STATUSES,  # noqa: F401
                                       IllegalTransitionError, RecordError, Status, check_transition, parse_status)

# Names end up in file paths (gallery export) and prompts, so keep them to a safe alphabet.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class DesignKind(str, enum.Enum):
    PROGRAM = "program"          # source is a design program (a Python file defining `Mixer`)
    COMPOSITION = "composition"  # source is a layer pattern of named primitives, e.g. 'mamba2,mlp,attention,mlp'


def program_hash(source: str) -> str:
    """Content address of a program text (sha256 of its UTF-8 bytes)."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def validate_name(name: Any, what: str = "design name") -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RecordError(
            f"invalid {what} {name!r}: use 1-128 characters from [A-Za-z0-9_.-], starting with a letter or digit")
    return name


# ----------------------------------------------------------------------------------------------- validators
def _str(value: Any, field: str, *, required: bool = False) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{field} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise RecordError(f"{field} must not be empty")
    return value


def _opt_float(value: Any, field: str, *, nonneg: bool = False) -> float | None:
    """None means 'not measured'; NaN/inf are kept (a diverged run) and handled by fitness."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:  # numpy scalars
            value = float(value)
        except (TypeError, ValueError):
            raise RecordError(f"{field} must be a number or None, got {value!r}") from None
    value = float(value)
    if nonneg and value < 0:
        raise RecordError(f"{field} must be >= 0, got {value}")
    return value


def _opt_int(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if hasattr(value, "__index__"):
            value = value.__index__()
        else:
            raise RecordError(f"{field} must be an integer or None, got {value!r}")
    if value < 0:
        raise RecordError(f"{field} must be >= 0, got {value}")
    return int(value)


def _json_dict(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecordError(f"{field} must be a mapping, got {type(value).__name__}")
    value = dict(value)
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise RecordError(f"{field} must be JSON-serialisable: {e}") from None
    return value


def _float_dict(value: Any, field: str) -> dict[str, float | None]:
    """A name -> number mapping (numpy scalars accepted); values become Python floats."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecordError(f"{field} must be a mapping, got {type(value).__name__}")
    return {str(k): _opt_float(v, f"{field}[{k!r}]") for k, v in value.items()}


def _names(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise RecordError(f"{field} must be a list of names, got {value!r}")
    names = tuple(validate_name(v, f"name in {field}") for v in value)
    if len(set(names)) != len(names):
        raise RecordError(f"{field} has duplicates: {list(names)}")
    return names


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # frozen dataclasses normalise their own fields in __post_init__


class _Record:
    """JSON (de)serialisation shared by the records; NaN survives as Python's json writes it."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, enum.Enum):
                v = v.value
            elif isinstance(v, tuple):
                v = [list(x) if isinstance(x, tuple) else (x.to_dict() if isinstance(x, _Record) else x) for x in v]
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise RecordError(f"{cls.__name__} has no fields {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=True, sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))


# ----------------------------------------------------------------------------------------------- records
@dataclasses.dataclass(frozen=True)
class Design(_Record):
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
            _set(self, "kind", DesignKind(self.kind))
        except ValueError:
            raise RecordError(f"design kind must be 'program' or 'composition', got {self.kind!r}") from None
        _str(self.source, "design source", required=True)
        _str(self.motivation, "motivation")
        _str(self.summary, "summary")
        if self.parent is not None:
            validate_name(self.parent, "parent name")
            if self.parent == self.name:
                raise RecordError(f"design {self.name!r} cannot be its own parent")
        _set(self, "references", _names(self.references, "references"))
        if self.name in self.references:
            raise RecordError(f"design {self.name!r} cannot reference itself")
        _set(self, "meta", _json_dict(self.meta, "design meta"))

    @property
    def program_hash(self) -> str:
        return program_hash(self.source)


@dataclasses.dataclass(frozen=True)
class Experiment(_Record):
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
        _set(self, "status", parse_status(self.status, "experiment status"))
        _str(self.reason, "reason")
        validate_name(self.scale, "scale")
        _set(self, "config", _json_dict(self.config, "experiment config"))
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise RecordError(f"priority must be an integer, got {self.priority!r}")
        _opt_int(self.attempts, "attempts")

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclasses.dataclass(frozen=True)
class Result(_Record):
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
            curve.append((_opt_int(point[0], f"loss_curve[{i}] step"), _opt_float(point[1], f"loss_curve[{i}] loss")))
        _set(self, "loss_curve", tuple(curve))
        _set(self, "val_loss", _opt_float(self.val_loss, "val_loss", nonneg=True))
        _set(self, "bpb", _opt_float(self.bpb, "bpb", nonneg=True))
        _set(self, "benchmark_scores", _float_dict(self.benchmark_scores, "benchmark_scores"))
        _set(self, "num_params", _opt_int(self.num_params, "num_params"))
        _set(self, "tokens", _opt_int(self.tokens, "tokens"))
        _set(self, "throughput", _opt_float(self.throughput, "throughput", nonneg=True))
        _set(self, "wall_time_s", _opt_float(self.wall_time_s, "wall_time_s", nonneg=True))
        seeds = tuple(self.seeds or ())
        for s in seeds:
            if isinstance(s, bool) or not hasattr(s, "__index__"):
                raise RecordError(f"seeds must be integers, got {s!r}")
        _set(self, "seeds", tuple(s.__index__() for s in seeds))
        per_seed = tuple(_opt_float(v, "val_loss_per_seed", nonneg=True) for v in (self.val_loss_per_seed or ()))
        if per_seed and len(per_seed) != len(seeds):
            raise RecordError(f"val_loss_per_seed has {len(per_seed)} values for {len(seeds)} seeds")
        _set(self, "val_loss_per_seed", per_seed)
        _set(self, "meta", _json_dict(self.meta, "result meta"))

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
class Analysis(_Record):
    """The Analyst's reading of an experiment against its parent and siblings."""
    text: str
    compared_with: tuple[str, ...] = ()  # names of the designs it was compared against
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    experiment_id: int | None = None
    id: int | None = None
    created_at: float | None = None

    def __post_init__(self):
        _str(self.text, "analysis text", required=True)
        _set(self, "compared_with", _names(self.compared_with, "compared_with"))
        _set(self, "meta", _json_dict(self.meta, "analysis meta"))


@dataclasses.dataclass(frozen=True)
class JudgeScore(_Record):
    """An LLM judge's sub-scores on the 1-10 scale and their weighted total (the weighted mean)."""
    sub_scores: dict[str, float]
    weights: dict[str, float] = dataclasses.field(default_factory=dict)  # empty = equal weights
    rationale: str = ""
    judge: str = ""                   # which model judged
    experiment_id: int | None = None
    id: int | None = None
    created_at: float | None = None

    def __post_init__(self):
        scores = _float_dict(self.sub_scores, "sub_scores")
        if not scores:
            raise RecordError("a judge score needs at least one sub-score")
        clean = {}
        for k, v in scores.items():
            if v is None or not 1.0 <= v <= 10.0:  # NaN fails this comparison too
                raise RecordError(f"sub-score {k!r} must be in [1, 10], got {v}")
            clean[str(k)] = v
        _set(self, "sub_scores", clean)
        weights = _float_dict(self.weights, "weights")
        if weights:
            if set(weights) != set(clean):
                raise RecordError(f"weights keys {sorted(weights)} must match sub-score keys {sorted(clean)}")
            if not all(w is not None and math.isfinite(w) and w >= 0 for w in weights.values()) \
                    or sum(weights.values()) <= 0:
                raise RecordError(f"weights must be finite with a positive sum, got {weights}")
        _set(self, "weights", weights)
        _str(self.rationale, "rationale")
        _str(self.judge, "judge")

    @property
    def total(self) -> float:
        w = self.weights or {k: 1.0 for k in self.sub_scores}
        return sum(w[k] * s for k, s in self.sub_scores.items()) / sum(w.values())


KERNEL_FAULT = "fault"      # the run trained with the kernel set aside: later runs in its scope set it aside
KERNEL_CLEARED = "cleared"  # the run failed the same way without it: the failure was the design's


@dataclasses.dataclass(frozen=True)
class KernelVerdict(_Record):
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
        _str(self.scope, "kernel verdict scope", required=True)
        if self.verdict not in (KERNEL_FAULT, KERNEL_CLEARED):
            raise RecordError(f"kernel verdict must be {KERNEL_FAULT!r} or {KERNEL_CLEARED!r}, got {self.verdict!r}")
        _str(self.reason, "kernel verdict reason")
        _str(self.worker, "kernel verdict worker")


@dataclasses.dataclass(frozen=True)
class CognitionEntry(_Record):
    entry_id: str
    text: str
    score: float | None = None  # retrieval similarity

    def __post_init__(self):
        _str(self.entry_id, "cognition entry_id", required=True)
        _str(self.text, "cognition text")
        _set(self, "score", _opt_float(self.score, "cognition score"))


@dataclasses.dataclass(frozen=True)
class CognitionRetrieval(_Record):
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
        _set(self, "entries", tuple(entries))
        validate_name(self.stage, "cognition stage")
        _str(self.query, "cognition query")


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
