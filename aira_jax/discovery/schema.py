"""Tables of the experiment store (SQLAlchemy 2.x Core, portable across SQLite and PostgreSQL).

Records whose fields are read as a whole (results, analyses, judge scores, cognition) are kept as a JSON text
payload plus the few columns that queries filter or sort on. Text, not a JSON column type, because loss values
may be NaN, which PostgreSQL's JSON types refuse and Python's json writes and reads back unchanged.
Times are UNIX seconds (float) from the store's clock.
"""
from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

programs = sa.Table(
    "programs", metadata,
    sa.Column("hash", sa.String(64), primary_key=True),  # sha256 of the source: each text is stored once
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

designs = sa.Table(
    "designs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("program_hash", sa.String(64), sa.ForeignKey("programs.hash"), nullable=False),
    sa.Column("parent", sa.String(128), sa.ForeignKey("designs.name"), nullable=True, index=True),
    sa.Column("references_json", sa.Text, nullable=False, default="[]"),
    sa.Column("motivation", sa.Text, nullable=False, default=""),
    sa.Column("summary", sa.Text, nullable=False, default=""),
    sa.Column("meta_json", sa.Text, nullable=False, default="{}"),
    sa.Column("created_at", sa.Float, nullable=False),
)

experiments = sa.Table(
    "experiments", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("design", sa.String(128), sa.ForeignKey("designs.name"), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("scale", sa.String(128), nullable=False),
    sa.Column("config_json", sa.Text, nullable=False, default="{}"),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("claimed_by", sa.String(256), nullable=True),
    sa.Column("claim_token", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # The claim query filters by status and orders by priority then id.
    sa.Index("ix_experiments_queue", "status", "priority", "id"),
)

status_events = sa.Table(
    "status_events", metadata,  # audit trail of every transition (who moved what, when, why)
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiments.id"), nullable=False, index=True),
    sa.Column("from_status", sa.String(16), nullable=True),
    sa.Column("to_status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("worker", sa.String(256), nullable=True),
    sa.Column("at", sa.Float, nullable=False),
)

results = sa.Table(
    "results", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # One result per experiment: a duplicate write (e.g. by a worker whose claim was re-taken) is refused.
    sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiments.id"), nullable=False, unique=True),
    sa.Column("val_loss", sa.Float, nullable=True),  # NULL when missing or non-finite; the payload keeps NaN
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


def _payload_table(name: str, *extra: sa.Column) -> sa.Table:
    return sa.Table(
        name, metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiments.id"), nullable=False, index=True),
        *extra,
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


analyses = _payload_table("analyses")
judge_scores = _payload_table("judge_scores", sa.Column("total", sa.Float, nullable=False))
cognition = _payload_table("cognition", sa.Column("stage", sa.String(128), nullable=False))
# What a retry without a Pallas kernel found about it (kernel_faults): few rows, read whole by every Engineer.
kernel_verdicts = _payload_table("kernel_verdicts", sa.Column("op", sa.String(128), nullable=False),
                                 sa.Column("verdict", sa.String(16), nullable=False))
