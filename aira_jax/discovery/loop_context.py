"""A read-only snapshot of the store from which the loop builds what the agents see.

The store is the loop's only state; every decision reads it afresh through a `StoreView`: the baseline (the
seed's runs) and its noise floor, each design's metrics and fitness, its latest analysis and summary, the history
of attempts with their edits and outcomes, and the fingerprints of every program tried.
"""
from __future__ import annotations

import collections
import math
from typing import Any, Sequence

from aira_jax.discovery import fitness as fitness_lib
from aira_jax.discovery.agents.analyst import BaselineBrief
from aira_jax.discovery.agents.briefs import DesignBrief, Metrics
from aira_jax.discovery.agents.evidence import program_fingerprint
from aira_jax.discovery.records import Analysis, Design, Experiment, JudgeScore, KernelVerdict, Result, Status
from aira_jax.discovery.store import ExperimentStore

ANCHOR_NAMES = ("deltanet", "gated_deltanet")


class StoreView:
    def __init__(self, store: ExperimentStore, *, seed_name: str, scale: str,
                 fitness_cfg: fitness_lib.FitnessConfig = fitness_lib.FitnessConfig()):
        self.seed_name, self.scale, self.fitness_cfg = seed_name, scale, fitness_cfg
        self.designs: dict[str, Design] = {d.name: d for d in store.designs()}
        self.experiments: list[Experiment] = store.experiments(scale=scale)
        self.by_design: dict[str, list[Experiment]] = collections.defaultdict(list)
        for e in self.experiments:
            self.by_design[e.design].append(e)
        self.results: dict[int, Result] = {e.id: r for e, r in store.evaluated(scale=scale)}
        self.judges: dict[int, list[JudgeScore]] = collections.defaultdict(list)
        for s in store.judge_scores():
            self.judges[s.experiment_id].append(s)
        self.analyses: dict[int, Analysis] = {}
        for e in self.experiments:
            if e.status in (Status.ANALYSED, Status.TRAINED):
                found = store.analyses(e.id)
                if found:
                    self.analyses[e.id] = found[-1]
        self.cognition = {e.id: store.cognition(e.id) for e in self.experiments if e.status == Status.ANALYSED}
        self.kernel_verdicts: list[KernelVerdict] = store.kernel_verdicts()  # of the whole store, every scale
        seed_runs = [self.results[e.id] for e in self.by_design.get(seed_name, ()) if e.id in self.results]
        self.baseline: fitness_lib.Baseline | None = None
        if seed_runs:
            try:
                self.baseline = fitness_lib.Baseline.from_results(seed_runs)
            except fitness_lib.FitnessError:
                self.baseline = None

    # ------------------------------------------------------------------------------------------ per design
    def results_of(self, name: str) -> list[Result]:
        return [self.results[e.id] for e in self.by_design.get(name, ()) if e.id in self.results]

    def status_of(self, name: str) -> tuple[str, str]:
        exps = self.by_design.get(name)
        if not exps:
            return "none", ""
        return exps[-1].status.value, exps[-1].reason

    def fitness_report(self, name: str) -> fitness_lib.FitnessReport | None:
        results = self.results_of(name)
        if not results or self.baseline is None:
            return None
        judges = [s for e in self.by_design.get(name, ()) for s in self.judges.get(e.id, ())]
        try:
            return fitness_lib.compute_fitness(fitness_lib.Metrics.from_records(results, judges), self.baseline,
                                               self.fitness_cfg)
        except fitness_lib.FitnessError:
            return None

    def metrics(self, name: str) -> Metrics:
        status = self.status_of(name)[0]
        results = self.results_of(name)
        if not results:
            return Metrics(status=status)
        report = self.fitness_report(name)
        m = Metrics.from_result(results[-1], status=status)
        losses = [x for r in results for x in r.seed_losses if x is not None and math.isfinite(x)]
        val = sum(losses) / len(losses) if losses else None
        z = None
        if val is not None and self.baseline is not None and self.baseline.loss_std:
            z = (self.baseline.loss_mean - val) / self.baseline.loss_std
        per_seed = tuple(x for r in results for x in r.seed_losses)
        return Metrics(val_loss=val, val_loss_per_seed=per_seed if len(per_seed) > 1 else (), bpb=m.bpb,
                       params=m.params, throughput=m.throughput, tokens=m.tokens, benchmarks=m.benchmarks,
                       fitness=report.fitness if report else None, z_vs_seed=z, status=status)

    def latest_analysis(self, name: str) -> Analysis | None:
        for e in reversed(self.by_design.get(name, ())):
            if e.id in self.analyses:
                return self.analyses[e.id]
        return None

    def cognition_of(self, name: str) -> list[tuple[str, str]]:
        """The notes retrieved for the design's analysis (its shortcomings), as (entry id, text)."""
        for e in reversed(self.by_design.get(name, ())):
            for r in reversed(self.cognition.get(e.id, ())):
                if r.stage == "analysis" and r.entries:
                    return [(x.entry_id, x.text) for x in r.entries]
        return []

    def brief(self, name: str) -> DesignBrief:
        d = self.designs[name]
        a = self.latest_analysis(name)
        meta = dict(d.meta)
        summary = d.summary
        status, reason = self.status_of(name)
        if a is not None:
            meta.update({k: a.meta.get(k) for k in ("weaknesses", "next_ideas", "strengths", "insights")
                         if a.meta.get(k) is not None})
            summary = a.meta.get("summary") or summary
        if status in ("rejected", "failed") and reason:
            summary = f"{status.upper()}: {reason[:300]}" + (f" | {summary}" if summary else "")
        return DesignBrief(name=name, source=d.source, parent=d.parent, motivation=d.motivation, summary=summary,
                           analysis=a.text if a else "", metrics=self.metrics(name), meta=meta)

    # ------------------------------------------------------------------------------------------ the search
    def history(self, *, include_seed: bool = False) -> list[DesignBrief]:
        """Every design in creation order (rejected and failed ones included)."""
        return [self.brief(n) for n in self.designs if include_seed or n != self.seed_name]

    def history_evidence(self) -> list[dict[str, Any]]:
        """Per design: parent, edits, status, loss and the loss gain over its parent in noise-floor units."""
        std = self.baseline.loss_std if self.baseline else None
        out = []
        for name, d in self.designs.items():
            if d.parent is None:
                continue
            m, pm = self.metrics(name), self.metrics(d.parent)
            z = None
            if m.val_loss is not None and pm.val_loss is not None and std:
                z = (pm.val_loss - m.val_loss) / std
            out.append({"name": name, "parent": d.parent, "edits": list(d.meta.get("edits") or ()),
                        "operator": d.meta.get("operator"), "status": m.status, "val_loss": m.val_loss,
                        "z_vs_parent": z})
        return out

    def known_fingerprints(self) -> list[str]:
        return sorted({program_fingerprint(d.source) for d in self.designs.values()})

    def siblings(self, name: str) -> list[DesignBrief]:
        d = self.designs.get(name)
        if d is None or d.parent is None:
            return []
        return [self.brief(n) for n, x in self.designs.items() if x.parent == d.parent and n != name
                and self.results_of(n)]

    def baseline_brief(self) -> BaselineBrief:
        if self.baseline is None:
            raise RuntimeError(f"the seed design {self.seed_name!r} has no finite validation loss yet")
        seed_metrics = self.metrics(self.seed_name)
        anchors: dict[str, float | None] = {n: None for n in ANCHOR_NAMES}
        for n in ANCHOR_NAMES:
            if n == self.seed_name:
                anchors[n] = self.baseline.loss_mean
            elif n in self.designs and self.designs[n].parent is None:
                anchors[n] = self.metrics(n).val_loss
        return BaselineBrief(name=self.seed_name, loss_mean=self.baseline.loss_mean, loss_std=self.baseline.loss_std,
                             num_seeds=self.baseline.num_seeds, params=seed_metrics.params,
                             throughput=seed_metrics.throughput, anchors=anchors)

    def recent_attempts(self, n: int) -> str:
        items = self.history()[-n:]
        return "\n".join(b.line() for b in items) or "(none yet: this is the first proposal)"

    def trained_count(self) -> int:
        return sum(1 for name, d in self.designs.items() if d.parent is not None and self.results_of(name))

    def best(self) -> tuple[str, float] | None:
        scored = [(n, r.fitness) for n in self.designs if (r := self.fitness_report(n)) is not None]
        return max(scored, key=lambda x: x[1]) if scored else None


def pending(experiments: Sequence[Experiment], *statuses: Status) -> list[Experiment]:
    return [e for e in experiments if e.status in statuses]
