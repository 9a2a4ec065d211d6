"""The Analyst: an experiment's results against the baseline, the parent and the siblings (ablation-style).

Its summary of shortcomings (the weaknesses) becomes the retrieval query for cognition; the top-k notes are
returned as a CognitionRetrieval record to store with the analysis, and the next Researcher that picks this design
as parent reads them. A failed call falls back to the heuristic analyst (labelled so in the record): a trained
design must still be analysed for the loop to move on.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Sequence

from aira_jax.discovery.agents.briefs import DesignBrief, Metrics, reply_meta
from aira_jax.discovery.agents.evidence import with_evidence
from aira_jax.discovery.cognition import CognitionBase, format_hits
from aira_jax.discovery.llm import LLMClient, Reply, render_prompt, schemas
from aira_jax.discovery.records import Analysis, CognitionRetrieval

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


@dataclasses.dataclass(frozen=True)
class BaselineBrief:
    name: str
    loss_mean: float
    loss_std: float | None
    num_seeds: int
    params: int | None = None
    throughput: float | None = None
    anchors: Mapping[str, float | None] = dataclasses.field(default_factory=dict)   # deltanet / gated_deltanet

    def text(self) -> str:
        noise = f", noise floor (std over seeds) {self.loss_std:.4f}" if self.loss_std else ""
        lines = [f"- {self.name} (the seed): mean validation loss {self.loss_mean:.4f} over {self.num_seeds} "
                 f"seed(s){noise}" + (f"; {self.params:,} parameters" if self.params else "")
                 + (f"; {self.throughput:,.0f} tokens/s" if self.throughput else "")]
        for k, v in self.anchors.items():
            if v is not None and k != self.name:
                lines.append(f"- {k}: validation loss {v:.4f}")
        return "\n".join(lines)

    def to_evidence(self) -> dict[str, Any]:
        return {"name": self.name, "loss_mean": self.loss_mean, "loss_std": self.loss_std,
                "num_seeds": self.num_seeds, "params": self.params, "throughput": self.throughput}


@dataclasses.dataclass(frozen=True)
class AnalysisOutcome:
    analysis: Analysis                       # to store (store.add_analysis)
    retrieval: CognitionRetrieval | None     # to store (store.add_cognition, stage 'analysis')
    data: Mapping[str, Any]
    reply: Reply | None
    fallback: bool = False


def analyst_evidence(design: DesignBrief, metrics: Metrics, parent: DesignBrief | None,
                     siblings: Sequence[DesignBrief], baseline: BaselineBrief) -> dict[str, Any]:
    return {"kind": "analyst", "program": design.source,
            "design": {"name": design.name, "parent": design.parent, "edits": design.edits,
                       "motivation": design.motivation[:2000], "summary": design.summary[:600]},
            "result": metrics.to_evidence(),
            "parent": ({"name": parent.name, **parent.metrics.to_evidence()} if parent else None),
            "siblings": [{"name": s.name, "edits": s.edits, **s.metrics.to_evidence()} for s in siblings],
            "baseline": baseline.to_evidence(), "anchors": dict(baseline.anchors)}


class Analyst:
    def __init__(self, client: LLMClient, cognition: CognitionBase | None = None, *, k: int = 3):
        self.client = client
        self.cognition = cognition
        self.k = k

    def analyse(self, design: DesignBrief, metrics: Metrics, *, parent: DesignBrief | None,
                siblings: Sequence[DesignBrief], baseline: BaselineBrief, experiment_id: int | None = None
                ) -> AnalysisOutcome:
        notes = "(no cognition base)"
        if self.cognition is not None and design.motivation.strip():
            notes = format_hits(self.cognition.retrieve(design.motivation, self.k))
        sib_text = "\n".join(s.line() for s in siblings) or "(none yet)"
        prompt = render_prompt(
            "analyst", design_name=design.name, motivation=design.motivation or design.summary or "(none)",
            program=design.source, results=metrics.text(), parent_name=parent.name if parent else "(none: a seed)",
            parent_results=parent.metrics.text() if parent else "(none)", sibling_results=sib_text,
            baseline_results=baseline.text(), cognition=notes)
        evidence = analyst_evidence(design, metrics, parent, siblings, baseline)
        reply = self.client.complete("analyst", with_evidence(prompt, evidence), schema=schemas.ANALYST,
                                     experiment=None if experiment_id is None else str(experiment_id))
        fallback = not reply.ok
        if fallback:
            from aira_jax.discovery.offline import heuristics  # pylint: disable=import-outside-toplevel
            data = heuristics.analyse(evidence)
            data["analysis"] = (f"(The analyst call failed: {reply.failure.kind.value}; heuristic analysis "
                                f"follows.) {data['analysis']}")
        else:
            data = dict(reply.data)
        compared = [c for c in dict.fromkeys(data.get("compared_with") or ()) if isinstance(c, str)
                    and _NAME_RE.match(c)]
        meta = {k: list(data.get(k) or ()) for k in ("strengths", "weaknesses", "insights", "next_ideas")}
        meta.update(reply_meta(reply))
        if fallback:
            meta.update(agent="offline-heuristic", fallback=True, failure=reply.failure.to_dict())
        analysis = Analysis(text=data["analysis"], compared_with=tuple(compared), meta=meta,
                            experiment_id=experiment_id)
        retrieval = None
        if self.cognition is not None:
            query = shortcomings_query(data)
            if query:
                _, retrieval = self.cognition.retrieval_record(query, self.k, stage="analysis",
                                                               experiment_id=experiment_id)
        return AnalysisOutcome(analysis, retrieval, data, reply, fallback)


def shortcomings_query(data: Mapping[str, Any]) -> str:
    """The retrieval query: the analysis's weaknesses (its summary of shortcomings), else its text."""
    weak = [str(w) for w in data.get("weaknesses") or () if str(w).strip()]
    return " ".join(weak) if weak else str(data.get("analysis") or "")[:2000]
