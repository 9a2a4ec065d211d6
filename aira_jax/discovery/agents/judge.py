"""The Judge: a 1-10 rubric anchored on the baselines (DeltaNet = 5, Gated DeltaNet = 10) with sub-scores; the
total is the weighted mean computed in code (`schemas.judge_score`, `JudgeScore.total`), never by the model.

A failed call falls back to the heuristic judge, recorded as such (`judge='offline-heuristic (fallback)'`).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from aira_jax.discovery.agents.analyst import BaselineBrief, analyst_evidence
from aira_jax.discovery.agents.briefs import DesignBrief, Metrics
from aira_jax.discovery.agents.evidence import with_evidence
from aira_jax.discovery.llm import LLMClient, Reply, render_prompt, schemas
from aira_jax.discovery.records import JudgeScore


@dataclasses.dataclass(frozen=True)
class Verdict:
    score: JudgeScore          # to store (store.add_judge_score)
    reply: Reply | None
    fallback: bool = False


class Judge:
    def __init__(self, client: LLMClient, *, weights: Mapping[str, float] | None = None):
        self.client = client
        self.weights = dict(weights or schemas.JUDGE_WEIGHTS)

    def score(self, design: DesignBrief, metrics: Metrics, *, baseline: BaselineBrief, analysis: str,
              parent: DesignBrief | None = None, experiment_id: int | None = None) -> Verdict:
        prompt = render_prompt("judge", design_name=design.name, motivation=design.motivation or design.summary,
                               program=design.source, results=metrics.text(), baseline_results=baseline.text(),
                               analysis=analysis or "(none)")
        evidence = {**analyst_evidence(design, metrics, parent, (), baseline), "kind": "judge"}
        reply = self.client.complete("judge", with_evidence(prompt, evidence), schema=schemas.JUDGE,
                                     experiment=None if experiment_id is None else str(experiment_id))
        if reply.ok:
            offline = reply.data.get("agent") == "offline"
            judge = f"offline-heuristic ({reply.model})" if offline else f"{reply.record.backend}:{reply.model}"
            return Verdict(schemas.judge_score(reply.data, judge=judge, weights=self.weights), reply)
        from aira_jax.discovery.offline import heuristics  # pylint: disable=import-outside-toplevel
        data = heuristics.judge(evidence)
        data["rationale"] = f"(The judge call failed: {reply.failure.kind.value}.) {data['rationale']}"
        return Verdict(schemas.judge_score(data, judge="offline-heuristic (fallback)", weights=self.weights),
                       reply, fallback=True)
