"""What the store keeps about an experiment besides its result: the Analyst's analyses, LLM judge scores, the
cognition retrieved for it, and the kernel verdicts its training produced. Each is a typed record kept as a JSON
payload (schema._payload_table) plus the columns queries use.

`AttachedRecords` is mixed into `ExperimentStore` (store.py), whose transactions, clock and experiment locks these
writes use; it is not used on its own.
"""
from __future__ import annotations

import sqlalchemy as sa

from aira_jax.discovery import rows, schema
from aira_jax.discovery.records import Analysis, Claim, CognitionRetrieval, JudgeScore, KernelVerdict, Status


class AttachedRecords:
    """Analyses, judge scores, cognition and kernel verdicts (methods of ExperimentStore)."""

    def add_analysis(self, experiment_id: int, analysis: Analysis, *, claim: Claim | None = None,
                     mark_analysed: bool = True) -> Analysis:
        """Records the Analyst's reading; by default also moves the experiment trained -> analysed."""
        rows.expect(analysis, Analysis)
        with self._write() as conn:
            row = self._lock_experiment(conn, experiment_id, claim, allowed=(Status.TRAINED, Status.ANALYSED),
                                        what="an analysis")
            rec = self._insert_payload(conn, schema.analyses, experiment_id, analysis)
            if mark_analysed and row.status == Status.TRAINED.value:
                self._transition(conn, experiment_id, Status.ANALYSED, reason="", claim=claim)
        return rec

    def analyses(self, experiment_id: int) -> list[Analysis]:
        return self._payloads(schema.analyses, Analysis, experiment_id)

    def add_judge_score(self, experiment_id: int, score: JudgeScore, *, claim: Claim | None = None) -> JudgeScore:
        rows.expect(score, JudgeScore)
        with self._write() as conn:
            self._lock_experiment(conn, experiment_id, claim, allowed=(Status.TRAINED, Status.ANALYSED),
                                  what="a judge score")
            return self._insert_payload(conn, schema.judge_scores, experiment_id, score, total=score.total)

    def judge_scores(self, experiment_id: int | None = None) -> list[JudgeScore]:
        """Judge scores of one experiment, or of all experiments when `experiment_id` is None."""
        return self._payloads(schema.judge_scores, JudgeScore, experiment_id)

    def add_cognition(self, experiment_id: int, retrieval: CognitionRetrieval, *,
                      claim: Claim | None = None) -> CognitionRetrieval:
        rows.expect(retrieval, CognitionRetrieval)
        with self._write() as conn:
            self._lock_experiment(conn, experiment_id, claim, allowed=tuple(Status), what="retrieved cognition")
            return self._insert_payload(conn, schema.cognition, experiment_id, retrieval, stage=retrieval.stage)

    def cognition(self, experiment_id: int) -> list[CognitionRetrieval]:
        return self._payloads(schema.cognition, CognitionRetrieval, experiment_id)

    def add_kernel_verdict(self, experiment_id: int, verdict: KernelVerdict) -> KernelVerdict:
        """Records what a retry without a Pallas kernel found (kernel_faults). Written whatever the experiment's
        status and claim: it is about the kernel on this device, not about the experiment's progress."""
        rows.expect(verdict, KernelVerdict)
        with self._write() as conn:
            self._require_experiment(conn, experiment_id)
            return self._insert_payload(conn, schema.kernel_verdicts, experiment_id, verdict, op=verdict.op,
                                        verdict=verdict.verdict)

    def kernel_verdicts(self) -> list[KernelVerdict]:
        """Every kernel verdict of the run, oldest first (a few rows: one per kernel fault or clearance)."""
        return self._payloads(schema.kernel_verdicts, KernelVerdict, None)

    # ------------------------------------------------------------------------------------------ internals
    def _insert_payload(self, conn: sa.Connection, table: sa.Table, experiment_id: int, record, **cols):
        now = self._clock()
        rid = conn.execute(sa.insert(table).values(experiment_id=experiment_id, payload=rows.payload(record),
                                                   created_at=now, **cols)).inserted_primary_key[0]
        return rows.stamped(record, experiment_id, rid, now)

    def _payloads(self, table: sa.Table, cls, experiment_id: int | None) -> list:
        q = sa.select(table).order_by(table.c.id)
        if experiment_id is not None:
            q = q.where(table.c.experiment_id == experiment_id)
        with self._read() as conn:
            return [rows.from_payload(cls, r) for r in conn.execute(q)]
