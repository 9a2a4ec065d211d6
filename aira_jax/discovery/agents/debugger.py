"""The Debugger: error log -> minimal fix, plugged into the Engineer's `debugger` hook.

    engineer = Engineer(store, settings, worker_id='w0', debugger=Debugger(client))

The Engineer calls it with a DebugRequest (design, source, error_log, attempt, max_attempts, kind, motivation)
and gates the returned program before training it again; it bounds the calls per experiment. The Debugger also
refuses beyond its own `max_attempts` and returns None when the model gives up, fails, or changes nothing.
"""
from __future__ import annotations

import threading
from typing import Any

from absl import logging

from aira_jax.discovery.agents.evidence import program_fingerprint, with_evidence
from aira_jax.discovery.llm import (DESIGN_FILE, LLMClient, Workspace, render_prompt, schemas,
                                    workspace_program_check, workspace_tools)

MAX_LOG_CHARS = 12_000   # the tail of the log: the cause is at the bottom of a traceback


class Debugger:
    def __init__(self, client: LLMClient, *, max_attempts: int = 3):
        self.client = client
        self.max_attempts = max_attempts
        self.history: list[dict[str, Any]] = []   # one entry per call, for reports
        self._lock = threading.Lock()

    def __call__(self, request: Any) -> str | None:
        attempt = int(getattr(request, "attempt", 1))
        name = str(getattr(request, "design", "design"))
        if attempt > self.max_attempts:
            self._note(name, attempt, "refused", "attempts exhausted")
            return None
        source = str(getattr(request, "source", ""))
        log = str(getattr(request, "error_log", ""))[-MAX_LOG_CHARS:]
        kind = str(getattr(request, "kind", "crash"))
        ws = Workspace({DESIGN_FILE: source})
        prompt = render_prompt("debugger", design_name=name, motivation=getattr(request, "motivation", "") or "",
                               stage=kind, error_log=log, attempt=attempt)
        evidence = {"kind": "debugger", "design": name, "failure_kind": kind, "attempt": attempt,
                    "max_attempts": int(getattr(request, "max_attempts", self.max_attempts)), "error_log": log}
        exp = getattr(request, "experiment_id", None)
        reply = self.client.complete("debugger", with_evidence(prompt, evidence), schema=schemas.DEBUGGER,
                                     tools=workspace_tools(ws), check=workspace_program_check(ws),
                                     experiment=None if exp is None else str(exp))
        if not reply.ok:
            self._note(name, attempt, "failed", reply.failure.kind.value, reply.record.call_id)
            return None
        fixed = ws.get(DESIGN_FILE) or ""
        if not reply.data.get("fixed") or program_fingerprint(fixed) == program_fingerprint(source):
            self._note(name, attempt, "gave up", str(reply.data.get("diagnosis", ""))[:300], reply.record.call_id)
            return None
        self._note(name, attempt, "fixed", str(reply.data.get("fix_summary", ""))[:300], reply.record.call_id)
        logging.info("Debugger fixed %s (attempt %d): %s", name, attempt, reply.data.get("fix_summary", ""))
        return fixed

    def _note(self, name: str, attempt: int, outcome: str, detail: str, call_id: str = "") -> None:
        with self._lock:
            self.history.append({"design": name, "attempt": attempt, "outcome": outcome, "detail": detail,
                                 "call_id": call_id})
