"""The Code checker: an LLM review of a program that passed the deterministic gates; it may fix the code.

The review reads `design.py` with the gate report and answers pass / fixed / reject. A fix is only a candidate:
the caller re-runs the gates on it and keeps the original when the fix fails them. A failed review call passes
the program on (the gates already accepted it) and is recorded.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from aira_jax.discovery.agents.briefs import reply_meta
from aira_jax.discovery.agents.evidence import program_fingerprint, with_evidence
from aira_jax.discovery.llm import (DESIGN_FILE, LLMClient, Reply, Workspace, render_prompt, schemas,
                                    workspace_program_check, workspace_tools)


@dataclasses.dataclass(frozen=True)
class Review:
    verdict: str                 # 'pass' | 'fixed' | 'reject' | 'skipped' (the call failed)
    issues: tuple[dict, ...]
    notes: str
    source: str                  # the program after the review (the fix, or the original)
    reply: Reply | None = None

    @property
    def changed(self) -> bool:
        return self.verdict == "fixed"

    def reason(self) -> str:
        return "; ".join(f"[{i.get('category')}] {i.get('description')}" for i in self.issues) or self.notes

    def to_meta(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "issues": list(self.issues)[:12], "notes": self.notes[:1000],
                **reply_meta(self.reply)}


def gate_report(verdict: Any) -> str:
    """A short text of a gates Verdict for the reviewer."""
    if verdict is None:
        return "(the gates did not run)"
    lines = [f"{'accepted' if verdict.ok else 'rejected at ' + str(verdict.gate)}: {verdict.reason}"]
    for g in getattr(verdict, "gates", []) or []:
        keys = ("cost_exponent", "total_params", "target_params", "loss_drop")
        facts = ", ".join(f"{k}={g.details[k]}" for k in keys if k in (g.details or {}))
        lines.append(f"- {g.gate}: {'ok' if g.ok else 'FAILED'} ({g.seconds:.1f} s){'; ' + facts if facts else ''}")
    return "\n".join(lines)


class CodeChecker:
    def __init__(self, client: LLMClient):
        self.client = client

    def review(self, name: str, motivation: str, source: str, *, gates: Any = None,
               experiment: str | None = None) -> Review:
        ws = Workspace({DESIGN_FILE: source})
        prompt = render_prompt("code_checker", design_name=name, motivation=motivation, gate_report=gate_report(gates))
        evidence = {"kind": "code_checker", "design": name, "gates_ok": getattr(gates, "ok", None)}
        reply = self.client.complete("code_checker", with_evidence(prompt, evidence), schema=schemas.CODE_CHECKER,
                                     tools=workspace_tools(ws), check=workspace_program_check(ws),
                                     experiment=experiment)
        if not reply.ok:
            return Review("skipped", (), f"the review call failed ({reply.failure.kind.value}): "
                          f"{reply.failure.message[:300]}", source, reply)
        d = reply.data
        after = ws.get(DESIGN_FILE) or source
        verdict = d["verdict"]
        if verdict == "fixed" and program_fingerprint(after) == program_fingerprint(source):
            verdict = "pass"   # said fixed but changed nothing that computes
        elif verdict == "pass" and program_fingerprint(after) != program_fingerprint(source):
            verdict = "fixed"  # edited the file while calling it a pass: treat the edit as a fix (re-gated)
        return Review(verdict, tuple(d.get("issues") or ()), str(d.get("notes") or ""),
                      after if verdict == "fixed" else source, reply)
