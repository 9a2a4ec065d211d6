"""Program versions of a design: the Debugger's fix replaces the design's source, and the old one is kept.

The store keeps each program text once, addressed by its sha256, and a design points at one of them. Recording a
new version (a) stores the new text, (b) points the design at it and (c) appends the replaced version to the
design's meta['program_versions'], so the history stays readable (`store.program(hash)` returns any old text).
The write goes through the worker's claim on the experiment being debugged, in one transaction: a worker that
lost its claim cannot change the design.

This lives beside the store rather than in it (the store's owner may fold it in as a method later).
"""
from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from aira_jax.discovery import db, queue, schema
from aira_jax.discovery.records import Claim, Design, program_hash
from aira_jax.discovery.store import ExperimentStore, NotFoundError

VERSIONS_KEY = 'program_versions'


def record_program_version(store: ExperimentStore, design_name: str, source: str, *, claim: Claim | None,
                           note: dict[str, Any] | None = None) -> Design:
  """Points `design_name` at `source` (a new version) and returns the updated design; a no-op when unchanged."""
  new_hash = program_hash(source)
  d, p, e = schema.designs, schema.programs, schema.experiments
  with db.write_engine(store.engine).begin() as conn:
    if claim is not None:  # the claim must still be ours, checked under the row lock
      row = conn.execute(sa.select(e).where(e.c.id == claim.experiment_id).with_for_update()).first()
      if row is None:
        raise NotFoundError(f'no experiment with id {claim.experiment_id}')
      queue.check_write_access(row, claim, now=time.time())
      if row.design != design_name:
        raise ValueError(f'claim on experiment {claim.experiment_id} is for design {row.design!r}, '
                         f'not {design_name!r}')
    design = conn.execute(sa.select(d).where(d.c.name == design_name).with_for_update()).first()
    if design is None:
      raise NotFoundError(f'no design named {design_name!r}')
    if design.program_hash != new_hash:
      now = time.time()
      insert = pg_dialect.insert if conn.dialect.name == 'postgresql' else sqlite_dialect.insert
      conn.execute(insert(p).values(hash=new_hash, source=source, created_at=now)
                   .on_conflict_do_nothing(index_elements=['hash']))
      meta = json.loads(design.meta_json or '{}')
      meta.setdefault(VERSIONS_KEY, []).append({
          'hash': design.program_hash, 'replaced_by': new_hash, 'at': now,
          'experiment_id': claim.experiment_id if claim else None, 'worker': claim.worker if claim else None,
          **(note or {})})
      conn.execute(sa.update(d).where(d.c.id == design.id).values(
          program_hash=new_hash, meta_json=json.dumps(meta, allow_nan=True)))
  return store.get_design(design_name)


def program_history(design: Design) -> list[dict[str, Any]]:
  """The replaced versions of a design, oldest first (each with 'hash', 'replaced_by', 'at', ...)."""
  return list(design.meta.get(VERSIONS_KEY, []))
