"""The life cycle of an experiment: statuses and the legal moves between them."""
from __future__ import annotations

import enum
from typing import Any


class RecordError(ValueError):
    """A record was built from invalid values."""


class IllegalTransitionError(RecordError):
    """An experiment was asked to move to a status its current status cannot reach."""


class Status(str, enum.Enum):
    PROPOSED = "proposed"
    CHECKED = "checked"
    TRAINING = "training"
    TRAINED = "trained"
    ANALYSED = "analysed"
    REJECTED = "rejected"
    FAILED = "failed"


# The life of an experiment runs one way. Rejection is the Checker's verdict (before any training); failure can
# strike at any live stage (crash, budget, lost data). Terminal states have no way out: a retry is a new experiment.
LEGAL_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PROPOSED: frozenset({Status.CHECKED, Status.REJECTED, Status.FAILED}),
    Status.CHECKED: frozenset({Status.TRAINING, Status.REJECTED, Status.FAILED}),
    Status.TRAINING: frozenset({Status.TRAINED, Status.FAILED}),
    Status.TRAINED: frozenset({Status.ANALYSED, Status.FAILED}),
    Status.ANALYSED: frozenset(),
    Status.REJECTED: frozenset(),
    Status.FAILED: frozenset(),
}
TERMINAL_STATUSES = frozenset(s for s, nxt in LEGAL_TRANSITIONS.items() if not nxt)
STATUSES_NEEDING_REASON = frozenset({Status.REJECTED, Status.FAILED})


def check_transition(current: Status | str, target: Status | str, reason: str = "") -> tuple[Status, Status]:
    """Validates a status change; returns both statuses as `Status`. Raises IllegalTransitionError."""
    cur, tgt = parse_status(current, "current status"), parse_status(target, "target status")
    if tgt not in LEGAL_TRANSITIONS[cur]:
        allowed = sorted(s.value for s in LEGAL_TRANSITIONS[cur]) or ["none (terminal)"]
        raise IllegalTransitionError(
            f"illegal experiment transition {cur.value!r} -> {tgt.value!r}; allowed from {cur.value!r}: "
            f"{', '.join(allowed)}")
    if tgt in STATUSES_NEEDING_REASON and not (reason or "").strip():
        raise IllegalTransitionError(f"moving an experiment to {tgt.value!r} needs a non-empty reason")
    return cur, tgt


def parse_status(value: Any, what: str) -> Status:
    try:
        return Status(value)
    except ValueError:
        raise RecordError(f"unknown {what} {value!r}; expected one of {[s.value for s in Status]}") from None
