"""The offline agents as OfflineBackend handlers, one per role, so the loop runs the same code without an LLM.

A handler gets the whole BackendRequest and answers like a model would: the Researcher, break-the-pattern
rewriter, Code checker and Debugger work through the workspace tools (read_file, then write_file, then the JSON
reply), reading the conversation to know which turn they are at; the Analyst, Judge, Summarizer and Novelty
checker answer from the evidence block. Replies are marked as heuristic (`LABEL`), and the JSON carries
`"agent": "offline"` so records can tell them apart from an LLM's.

    client = LLMClient(cfg, offline_handlers=offline_handlers(seed=0))
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from aira_jax.discovery.agents.evidence import read_evidence
from aira_jax.discovery.llm import DESIGN_FILE, BackendRequest, BackendResponse, ToolCall, program_problems
from aira_jax.discovery.offline import heuristics
from aira_jax.discovery.offline.genome import genome_of
from aira_jax.discovery.offline.proposer import EvolutionaryProposer, ProposerConfig
from aira_jax.discovery.offline.render import render_program

PARENT_FILE = "parent.py"
LABEL = heuristics.LABEL


def _tool_results(request: BackendRequest) -> dict[str, list[str]]:
    """Tool name -> texts of its results so far in this conversation."""
    out: dict[str, list[str]] = {}
    for m in request.messages:
        if m.role == "tool" and m.name:
            out.setdefault(m.name, []).append(m.content)
    return out


def _calls_made(request: BackendRequest) -> list[ToolCall]:
    return [c for m in request.messages if m.role == "assistant" for c in m.tool_calls]


def _read_results(request: BackendRequest) -> dict[str, str]:
    """path -> content of every successful read_file in this conversation."""
    by_id = {m.tool_call_id: m.content for m in request.messages if m.role == "tool"}
    out = {}
    for call in _calls_made(request):
        text = by_id.get(call.id)
        if call.name == "read_file" and text is not None and not text.startswith("error:"):
            out[str(call.arguments.get("path"))] = text
    return out


def _wrote(request: BackendRequest, path: str = DESIGN_FILE) -> str | None:
    """The content of the last successful write of `path`, if any."""
    by_id = {m.tool_call_id: m.content for m in request.messages if m.role == "tool"}
    content = None
    for call in _calls_made(request):
        if call.name == "write_file" and call.arguments.get("path") == path and \
                not (by_id.get(call.id) or "").startswith("error:"):
            content = call.arguments.get("content")
    return content


def _read(path: str, n: int = 0) -> ToolCall:
    return ToolCall(f"offline-read-{n}", "read_file", {"path": path})


def _write(content: str, n: int = 0) -> ToolCall:
    return ToolCall(f"offline-write-{n}", "write_file", {"path": DESIGN_FILE, "content": content})


def _refuse(why: str) -> BackendResponse:
    return BackendResponse(refusal=f"{LABEL} {why}", finish_reason="refusal")


class OfflineResearcher:
    """The Researcher (and the break-the-pattern rewriter) backed by the evolutionary proposer."""

    def __init__(self, proposer: EvolutionaryProposer):
        self.proposer = proposer

    def _proposal(self, request: BackendRequest, ev: Mapping[str, Any]):
        reads = _read_results(request)
        parent_src = reads.get(PARENT_FILE)
        refs = [(r["name"], reads[r["file"]]) for r in ev.get("references") or ()
                if isinstance(r, Mapping) and r.get("file") in reads]
        parent_name = (ev.get("parent") or {}).get("name") or "parent"
        feedback = ev.get("feedback") or {}
        attempt = int(feedback.get("attempt", 0)) if isinstance(feedback, Mapping) else 0
        if isinstance(feedback, Mapping) and feedback:   # a rewrite after a rejection: avoid the rejected edits
            ev = {**ev, "avoid": list(ev.get("avoid") or ()) + list(feedback.get("edits") or ())}
        if ev.get("operator") == "crossover":   # Genesys crossover: the named mate is the only reference
            refs = [r for r in refs if r[0] == ev.get("mate")] or refs
        return self.proposer.propose(parent_name, parent_src, references=refs, evidence=ev, attempt=attempt)

    def researcher(self, request: BackendRequest):
        ev = read_evidence(request.messages)
        reads = _read_results(request)
        if PARENT_FILE not in reads:
            files = [PARENT_FILE] + [r["file"] for r in ev.get("references") or ()
                                     if isinstance(r, Mapping) and r.get("file")]
            return [_read(f, i) for i, f in enumerate(files)]
        proposal = self._proposal(request, ev)
        if proposal is None:
            return _refuse("the evolutionary proposer found no transformation that reaches an unseen design from "
                           "this parent")
        if _wrote(request) != proposal.source:
            return _write(proposal.source, len(_calls_made(request)))
        return {"name": proposal.name, "motivation": proposal.motivation, "summary": proposal.summary,
                "cognition_used": [c for c in ev.get("cognition_ids") or ()][:3], "agent": "offline",
                "operator": proposal.operator, "edits": proposal.edit_names,
                "changes": {k: list(v) for e in proposal.edits for k, v in e.changes.items()}}

    def break_pattern(self, request: BackendRequest):
        ev = read_evidence(request.messages)
        reads = _read_results(request)
        if DESIGN_FILE not in reads:
            return _read(DESIGN_FILE)
        name = (ev.get("proposal") or {}).get("name") or "proposal"
        pattern = list((ev.get("proposal") or {}).get("edits") or ())
        proposal = self.proposer.break_pattern(name, reads[DESIGN_FILE], pattern_edits=pattern, evidence=ev)
        if proposal is None:
            return _refuse("no transformation outside the repeated pattern reaches an unseen design")
        if _wrote(request) != proposal.source:
            return _write(proposal.source, len(_calls_made(request)))
        return {"name": proposal.name, "motivation": proposal.motivation, "summary": proposal.summary,
                "broken_pattern": f"{LABEL} left the pattern {', '.join(pattern) or name} and changed "
                                  f"{', '.join(e.category for e in proposal.edits)} instead",
                "agent": "offline", "operator": "break_pattern", "edits": proposal.edit_names,
                "changes": {k: list(v) for e in proposal.edits for k, v in e.changes.items()}}


_SUSPICIOUS = (
    (re.compile(r"::-1\]|jnp\.flip|reverse\s*=\s*True"), "causality", "reverses the time axis"),
    (re.compile(r"\.mean\(\s*axis\s*=\s*0|\.sum\(\s*axis\s*=\s*0"), "contract", "reduces over the batch axis"),
    (re.compile(r"jnp\.einsum\([^)]*t\s*s|'btd,bsd"), "complexity", "may build a [T, T] matrix"),
)


def code_checker(request: BackendRequest):
    """A static review (contract problems and suspicious time-axis code); never edits the program."""
    reads = _read_results(request)
    if DESIGN_FILE not in reads:
        return _read(DESIGN_FILE)
    source = reads[DESIGN_FILE]
    issues = [{"category": "contract", "description": p} for p in program_problems(source)]
    for pattern, category, what in _SUSPICIOUS:
        if pattern.search(source):
            issues.append({"category": category, "description": f"the program {what}; verify it is intended"})
    hard = [i for i in issues if i["category"] in ("contract",)]
    return {"verdict": "reject" if hard else "pass", "issues": issues, "agent": "offline",
            "notes": f"{LABEL} static review only (the gates ran the program); "
                     f"{'genome program' if genome_of(source) else 'foreign program'}"}


def debugger(request: BackendRequest):
    """Fixes the failures a rendered program can have by restoring the stabilising choice; gives up otherwise."""
    ev = read_evidence(request.messages)
    reads = _read_results(request)
    if DESIGN_FILE not in reads:
        return _read(DESIGN_FILE)
    source, log = reads[DESIGN_FILE], str(ev.get("error_log") or "")
    genome = genome_of(source)
    fixed, diagnosis = None, f"{LABEL} no rule matches this failure"
    if genome is not None:
        if re.search(r"\bnan\b|diverg|inf\b", log, re.IGNORECASE):
            if genome.out_norm == "none":
                fixed, diagnosis = genome.replace(out_norm="rms"), "unnormalised read-out diverged; restore RMSNorm"
            elif genome.beta == "sigmoid2":
                fixed, diagnosis = genome.replace(beta="sigmoid"), "beta in (0, 2) diverged; restrict it to (0, 1)"
            elif genome.update == "additive" and genome.decay == "none":
                fixed, diagnosis = genome.replace(decay="fixed", decay_span="long"), \
                    "the additive state grows without bound; add a slow decay"
        elif re.search(r"rotary|even|divisible|reshape", log, re.IGNORECASE) and genome.heads != "same":
            fixed, diagnosis = genome.replace(heads="same"), "the head geometry does not fit; use the model's heads"
    if fixed is None:
        return {"diagnosis": diagnosis, "fix_summary": "", "fixed": False, "agent": "offline"}
    program = render_program(fixed, title=str(ev.get("design") or "fixed design"), notes=diagnosis)
    if _wrote(request) != program:
        return _write(program, len(_calls_made(request)))
    return {"diagnosis": f"{LABEL} {diagnosis}", "fix_summary": diagnosis, "fixed": True, "agent": "offline"}


def _from_evidence(fn: Callable[[Mapping[str, Any]], dict]) -> Callable[[BackendRequest], dict]:
    def handler(request: BackendRequest) -> dict:
        out = fn(read_evidence(request.messages))
        out["agent"] = "offline"
        return out
    return handler


def offline_handlers(seed: int = 0, proposer: ProposerConfig | None = None) -> dict[str, Callable]:
    """Role -> handler for every agent role the loop uses."""
    researcher = OfflineResearcher(EvolutionaryProposer(proposer or ProposerConfig(seed=seed)))
    return {
        "researcher": researcher.researcher,
        "break_pattern": researcher.break_pattern,
        "code_checker": code_checker,
        "debugger": debugger,
        "analyst": _from_evidence(heuristics.analyse),
        "judge": _from_evidence(heuristics.judge),
        "summarizer": _from_evidence(heuristics.summarize),
        "novelty_check": _from_evidence(heuristics.novelty),
    }


def is_offline_reply(data: Any) -> bool:
    return isinstance(data, Mapping) and data.get("agent") == "offline"


__all__ = ["LABEL", "OfflineResearcher", "code_checker", "debugger", "is_offline_reply", "offline_handlers"]
