"""After training: Analyst (+ the cognition it retrieves), Summarizer and Judge for each trained experiment.

Idempotent over the store, so a resumed run finishes what an interrupted one left: a 'trained' experiment gets
its analysis (which moves it to 'analysed'), the retrieved notes and the summary; an 'analysed' one without a
judge score gets one. Fitness is computed in code from the stored records whenever it is needed (loop_context).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from aira_jax.discovery.agents import Analyst, Judge, Summarizer
from aira_jax.discovery.loop_context import StoreView
from aira_jax.discovery.records import Status
from aira_jax.discovery.store import ExperimentStore


class AnalysisStage:
    def __init__(self, store: ExperimentStore, *, analyst: Analyst, judge: Judge, summarizer: Summarizer,
                 view: Callable[[], StoreView], on_stage: Callable[[str, str], None] = lambda s, d: None,
                 on_event: Callable[[str], None] = lambda text: None):
        self.store, self.analyst, self.judge, self.summarizer = store, analyst, judge, summarizer
        self.view, self.on_stage, self.on_event = view, on_stage, on_event

    def pending(self) -> int:
        v = self.view()
        judged = set(v.judges)
        return sum(1 for e in v.experiments if e.status == Status.TRAINED
                   or (e.status == Status.ANALYSED and e.id not in judged))

    def run_pending(self, stop: Callable[[], bool] = lambda: False) -> int:
        """Analyses and judges every experiment that needs it; returns how many it handled."""
        done = 0
        while not stop():
            v = self.view()
            judged = set(v.judges)
            todo = next((e for e in v.experiments if e.status == Status.TRAINED
                         or (e.status == Status.ANALYSED and e.id not in judged)), None)
            if todo is None or v.baseline is None:
                return done
            self.one(v, todo.id)
            done += 1
        return done

    def one(self, v: StoreView, experiment_id: int) -> None:
        exp = next(e for e in v.experiments if e.id == experiment_id)
        name = exp.design
        design = v.brief(name)
        metrics = v.metrics(name)
        parent = v.brief(design.parent) if design.parent else None
        siblings = v.siblings(name)
        baseline = v.baseline_brief()
        analysis_text = design.analysis
        if exp.status == Status.TRAINED:
            self.on_stage("analyst", name)
            outcome = self.analyst.analyse(design, metrics, parent=parent, siblings=siblings, baseline=baseline,
                                           experiment_id=exp.id)
            self.on_stage("summarizer", name)
            summary = self.summarizer.summarize(design, metrics, analysis=outcome.analysis.text, parent=parent,
                                                baseline=baseline, experiment_id=exp.id)
            meta = {**outcome.analysis.meta, "summary": summary.get("summary"), "key_idea": summary.get("key_idea"),
                    "tags": summary.get("tags"), "summarizer": summary.get("summarizer")}
            record = dataclasses.replace(outcome.analysis, meta=meta)
            if outcome.retrieval is not None:   # before the analysis: it moves the experiment out of 'trained'
                self.store.add_cognition(exp.id, outcome.retrieval)
            self.store.add_analysis(exp.id, record)
            analysis_text = record.text
            weak = (meta.get("weaknesses") or ["-"])[0]
            loss = "no finite loss" if metrics.val_loss is None else f"val loss {metrics.val_loss:.4f}" + (
                f" ({metrics.z_vs_seed:+.2f} noise floors vs the seed)" if metrics.z_vs_seed is not None else "")
            self.on_event(f"analysed {name}: {loss} | weakness: {str(weak)[:120]}")
        self.on_stage("judge", name)
        verdict = self.judge.score(design, metrics, baseline=baseline, analysis=analysis_text, parent=parent,
                                   experiment_id=exp.id)
        self.store.add_judge_score(exp.id, verdict.score)
        report = self.view().fitness_report(name)
        if report is not None:
            self.on_event(f"judged {name}: judge {verdict.score.total:.2f}/10, fitness {report.fitness:.3f}"
                          + (f" ({'; '.join(report.flags)})" if report.flags else ""))
