"""One iteration of the discovery loop, from selection to a checked experiment in the training queue.

    pool.select -> Researcher proposes -> novelty (duplicate -> break the pattern) -> gates
        (rejected -> feedback -> Researcher rewrites, at most `max_rewrites` times) -> Code checker (a fix is
        re-gated) -> store: the design and its experiment, 'checked'

Every proposal is recorded: rejected ones as designs whose experiment is 'rejected' with the reason (so the
history, the novelty check and the Researcher all see them), accepted ones as 'checked'.
"""
from __future__ import annotations

import dataclasses
import random
import re
from typing import Any, Callable

from absl import logging

from aira_jax.discovery.agents import (AgentProposal, CodeChecker, Feedback, NoveltyChecker, ResearchContext,
                                       Researcher)
from aira_jax.discovery.agents.briefs import reply_meta
from aira_jax.discovery.cognition import CognitionBase
from aira_jax.discovery.loop_context import StoreView
from aira_jax.discovery.loop_settings import LoopSettings
from aira_jax.discovery.pool import CandidatePool, PoolConfig
from aira_jax.discovery.records import CognitionRetrieval, Design, DesignKind, Status
from aira_jax.discovery.sandbox import check_program
from aira_jax.discovery.store import ExperimentStore


@dataclasses.dataclass
class IterationOutcome:
    iteration: int
    accepted: str | None = None          # name of the design queued for training
    rejected: list[str] = dataclasses.field(default_factory=list)
    failure: str = ""                    # why no design was queued


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:60] or "design"


class ProposalStage:
    def __init__(self, store: ExperimentStore, settings: LoopSettings, *, researcher: Researcher,
                 novelty: NoveltyChecker, checker: CodeChecker, cognition: CognitionBase, gate_settings: Any,
                 pool_cfg: PoolConfig, fitness_cfg, budget_text: str = "",
                 on_stage: Callable[[str, str], None] = lambda stage, design: None,
                 on_event: Callable[[str], None] = lambda text: None, retrieval_k: int = 3,
                 check: Callable[..., Any] = check_program):
        self.store, self.s = store, settings
        self.researcher, self.novelty, self.checker = researcher, novelty, checker
        self.cognition, self.gate_settings, self.retrieval_k = cognition, gate_settings, retrieval_k
        self.pool_cfg, self.fitness_cfg, self.budget_text = pool_cfg, fitness_cfg, budget_text
        self.on_stage, self.on_event, self._check = on_stage, on_event, check

    # ------------------------------------------------------------------------------------------ context
    def context(self, view: StoreView, iteration: int) -> tuple[ResearchContext, list[tuple[str, str]], str]:
        """The Researcher's context for this iteration, the notes offered (id, text) and their query."""
        pool = CandidatePool.from_store(self.store, self.pool_cfg, self.fitness_cfg)
        sel = pool.select(draw=iteration)
        parent = view.brief(sel.parent.name)
        refs = tuple(view.brief(c.name) for c in sel.references)
        offered, query = view.cognition_of(parent.name), f"analysis of {parent.name}"
        if not offered and len(self.cognition):  # no analysis retrieval yet: retrieve with what the parent is about
            query = " ".join(parent.meta.get("weaknesses") or ()) or parent.motivation or parent.summary or parent.name
            offered = [(h.entry.id, h.entry.render()) for h in self.cognition.retrieve(query, self.retrieval_k)]
        evidence = {"draw": iteration, "history": view.history_evidence()[-self.s.evidence_history:],
                    "known_fingerprints": view.known_fingerprints(),
                    "noise_floor": view.baseline.loss_std if view.baseline else None,
                    "seed": view.seed_name, "selection": {"policy": sel.policy, "parent": sel.parent.name,
                                                          "references": [r.name for r in sel.references]}}
        operator, mate = self.operator(iteration, refs)
        ctx = ResearchContext(parent=parent, references=refs, operator=operator, mate=mate,
                              cognition="\n\n".join(t for _, t in offered) or "(no relevant notes found)",
                              cognition_ids=tuple(i for i, _ in offered),
                              recent_attempts=view.recent_attempts(self.s.recent_attempts), budget=self.budget_text,
                              evidence=evidence)
        return ctx, offered, query

    def operator(self, iteration: int, refs) -> tuple[str, str | None]:
        """Genesys' operators by the configured rates (seeded by the iteration): crossover with the best reference
        that has a program, mutation of one unit, or ASI-Arch's free evolution."""
        rng = random.Random(f"operator-{self.pool_cfg.seed}-{iteration}")
        mates = [r.name for r in refs if r.source]
        if mates and rng.random() < self.s.crossover_rate:
            return "crossover", mates[0]
        if rng.random() < self.s.unit_mutation_rate:
            return "mutate_unit", None
        return "evolve", None

    # ------------------------------------------------------------------------------------------ the stage
    def run(self, view: StoreView, iteration: int) -> IterationOutcome:
        out = IterationOutcome(iteration)
        ctx, offered, query = self.context(view, iteration)
        tag = f"iter-{iteration}"
        feedback: Feedback | None = None
        history = view.history(include_seed=True)
        for attempt in range(self.s.max_rewrites + 1):
            self.on_stage("researcher", ctx.parent.name if attempt == 0 else f"rewrite {attempt}")
            proposal, reply = self.researcher.propose(ctx, feedback=feedback, experiment=tag)
            if proposal is None:
                out.failure = f"researcher: {reply.failure.kind.value}: {reply.failure.message[:300]}"
                self.on_event(f"iteration {iteration}: the Researcher failed ({reply.failure.kind.value})")
                return out
            base_meta = {"iteration": iteration, "attempt": attempt, **dict(proposal.meta),
                         "selection": ctx.evidence.get("selection"), "cognition_used": list(proposal.cognition_used),
                         "cognition_offered": list(ctx.cognition_ids)}
            if self.s.novelty:
                self.on_stage("novelty", proposal.name)
                verdict = self.novelty.check(proposal, history, experiment=tag)
                base_meta["novelty"] = verdict.to_meta()
                if not verdict.is_novel:
                    name = self._record(proposal, ctx, base_meta, Status.REJECTED,
                                        f"novelty: not novel (like {verdict.most_similar}): {verdict.reason}")
                    out.rejected.append(name)
                    history = history + [dataclasses.replace(ctx.parent, name=name, source=proposal.source,
                                                             motivation=proposal.motivation)]
                    rewritten = None
                    if self.s.break_pattern:
                        self.on_stage("break pattern", proposal.name)
                        rewritten, r2 = self.novelty.break_pattern(
                            proposal, verdict, ctx.cognition, experiment=tag,
                            evidence={"draw": iteration, "known_fingerprints": ctx.evidence["known_fingerprints"],
                                      "history": ctx.evidence["history"]})
                        if rewritten is None:
                            self.on_event(f"iteration {iteration}: break-the-pattern rewrite failed "
                                          f"({r2.failure.kind.value if r2.failure else '?'})")
                    if rewritten is None:
                        feedback = Feedback("novelty", verdict.reason, name, proposal.source, attempt + 1,
                                            self.s.max_rewrites, edits=tuple(proposal.edits))
                        continue
                    proposal = rewritten
                    base_meta = {**base_meta, **dict(rewritten.meta), "rewrite_of": name}
            accepted, reason, gate, meta = self._gate_and_review(proposal, base_meta, tag)
            if accepted is not None:
                name = self._record(accepted, ctx, meta, Status.CHECKED, "", offered=offered, query=query)
                out.accepted = name
                self.on_event(f"iteration {iteration}: {name} (from {ctx.parent.name}) accepted for training")
                return out
            name = self._record(proposal, ctx, meta, Status.REJECTED, reason)
            out.rejected.append(name)
            self.on_event(f"iteration {iteration}: {name} rejected at {gate}: {reason[:160]}")
            feedback = Feedback("gates" if gate != "code_checker" else "code_checker", reason, name, proposal.source,
                                attempt + 1, self.s.max_rewrites, gate=gate if gate != "code_checker" else None,
                                edits=tuple(proposal.edits))
        out.failure = f"every proposal was rejected ({len(out.rejected)} attempt(s))"
        return out

    def _gate_and_review(self, proposal: AgentProposal, meta: dict, tag: str
                         ) -> tuple[AgentProposal | None, str, str, dict]:
        """(accepted proposal or None, rejection reason, where it was rejected, meta)."""
        self.on_stage("gates", proposal.name)
        verdict = self._check(proposal.source, _safe(proposal.name), self.gate_settings)
        meta = {**meta, "gates": _verdict_meta(verdict)}
        if not verdict.ok:
            return None, f"gate {verdict.gate}: {verdict.reason}", str(verdict.gate), meta
        if not self.s.code_checker:
            return proposal, "", "", meta
        self.on_stage("code checker", proposal.name)
        review = self.checker.review(proposal.name, proposal.motivation, proposal.source, gates=verdict,
                                     experiment=tag)
        meta["code_checker"] = review.to_meta()
        if review.verdict == "reject":
            return None, f"code checker: {review.reason()}", "code_checker", meta
        if review.verdict == "fixed":
            self.on_stage("gates (review fix)", proposal.name)
            again = self._check(review.source, _safe(proposal.name), self.gate_settings)
            meta["code_checker"]["fix_gates"] = _verdict_meta(again)
            if again.ok:
                return dataclasses.replace(proposal, source=review.source), "", "", meta
            logging.info("the review fix of %s failed the gates (%s); keeping the original", proposal.name,
                         again.reason[:200])
            meta["code_checker"]["fix_kept"] = False
        return proposal, "", "", meta

    def _record(self, proposal: AgentProposal, ctx: ResearchContext, meta: dict, status: Status, reason: str, *,
                offered: list[tuple[str, str]] = (), query: str = "") -> str:
        """Stores the design with its experiment in `status` (checked or rejected); returns its store name."""
        name = self.store.unique_name(proposal.name)
        refs = tuple(r.name for r in ctx.references if r.name != ctx.parent.name)
        design = Design(name=name, kind=DesignKind.PROGRAM, source=proposal.source, motivation=proposal.motivation,
                        parent=ctx.parent.name, references=refs, summary=proposal.summary,
                        meta={**meta, "outcome": status.value, "reason": reason[:2000],
                              "researcher": reply_meta(proposal.reply)})
        _, exp = self.store.propose(design, scale=self.s.scale)
        if offered:   # what the Researcher was shown, kept with the proposal
            self.store.add_cognition(exp.id, CognitionRetrieval(
                entries=tuple({"entry_id": i, "text": t} for i, t in offered), stage="proposal",
                query=query or f"analysis of {ctx.parent.name}"))
        self.store.transition(exp.id, status, reason=reason or "gates and review passed")
        return name


def _verdict_meta(verdict: Any) -> dict[str, Any]:
    return {"ok": verdict.ok, "gate": verdict.gate, "reason": verdict.reason[:1500],
            "seconds": round(float(verdict.seconds), 1),
            "details": {k: v for k, v in (verdict.details or {}).items()
                        if k in ("total_params", "target_params", "cost_exponent", "mlp_hidden")}}
