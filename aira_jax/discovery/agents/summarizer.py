"""The Summarizer (a fast model): short, fresh summaries of history records for the Researcher's context.

The summary of an experiment is made once, after its analysis, and kept in the analysis record's meta
(`summary`, `key_idea`, `tags`); the loop shows it instead of the full motivation when it lists the pool and the
recent attempts. A failed call falls back to the heuristic summary.
"""
from __future__ import annotations

from typing import Any

from aira_jax.discovery.agents.analyst import BaselineBrief, analyst_evidence
from aira_jax.discovery.agents.briefs import DesignBrief, Metrics, reply_meta
from aira_jax.discovery.agents.evidence import with_evidence
from aira_jax.discovery.llm import LLMClient, render_prompt, schemas


class Summarizer:
    def __init__(self, client: LLMClient):
        self.client = client

    def summarize(self, design: DesignBrief, metrics: Metrics, *, analysis: str, parent: DesignBrief | None,
                  baseline: BaselineBrief, experiment_id: int | None = None) -> dict[str, Any]:
        """{'summary', 'key_idea', 'tags', + call meta}."""
        prompt = render_prompt("summarizer", design_name=design.name, motivation=design.motivation or design.summary,
                               program=design.source, results=metrics.text(), analysis=analysis or "(none)")
        evidence = {**analyst_evidence(design, metrics, parent, (), baseline), "kind": "summarizer"}
        reply = self.client.complete("summarizer", with_evidence(prompt, evidence), schema=schemas.SUMMARIZER,
                                     experiment=None if experiment_id is None else str(experiment_id))
        if reply.ok:
            data = {k: reply.data.get(k) for k in ("summary", "key_idea", "tags")}
        else:
            from aira_jax.discovery.offline import heuristics  # pylint: disable=import-outside-toplevel
            data = heuristics.summarize(evidence)
            data["fallback"] = reply.failure.kind.value
        data["tags"] = list(data.get("tags") or ())
        return {**data, "summarizer": reply_meta(reply)}
