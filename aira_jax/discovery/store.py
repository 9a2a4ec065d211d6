"""The experiment store: the one place where discovery records persist.

A SQLite file by default (safe for many worker processes, see `db.py`), PostgreSQL by URL for workers on
several hosts. Every public write runs in one transaction: it either lands whole or raises and leaves the
store as it was, so bad input never costs what is already recorded. Program text is stored once, addressed by
its sha256. Workers take experiments with `claim` (atomic, leased, see `queue.py`).

    store = ExperimentStore("runs/store.sqlite")
    design, exp = store.propose(Design(name="gdn-v2", kind="program", source=src, parent="deltanet"))
    store.transition(exp.id, "checked")
    claim = store.claim("worker-0")            # -> Claim | None
    store.transition(claim.experiment_id, "training", claim=claim)
    store.add_result(claim.experiment_id, Result(val_loss=3.1), claim=claim)   # also marks it trained
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import time
from typing import Callable, Iterable, Iterator, Sequence

import sqlalchemy as sa
from absl import logging
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from aira_jax.discovery import db, queue, rows, schema
from aira_jax.discovery.records import (Claim, Design, Experiment, Result, Status, StatusEvent, TERMINAL_STATUSES,
                                        check_transition, program_hash, validate_name)
from aira_jax.discovery.queue import ClaimHeldError, ClaimLostError  # noqa: F401  (re-exported)
from aira_jax.discovery.store_payloads import AttachedRecords

DEFAULT_STORE_PATH = "runs/aira_store.sqlite"
STORE_URL_ENV = "AIRA_STORE_URL"
# What a training worker takes by default: checked experiments, and training ones whose worker died.
TRAIN_QUEUE = (Status.CHECKED, Status.TRAINING)

_D, _E, _P = schema.designs, schema.experiments, schema.programs


class StoreError(RuntimeError):
    """The store refused an operation (unknown record, wrong state)."""


class NotFoundError(StoreError, LookupError):
    pass


class DuplicateNameError(StoreError):
    pass


class ExperimentStore(AttachedRecords):
    """Typed access to designs, experiments and their results. One instance per process."""

    def __init__(self, url: str | os.PathLike | None = None, *, clock: Callable[[], float] = time.time,
                 busy_timeout_s: float = 60.0, echo: bool = False):
        if url is None:
            url = os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_PATH
            if "://" not in str(url):
                pathlib.Path(url).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.engine = db.make_engine(url, busy_timeout_s=busy_timeout_s, echo=echo)
        self._writer = db.write_engine(self.engine)
        self._clock = clock
        db.create_tables(self.engine)
        logging.info("experiment store at %s", self.engine.url.render_as_string(hide_password=True))

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def location(self) -> str:
        """Where the store is, for people: a SQLite file's path, else the URL without its password."""
        url = self.engine.url
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            return os.path.abspath(url.database)
        return self.url

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self._writer.begin() as conn:  # commits on success, rolls back on any exception
            yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn

    # ------------------------------------------------------------------------------------------ designs
    def add_design(self, design: Design) -> Design:
        with self._write() as conn:
            return self._insert_design(conn, design)

    def propose(self, design: Design, *, scale: str = "explore", config: dict | None = None,
                priority: int = 0) -> tuple[Design, Experiment]:
        """Records a new design and its first experiment together (both or neither)."""
        with self._write() as conn:
            d = self._insert_design(conn, design)
            return d, self._insert_experiment(conn, Experiment(design=d.name, scale=scale, config=config or {},
                                                               priority=priority))

    def get_design(self, name: str) -> Design:
        with self._read() as conn:
            row = conn.execute(rows.design_query().where(_D.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"no design named {name!r}")
        return rows.to_design(row)

    def has_design(self, name: str) -> bool:
        with self._read() as conn:
            return conn.execute(sa.select(_D.c.id).where(_D.c.name == name)).first() is not None

    def designs(self, *, kind: str | None = None) -> list[Design]:
        q = rows.design_query().order_by(_D.c.id)
        if kind is not None:
            q = q.where(_D.c.kind == kind)
        with self._read() as conn:
            return [rows.to_design(r) for r in conn.execute(q)]

    def unique_name(self, base: str) -> str:
        """`base` if free, else the first free `base-2`, `base-3`, ... (a helper for agents' proposed names)."""
        validate_name(base)
        with self._read() as conn:
            taken = set(conn.execute(sa.select(_D.c.name).where(
                sa.or_(_D.c.name == base, _D.c.name.like(base.replace("_", r"\_") + "-%", escape="\\")))).scalars())
        if base not in taken:
            return base
        n = 2
        while f"{base}-{n}" in taken:
            n += 1
        return validate_name(f"{base}-{n}")

    def program(self, digest: str) -> str:
        with self._read() as conn:
            src = conn.execute(sa.select(_P.c.source).where(_P.c.hash == digest)).scalar()
        if src is None:
            raise NotFoundError(f"no program with hash {digest!r}")
        return src

    def num_programs(self) -> int:
        with self._read() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(_P)).scalar_one()

    # ------------------------------------------------------------------------------------------ lineage
    def parent(self, name: str) -> Design | None:
        d = self.get_design(name)
        return None if d.parent is None else self.get_design(d.parent)

    def children(self, name: str) -> list[Design]:
        self.get_design(name)  # unknown names are an error, not an empty family
        with self._read() as conn:
            return [rows.to_design(r) for r in conn.execute(
                rows.design_query().where(_D.c.parent == name).order_by(_D.c.id))]

    def siblings(self, name: str) -> list[Design]:
        """Designs with the same parent, excluding `name` itself (seeds have no siblings)."""
        d = self.get_design(name)
        if d.parent is None:
            return []
        return [c for c in self.children(d.parent) if c.name != name]

    def ancestors(self, name: str) -> list[Design]:
        """Parent, grandparent, ... up to a seed."""
        out, d = [], self.get_design(name)
        while d.parent is not None:
            d = self.get_design(d.parent)
            out.append(d)
        return out

    def children_counts(self) -> dict[str, int]:
        """Number of children of every design that has any (the visit counts UCT uses)."""
        q = sa.select(_D.c.parent, sa.func.count()).where(_D.c.parent.is_not(None)).group_by(_D.c.parent)
        with self._read() as conn:
            return {p: n for p, n in conn.execute(q)}

    # ------------------------------------------------------------------------------------------ experiments
    def add_experiment(self, design: str, *, scale: str = "explore", config: dict | None = None,
                       priority: int = 0) -> Experiment:
        exp = Experiment(design=design, scale=scale, config=config or {}, priority=priority)
        with self._write() as conn:
            if conn.execute(sa.select(_D.c.id).where(_D.c.name == design)).first() is None:
                raise NotFoundError(f"cannot add an experiment for unknown design {design!r}")
            return self._insert_experiment(conn, exp)

    def get_experiment(self, experiment_id: int) -> Experiment:
        with self._read() as conn:
            row = conn.execute(sa.select(_E).where(_E.c.id == experiment_id)).first()
        if row is None:
            raise NotFoundError(f"no experiment with id {experiment_id}")
        return rows.to_experiment(row)

    def experiments(self, *, status: Status | str | Sequence | None = None, design: str | None = None,
                    scale: str | None = None) -> list[Experiment]:
        q = sa.select(_E).order_by(_E.c.id)
        if status is not None:
            statuses = [status] if isinstance(status, (str, Status)) else list(status)
            q = q.where(_E.c.status.in_([Status(s).value for s in statuses]))
        if design is not None:
            q = q.where(_E.c.design == design)
        if scale is not None:
            q = q.where(_E.c.scale == scale)
        with self._read() as conn:
            return [rows.to_experiment(r) for r in conn.execute(q)]

    def status_counts(self) -> dict[Status, int]:
        with self._read() as conn:
            counts = conn.execute(sa.select(_E.c.status, sa.func.count()).group_by(_E.c.status)).all()
        return {Status(s): n for s, n in counts}

    def transition(self, experiment_id: int, to: Status | str, *, reason: str = "",
                   claim: Claim | None = None) -> Experiment:
        """Moves an experiment along its life cycle; illegal moves raise IllegalTransitionError."""
        with self._write() as conn:
            self._transition(conn, experiment_id, to, reason=reason, claim=claim)
            return rows.to_experiment(conn.execute(sa.select(_E).where(_E.c.id == experiment_id)).one())

    def status_history(self, experiment_id: int) -> list[StatusEvent]:
        t = schema.status_events
        with self._read() as conn:
            events = conn.execute(sa.select(t).where(t.c.experiment_id == experiment_id).order_by(t.c.id)).all()
        return [StatusEvent(r.experiment_id, None if r.from_status is None else Status(r.from_status),
                            Status(r.to_status), r.reason, r.worker, r.at) for r in events]

    # ------------------------------------------------------------------------------------------ claims
    def claim(self, worker: str, *, statuses: Iterable[Status | str] = TRAIN_QUEUE, lease_s: float = 600.0,
              scale: str | None = None, max_attempts: int | None = None) -> Claim | None:
        """Atomically takes the next claimable experiment for `worker`; None when the queue is empty."""
        with self._write() as conn:
            return queue.claim_next(conn, worker=worker, statuses=[Status(s) for s in statuses],
                                    lease_s=lease_s, now=self._clock(), scale=scale, max_attempts=max_attempts)

    def heartbeat(self, claim: Claim, *, lease_s: float | None = None) -> Claim:
        with self._write() as conn:
            return queue.heartbeat(conn, claim, now=self._clock(), lease_s=lease_s)

    def release(self, claim: Claim) -> bool:
        with self._write() as conn:
            released = queue.release(conn, claim, now=self._clock())
        if not released:
            logging.warning("release of a lost claim on experiment %d by %s", claim.experiment_id, claim.worker)
        return released

    # ------------------------------------------------------------------------------------------ results
    def add_result(self, experiment_id: int, result: Result, *, claim: Claim | None = None,
                   mark_trained: bool = True) -> Result:
        """Records an experiment's result; by default also moves it training -> trained in the same step."""
        rows.expect(result, Result)
        with self._write() as conn:
            row = self._lock_experiment(conn, experiment_id, claim, allowed=(Status.TRAINING, Status.TRAINED),
                                        what="a result")
            if conn.execute(sa.select(schema.results.c.id).where(
                    schema.results.c.experiment_id == experiment_id)).first() is not None:
                raise StoreError(f"experiment {experiment_id} already has a result; results are written once")
            now = self._clock()
            val = result.val_loss if result.val_loss is not None and math.isfinite(result.val_loss) else None
            rid = conn.execute(sa.insert(schema.results).values(
                experiment_id=experiment_id, val_loss=val, payload=rows.payload(result),
                created_at=now)).inserted_primary_key[0]
            if mark_trained and row.status == Status.TRAINING.value:
                self._transition(conn, experiment_id, Status.TRAINED, reason="", claim=claim)
        return rows.stamped(result, experiment_id, rid, now)

    def result(self, experiment_id: int) -> Result | None:
        t = schema.results
        with self._read() as conn:
            row = conn.execute(sa.select(t).where(t.c.experiment_id == experiment_id)).first()
        return None if row is None else rows.from_payload(Result, row)

    def evaluated(self, *, scale: str | None = None, design: str | None = None) -> list[tuple[Experiment, Result]]:
        """(experiment, result) pairs in the order results arrived: the history the pool is derived from."""
        t = schema.results
        q = sa.select(_E, t.c.id.label("r_id"), t.c.payload.label("r_payload"), t.c.created_at.label("r_at")) \
            .join(t, t.c.experiment_id == _E.c.id).order_by(t.c.id)
        if scale is not None:
            q = q.where(_E.c.scale == scale)
        if design is not None:
            q = q.where(_E.c.design == design)
        with self._read() as conn:
            found = conn.execute(q).all()
        out = []
        for r in found:
            res = Result.from_json(r.r_payload)
            out.append((rows.to_experiment(r), rows.stamped(res, r.id, r.r_id, r.r_at)))
        return out

    # ------------------------------------------------------------------------------------------ internals
    def _insert_design(self, conn: sa.Connection, design: Design) -> Design:
        rows.expect(design, Design)
        if conn.execute(sa.select(_D.c.id).where(_D.c.name == design.name)).first() is not None:
            raise DuplicateNameError(f"design name {design.name!r} is taken; store.unique_name({design.name!r}) "
                                     f"gives a free one")
        needed = ([design.parent] if design.parent else []) + list(design.references)
        if needed:
            known = set(conn.execute(sa.select(_D.c.name).where(_D.c.name.in_(needed))).scalars())
            missing = [n for n in needed if n not in known]
            if missing:
                raise NotFoundError(f"design {design.name!r} names unknown parent/references: {missing}")
        now = self._clock()
        digest = program_hash(design.source)
        ins = pg_dialect.insert if conn.dialect.name == "postgresql" else sqlite_dialect.insert
        conn.execute(ins(_P).values(hash=digest, source=design.source, created_at=now)
                     .on_conflict_do_nothing(index_elements=["hash"]))
        try:
            with conn.begin_nested():  # a concurrent insert of the same name on PostgreSQL lands here
                did = conn.execute(sa.insert(_D).values(
                    name=design.name, kind=design.kind.value, program_hash=digest, parent=design.parent,
                    references_json=json.dumps(list(design.references)), motivation=design.motivation,
                    summary=design.summary, meta_json=json.dumps(design.meta, allow_nan=True),
                    created_at=now)).inserted_primary_key[0]
        except sa.exc.IntegrityError:
            raise DuplicateNameError(f"design name {design.name!r} is taken") from None
        return dataclasses.replace(design, id=did, created_at=now)

    def _insert_experiment(self, conn: sa.Connection, exp: Experiment) -> Experiment:
        now = self._clock()
        eid = conn.execute(sa.insert(_E).values(
            design=exp.design, status=Status.PROPOSED.value, reason="", scale=exp.scale,
            config_json=json.dumps(exp.config, allow_nan=True), priority=exp.priority, attempts=0,
            created_at=now, updated_at=now)).inserted_primary_key[0]
        conn.execute(sa.insert(schema.status_events).values(
            experiment_id=eid, from_status=None, to_status=Status.PROPOSED.value, reason="", worker=None, at=now))
        return dataclasses.replace(exp, id=eid, status=Status.PROPOSED, created_at=now, updated_at=now)

    def _lock_experiment(self, conn: sa.Connection, experiment_id: int, claim: Claim | None, *,
                         allowed: Sequence[Status], what: str):
        """Reads the experiment row under a write lock and checks the caller may write `what` to it now."""
        row = self._require_experiment(conn, experiment_id)
        queue.check_write_access(row, claim, now=self._clock())
        if Status(row.status) not in allowed:
            raise StoreError(f"cannot record {what} for experiment {experiment_id} in status {row.status!r} "
                             f"(allowed: {[s.value for s in allowed]})")
        return row

    @staticmethod
    def _require_experiment(conn: sa.Connection, experiment_id: int):
        """The experiment row, under a write lock."""
        row = conn.execute(sa.select(_E).where(_E.c.id == experiment_id).with_for_update()).first()
        if row is None:
            raise NotFoundError(f"no experiment with id {experiment_id}")
        return row

    def _transition(self, conn: sa.Connection, experiment_id: int, to: Status | str, *, reason: str,
                    claim: Claim | None) -> None:
        row = self._lock_experiment(conn, experiment_id, claim, allowed=tuple(Status), what="a status change")
        cur, tgt = check_transition(row.status, to, reason)
        now = self._clock()
        values = {"status": tgt.value, "reason": reason, "updated_at": now}
        if tgt in TERMINAL_STATUSES:
            values.update(queue.clear_claim_values())  # nothing left to do: free the worker's claim
        conn.execute(sa.update(_E).where(_E.c.id == experiment_id).values(**values))
        conn.execute(sa.insert(schema.status_events).values(
            experiment_id=experiment_id, from_status=cur.value, to_status=tgt.value, reason=reason,
            worker=claim.worker if claim else None, at=now))

