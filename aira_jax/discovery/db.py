"""Engines for the experiment store: a SQLite file by default, PostgreSQL by URL.

SQLite is made safe for several worker processes on one file: WAL journaling (readers never block the
writer), a busy timeout (a writer waits for the lock instead of failing), foreign keys on, and write
transactions opened with BEGIN IMMEDIATE so that a read-then-write transaction takes the write lock up front
rather than failing later when it tries to upgrade a shared lock (which a busy timeout cannot rescue).
"""
from __future__ import annotations

import os
import pathlib

import sqlalchemy as sa
from absl import logging

from aira_jax.discovery import schema

# Execution option read by the BEGIN hook: write sessions ask for IMMEDIATE, reads stay DEFERRED.
SQLITE_BEGIN_OPTION = "aira_sqlite_begin"


class StoreConfigError(ValueError):
    """The store URL or path cannot be used."""


def normalise_url(url_or_path: str | os.PathLike) -> sa.URL:
    """Accepts a SQLAlchemy URL, 'postgresql://...' (psycopg 3 is chosen), ':memory:' or a plain file path."""
    text = os.fspath(url_or_path)
    if not text:
        raise StoreConfigError("empty store URL/path")
    if text == ":memory:":
        return sa.make_url("sqlite://")
    if "://" not in text:
        path = pathlib.Path(text).expanduser().resolve()
        if not path.parent.is_dir():
            raise StoreConfigError(f"store directory {str(path.parent)!r} does not exist (for store {text!r})")
        return sa.make_url(f"sqlite:///{path}")
    try:
        url = sa.make_url(text)
    except sa.exc.ArgumentError as e:
        raise StoreConfigError(f"bad store URL {text!r}: {e}") from None
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        return url
    if backend != "sqlite":
        raise StoreConfigError(f"unsupported store backend {backend!r} in {text!r}; use sqlite or postgresql")
    return url


def make_engine(url_or_path: str | os.PathLike, *, busy_timeout_s: float = 60.0, echo: bool = False) -> sa.Engine:
    url = normalise_url(url_or_path)
    if url.get_backend_name() == "postgresql":
        try:
            engine = sa.create_engine(url, echo=echo, pool_pre_ping=True)
        except ImportError as e:
            raise StoreConfigError(
                f"PostgreSQL store needs psycopg 3: pip install 'psycopg[binary]' ({e})") from None
        return engine
    return _sqlite_engine(url, busy_timeout_s=busy_timeout_s, echo=echo)


def _sqlite_engine(url: sa.URL, *, busy_timeout_s: float, echo: bool) -> sa.Engine:
    in_memory = url.database in (None, "", ":memory:")
    kwargs: dict = {"connect_args": {"timeout": busy_timeout_s, "check_same_thread": False}}
    if in_memory:  # one shared connection, else every connection would see its own empty database
        kwargs["poolclass"] = sa.pool.StaticPool
    engine = sa.create_engine(url, echo=echo, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Take transaction control from the sqlite3 module (its implicit BEGINs are deferred); see _on_begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not in_memory:
            mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logging.warning("SQLite store %s could not switch to WAL (journal_mode=%s)", url.database, mode)
            cur.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a crash loses at most the last commit
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def write_engine(engine: sa.Engine) -> sa.Engine:
    """The same engine (same pool) whose transactions take SQLite's write lock at BEGIN."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
    return engine


def create_tables(engine: sa.Engine) -> None:
    """Creates missing tables; safe when several processes open a fresh store at once."""
    with write_engine(engine).begin() as conn:
        if engine.dialect.name == "postgresql":
            # Serialise concurrent creators (CREATE TABLE IF NOT EXISTS still races on the catalog).
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7243911)"))
        schema.metadata.create_all(conn, checkfirst=True)
