"""Novelty check: the most similar past motivations (TF-IDF, scikit-learn), then an LLM verdict; on a duplicate,
ASI-Arch's "break the pattern" rewrite.

An exact duplicate (same program up to comments and formatting) is refused without asking a model. A failed
verdict call counts as novel (the proposal still faces the gates and is recorded with the failure): a flaky
reviewer must not stall the search.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from absl import logging
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import linear_kernel

from aira_jax.discovery.agents.briefs import AgentProposal, DesignBrief, reply_meta
from aira_jax.discovery.agents.evidence import program_fingerprint, with_evidence
from aira_jax.discovery.agents.researcher import diff_check, proposal_from_reply
from aira_jax.discovery.llm import DESIGN_FILE, LLMClient, Reply, Workspace, render_prompt, schemas, workspace_tools


@dataclasses.dataclass(frozen=True)
class Similar:
    name: str
    score: float          # TF-IDF cosine similarity of the motivations
    brief: DesignBrief


@dataclasses.dataclass(frozen=True)
class NoveltyVerdict:
    is_novel: bool
    most_similar: str
    similarity: float
    reason: str
    similar: tuple[Similar, ...] = ()
    reply: Reply | None = None
    by: str = "llm"       # 'llm' | 'offline-heuristic' | 'exact-duplicate' | 'failed-call' | 'no-history'

    def to_meta(self) -> dict[str, Any]:
        return {"is_novel": self.is_novel, "most_similar": self.most_similar, "similarity": round(self.similarity, 4),
                "reason": self.reason[:1000], "by": self.by,
                "similar": [[s.name, round(s.score, 4)] for s in self.similar], **reply_meta(self.reply)}


def most_similar(motivation: str, history: Sequence[DesignBrief], k: int = 5) -> list[Similar]:
    """The k past designs whose motivations are closest to `motivation` (cosine over TF-IDF), best first."""
    docs = [h for h in history if (h.motivation or h.summary).strip()]
    if not docs or not motivation.strip():
        return []
    vec = TfidfVectorizer(stop_words="english", ngram_range=(1, 2), sublinear_tf=True)
    matrix = vec.fit_transform([motivation] + [(h.motivation or h.summary) for h in docs])
    scores = linear_kernel(matrix[0:1], matrix[1:]).ravel()
    order = sorted(range(len(docs)), key=lambda i: (-scores[i], docs[i].name))[:k]
    return [Similar(docs[i].name, float(scores[i]), docs[i]) for i in order]


class NoveltyChecker:
    def __init__(self, client: LLMClient, *, top_k: int = 5):
        self.client = client
        self.top_k = top_k

    def check(self, proposal: AgentProposal, history: Sequence[DesignBrief], *,
              experiment: str | None = None) -> NoveltyVerdict:
        fp = program_fingerprint(proposal.source)
        for h in history:
            if h.source and program_fingerprint(h.source) == fp:
                return NoveltyVerdict(False, h.name, 1.0, f"the program computes exactly what {h.name!r} computes "
                                      "(identical code up to comments and formatting)", by="exact-duplicate")
        similar = most_similar(proposal.motivation, history, self.top_k)
        if not similar:
            return NoveltyVerdict(True, "", 0.0, "no earlier designs to compare with", by="no-history")
        listing = "\n\n".join(
            f"{i + 1}. {s.name} (motivation similarity {s.score:.2f})\n{(s.brief.motivation or s.brief.summary)[:800]}"
            + (f"\nOutcome: {s.brief.metrics.text()}" if s.brief.metrics.val_loss is not None else "")
            for i, s in enumerate(similar))
        prompt = render_prompt("novelty_check", proposal_name=proposal.name, proposal_motivation=proposal.motivation,
                               proposal_program=proposal.source, similar_designs=listing)
        evidence = {"kind": "novelty", "program": proposal.source, "program_hash": fp,
                    "proposal": {"name": proposal.name, "edits": proposal.edits},
                    "similar": [{"name": s.name, "text_similarity": s.score,
                                 "program_hash": program_fingerprint(s.brief.source) if s.brief.source else None,
                                 "edits": s.brief.edits} for s in similar]}
        reply = self.client.complete("novelty_check", with_evidence(prompt, evidence), schema=schemas.NOVELTY_CHECK,
                                     experiment=experiment)
        if not reply.ok:
            logging.warning("novelty check failed (%s); treating %s as novel", reply.failure.kind.value,
                            proposal.name)
            return NoveltyVerdict(True, similar[0].name, similar[0].score,
                                  f"the novelty verdict call failed ({reply.failure.kind.value}); passed on",
                                  tuple(similar), reply, by="failed-call")
        d = reply.data
        by = "offline-heuristic" if d.get("agent") == "offline" else "llm"
        return NoveltyVerdict(bool(d["is_novel"]), str(d["most_similar"]), float(d["similarity"]),
                              str(d["reason"]), tuple(similar), reply, by=by)

    def break_pattern(self, proposal: AgentProposal, verdict: NoveltyVerdict, cognition: str, *,
                      evidence: dict | None = None, experiment: str | None = None
                      ) -> tuple[AgentProposal | None, Reply]:
        """ASI-Arch's rewrite of a duplicate into a design whose central mechanism differs in kind."""
        ws = Workspace({DESIGN_FILE: proposal.source})
        listing = "\n".join(f"- {s.name}: {(s.brief.motivation or s.brief.summary)[:300]}" for s in verdict.similar)
        prompt = render_prompt("break_pattern", proposal_name=proposal.name, proposal_motivation=proposal.motivation,
                               repeated_pattern=verdict.reason, similar_designs=listing or verdict.most_similar,
                               cognition=cognition)
        evidence = {**dict(evidence or {}), "kind": "break_pattern",
                    "proposal": {"name": proposal.name, "edits": proposal.edits},
                    "similar": [s.name for s in verdict.similar]}
        check = diff_check(ws, unchanged_from=[(f"the rejected proposal {proposal.name!r}", proposal.source)])
        reply = self.client.complete("break_pattern", with_evidence(prompt, evidence), schema=schemas.BREAK_PATTERN,
                                     tools=workspace_tools(ws), check=check, experiment=experiment)
        if not reply.ok:
            return None, reply
        out = proposal_from_reply(reply, ws.get(DESIGN_FILE) or "")
        meta = {**out.meta, "broken_pattern": reply.data.get("broken_pattern", ""), "rewrite_of": proposal.name}
        return dataclasses.replace(out, meta=meta), reply
