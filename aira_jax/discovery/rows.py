"""Conversion between store rows and typed records."""
from __future__ import annotations

import dataclasses
import json

import sqlalchemy as sa

from aira_jax.discovery import schema
from aira_jax.discovery.records import Design, Experiment, RecordError

# The store assigns ids and times: payloads are written without them and stamped on the way out.
_STAMP_FIELDS = ("experiment_id", "id", "created_at")


def design_query() -> sa.Select:
    d, p = schema.designs, schema.programs
    return sa.select(d, p.c.source).join(p, p.c.hash == d.c.program_hash)


def to_design(row) -> Design:
    return Design(name=row.name, kind=row.kind, source=row.source, motivation=row.motivation, parent=row.parent,
                  references=tuple(json.loads(row.references_json)), summary=row.summary,
                  meta=json.loads(row.meta_json), id=row.id, created_at=row.created_at)


def to_experiment(row) -> Experiment:
    return Experiment(design=row.design, status=row.status, reason=row.reason, scale=row.scale,
                      config=json.loads(row.config_json), priority=row.priority, attempts=row.attempts,
                      claimed_by=row.claimed_by, lease_expires_at=row.lease_expires_at, id=row.id,
                      created_at=row.created_at, updated_at=row.updated_at)


def payload(record) -> str:
    data = record.to_dict()
    for f in _STAMP_FIELDS:
        data.pop(f, None)
    return json.dumps(data, allow_nan=True, sort_keys=True)


def stamped(record, experiment_id: int, rid: int, at: float):
    return dataclasses.replace(record, experiment_id=experiment_id, id=rid, created_at=at)


def from_payload(cls, row):
    """A payload-table row (experiment_id, id, payload, created_at) as a record of type `cls`."""
    return stamped(cls.from_json(row.payload), row.experiment_id, row.id, row.created_at)


def expect(record, cls) -> None:
    """A write's record has the type the table holds (a typed record, not a dict)."""
    if not isinstance(record, cls):
        raise RecordError(f"expected a {cls.__name__} record, got {type(record).__name__}")
