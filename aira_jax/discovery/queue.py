"""Atomic claims on queued experiments, with leases that expire when a worker dies.

A claim marks an experiment with the worker's name, a fresh token and a lease deadline, and counts one more
attempt. An experiment is claimable when its status is one of the requested statuses and nobody holds a live
lease on it. A worker renews its lease with heartbeats; if it dies, the lease runs out and the next claim
takes the experiment over (attempts grows). Every write made through a claim checks the token, so a worker
that lost its claim cannot overwrite its successor's work.

Atomicity: on PostgreSQL the candidate row is picked with SELECT ... FOR UPDATE SKIP LOCKED, so concurrent
claimers skip each other's rows instead of waiting on them; on SQLite the claim is a conditional UPDATE that
re-checks claimability in its WHERE clause (and the transaction holds the database write lock), so exactly
one claimer can see rowcount 1.
"""
from __future__ import annotations

import uuid
from typing import Iterable

import sqlalchemy as sa

from aira_jax.discovery import schema
from aira_jax.discovery.records import Claim, Status

_E = schema.experiments
_SQLITE_RETRIES = 8  # a lost race retries with the next candidate; more losses than this means heavy contention


class ClaimLostError(RuntimeError):
    """A write or heartbeat used a claim that is no longer held (its lease ran out and was taken over)."""


class ClaimHeldError(RuntimeError):
    """A write without a claim touched an experiment that another worker holds a live claim on."""


def _claimable(statuses: Iterable[Status], now: float, scale: str | None, max_attempts: int | None):
    cond = sa.and_(
        _E.c.status.in_([Status(s).value for s in statuses]),
        sa.or_(_E.c.claimed_by.is_(None), _E.c.lease_expires_at <= now),
    )
    if scale is not None:
        cond = sa.and_(cond, _E.c.scale == scale)
    if max_attempts is not None:
        cond = sa.and_(cond, _E.c.attempts < max_attempts)
    return cond


def claim_next(conn: sa.Connection, *, worker: str, statuses: Iterable[Status], lease_s: float, now: float,
               scale: str | None = None, max_attempts: int | None = None) -> Claim | None:
    """Claims the highest-priority, oldest claimable experiment; None when there is none. Call in a write txn."""
    if not worker:
        raise ValueError("worker name must not be empty")
    if not lease_s > 0:
        raise ValueError(f"lease_s must be > 0, got {lease_s}")
    statuses = tuple(Status(s) for s in statuses)
    if not statuses:
        raise ValueError("claim needs at least one status to claim from")
    cond = _claimable(statuses, now, scale, max_attempts)
    pick = sa.select(_E.c.id, _E.c.attempts).where(cond).order_by(_E.c.priority.desc(), _E.c.id).limit(1)
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        pick = pick.with_for_update(skip_locked=True)
    for _ in range(1 if postgres else _SQLITE_RETRIES):
        row = conn.execute(pick).first()
        if row is None:
            return None
        token = uuid.uuid4().hex
        expires = now + lease_s
        res = conn.execute(
            sa.update(_E).where(_E.c.id == row.id, cond).values(
                claimed_by=worker, claim_token=token, lease_expires_at=expires,
                attempts=_E.c.attempts + 1, updated_at=now))
        if res.rowcount == 1:
            return Claim(experiment_id=row.id, worker=worker, token=token, attempt=row.attempts + 1,
                         lease_expires_at=expires, lease_s=lease_s)
    return None


def heartbeat(conn: sa.Connection, claim: Claim, *, now: float, lease_s: float | None = None) -> Claim:
    """Extends the lease from now; raises ClaimLostError when the claim was taken over."""
    lease_s = claim.lease_s if lease_s is None else lease_s
    if not lease_s > 0:
        raise ValueError(f"lease_s must be > 0, got {lease_s}")
    expires = now + lease_s
    res = conn.execute(sa.update(_E).where(_E.c.id == claim.experiment_id, _E.c.claim_token == claim.token)
                       .values(lease_expires_at=expires, updated_at=now))
    if res.rowcount != 1:
        raise ClaimLostError(_lost_message(conn, claim))
    return Claim(claim.experiment_id, claim.worker, claim.token, claim.attempt, expires, lease_s)


def release(conn: sa.Connection, claim: Claim, *, now: float) -> bool:
    """Gives the experiment back to the queue; False when the claim had already been taken over."""
    res = conn.execute(sa.update(_E).where(_E.c.id == claim.experiment_id, _E.c.claim_token == claim.token)
                       .values(claimed_by=None, claim_token=None, lease_expires_at=None, updated_at=now))
    return res.rowcount == 1


def check_write_access(row, claim: Claim | None, *, now: float) -> None:
    """Checks a write to a locked experiment row: through its own live claim, or unclaimed without one."""
    if claim is not None:
        if claim.experiment_id != row.id:
            raise ValueError(f"claim is for experiment {claim.experiment_id}, not {row.id}")
        if row.claim_token != claim.token:
            raise ClaimLostError(_describe_lost(claim, row))
        return
    if row.claimed_by is not None and row.lease_expires_at is not None and row.lease_expires_at > now:
        raise ClaimHeldError(
            f"experiment {row.id} is claimed by worker {row.claimed_by!r} until t={row.lease_expires_at:.1f}; "
            f"write through that claim (pass claim=...) or wait for its lease to expire")


def clear_claim_values() -> dict:
    return {"claimed_by": None, "claim_token": None, "lease_expires_at": None}


def _lost_message(conn: sa.Connection, claim: Claim) -> str:
    row = conn.execute(sa.select(_E).where(_E.c.id == claim.experiment_id)).first()
    if row is None:
        return f"experiment {claim.experiment_id} does not exist"
    return _describe_lost(claim, row)


def _describe_lost(claim: Claim, row) -> str:
    holder = f"now held by {row.claimed_by!r}" if row.claimed_by else "now unclaimed"
    return (f"worker {claim.worker!r} lost its claim (attempt {claim.attempt}) on experiment {claim.experiment_id}: "
            f"the lease expired or was released and the experiment was {holder} (attempts={row.attempts})")
