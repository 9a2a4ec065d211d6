"""The Researcher: reads the parent and references, writes the motivation and the program in one agent.

Through the workspace tools it reads `parent.py` (read-only), the reference programs under `references/` and
writes `design.py` (pre-filled with the parent, so small edits can use replace_in_file). Its JSON reply names the
design and gives the motivation and a summary. The reply is re-asked (bounded by the client's max_reasks) while
design.py is missing, off contract, or unchanged from the parent (and from a rejected program, on a rewrite).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from absl import logging

from aira_jax.discovery.agents.briefs import AgentProposal, DesignBrief, Feedback, reply_meta
from aira_jax.discovery.agents.evidence import program_fingerprint, with_evidence
from aira_jax.discovery.llm import (DESIGN_FILE, LLMClient, Reply, Workspace, render_prompt, schemas,
                                    workspace_program_check, workspace_tools)

PARENT_FILE = "parent.py"
_EXTRA_KEYS = ("agent", "operator", "edits", "changes")


@dataclasses.dataclass(frozen=True)
class ResearchContext:
    parent: DesignBrief
    references: tuple[DesignBrief, ...] = ()
    cognition: str = "(no relevant notes found)"
    cognition_ids: tuple[str, ...] = ()
    recent_attempts: str = "(none yet)"
    budget: str = ""
    evidence: Mapping[str, Any] = dataclasses.field(default_factory=dict)   # history, known designs, draw, ...
    operator: str = "evolve"          # 'evolve' (ASI-Arch) | 'mutate_unit' | 'crossover' (Genesys)
    mate: str | None = None           # crossover: the reference that is the second parent


OPERATORS = ("evolve", "mutate_unit", "crossover")


def operator_instructions(ctx: ResearchContext) -> str:
    """The operator paragraph of the Researcher prompt (empty for free evolution)."""
    if ctx.operator == "mutate_unit":
        return ("Operator: MUTATION OF ONE UNIT (Genesys). Change exactly one unit of the parent: one sub-module or "
                "one step of its computation (the feature map, a gate, the decay, the memory update, the short "
                "convolution, the output normalisation, ...). Leave every other unit as it is, so the result "
                "tells what this one unit is worth.")
    if ctx.operator == "crossover":
        return (f"Operator: CROSSOVER (Genesys). Combine two parents: the parent (parent.py) and the second "
                f"parent '{ctx.mate}' ({reference_file(ctx.mate or '')}, also in the workspace; read both). Take "
                "units from each so the child inherits the strengths of both, and say in the motivation which "
                "units come from which parent.")
    return ""


def reference_file(name: str) -> str:
    return f"references/{name}.py"


def diff_check(workspace: Workspace, *, unchanged_from: Sequence[tuple[str, str]]):
    """A `check` refusing a design.py that computes the same as one of `unchanged_from` ((label, source) pairs)."""
    contract = workspace_program_check(workspace)

    def check(value) -> str | None:
        problem = contract(value)
        if problem:
            return problem
        fp = program_fingerprint(workspace.get(DESIGN_FILE) or "")
        for label, source in unchanged_from:
            if fp == program_fingerprint(source):
                return (f"design.py is unchanged from {label} (ignoring comments and formatting): write the new "
                        "program to design.py, it must differ in code")
        return None

    return check


class Researcher:
    def __init__(self, client: LLMClient, *, role: str = "researcher"):
        self.client = client
        self.role = role

    def workspace(self, ctx: ResearchContext, feedback: Feedback | None) -> Workspace:
        files = {PARENT_FILE: ctx.parent.source,
                 DESIGN_FILE: feedback.rejected_source if feedback else ctx.parent.source}
        for ref in ctx.references:
            if ref.source:
                files[reference_file(ref.name)] = ref.source
        return Workspace(files, read_only=[p for p in files if p != DESIGN_FILE])

    def prompt(self, ctx: ResearchContext, feedback: Feedback | None):
        p = ctx.parent
        refs = "\n".join(r.line() + (f"\n  analysis: {' '.join(r.analysis.split())[:400]}" if r.analysis else "")
                         + f"\n  program: {reference_file(r.name)}" for r in ctx.references) or "(none)"
        prompt = render_prompt(
            "researcher", parent_name=p.name, parent_summary=(p.summary or p.motivation or "")[:1500],
            parent_results=p.metrics.text(), parent_analysis=p.analysis or "(no analysis yet)",
            references=refs, cognition=ctx.cognition, recent_attempts=ctx.recent_attempts,
            budget=ctx.budget or "(as configured)", operator=operator_instructions(ctx))
        evidence = {**dict(ctx.evidence), "kind": "researcher", "operator": ctx.operator, "mate": ctx.mate,
                    "parent": {"name": p.name, **p.metrics.to_evidence()},
                    "parent_weaknesses": list(p.meta.get("weaknesses") or ()),
                    "suggestions": list(p.meta.get("next_ideas") or ()),
                    "references": [{"name": r.name, "file": reference_file(r.name), **r.metrics.to_evidence()}
                                   for r in ctx.references if r.source],
                    "cognition_ids": list(ctx.cognition_ids),
                    "feedback": feedback.to_evidence() if feedback else None}
        return with_evidence(prompt, evidence, extra=feedback.text() if feedback else "")

    def propose(self, ctx: ResearchContext, *, feedback: Feedback | None = None,
                experiment: str | None = None) -> tuple[AgentProposal | None, Reply]:
        """(proposal, reply); the proposal is None when the call failed (the reply's failure says why)."""
        ws = self.workspace(ctx, feedback)
        unchanged = [(f"the parent {ctx.parent.name!r}", ctx.parent.source)]
        if feedback:
            unchanged.append((f"the rejected proposal {feedback.rejected_name!r}", feedback.rejected_source))
        reply = self.client.complete(self.role, self.prompt(ctx, feedback), schema=schemas.RESEARCHER,
                                     tools=workspace_tools(ws), check=diff_check(ws, unchanged_from=unchanged),
                                     experiment=experiment)
        if not reply.ok:
            logging.warning("Researcher failed (%s): %s", reply.failure.kind.value, reply.failure.message[:300])
            return None, reply
        return proposal_from_reply(reply, ws.get(DESIGN_FILE) or ""), reply


def proposal_from_reply(reply: Reply, source: str) -> AgentProposal:
    data = reply.data
    meta = {k: data[k] for k in _EXTRA_KEYS if k in data}
    meta.update(reply_meta(reply))
    used = tuple(str(c) for c in data.get("cognition_used") or ())
    return AgentProposal(name=data["name"], motivation=data["motivation"].strip(), summary=data["summary"].strip(),
                         source=source, cognition_used=used, meta=meta, reply=reply)
