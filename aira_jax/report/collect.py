"""What a discovery report says, gathered from the store (through a `StoreView`) and the run's logs.

Everything here is read-only: the report can be built while the loop runs, after it stopped, or from a copy of
the workdir. The records flow one way: StoreView -> `RunReport` -> markdown and figures (`render`, `figures`).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from typing import Any

from aira_jax.discovery import failures
from aira_jax.discovery.leaderboard import leaderboard_rows
from aira_jax.discovery.loop_context import StoreView
from aira_jax.discovery.records import KERNEL_FAULT

LLM_LOG = "llm_calls.jsonl"


@dataclasses.dataclass(frozen=True)
class DesignRow:
    """One design of the run with everything the report shows about it."""
    name: str
    parent: str | None
    status: str
    reason: str                      # why it was rejected / failed ('' otherwise)
    stage: str                       # where it was stopped: 'novelty', 'gate causality', 'training', ...
    iteration: int | None
    operator: str
    edits: tuple[str, ...]
    fitness: float | None
    val_loss: float | None
    val_loss_per_seed: tuple[float, ...]
    z_vs_seed: float | None          # (seed loss - loss) / noise floor; positive = better
    z_vs_parent: float | None
    bpb: float | None
    params: int | None
    throughput: float | None
    benchmarks: dict[str, float]
    judge_total: float | None
    judge_subscores: dict[str, float]
    judge: str
    judge_rationale: str
    motivation: str
    analysis: str
    weaknesses: tuple[str, ...]
    cognition: tuple[str, ...]       # entry ids retrieved for its analysis
    loss_curve: tuple[tuple[int, float], ...]
    source: str
    created_at: float | None
    flags: tuple[str, ...] = ()
    kernels: tuple[str, ...] = ()              # ops that ran a Pallas kernel in its training
    # op@backend -> why it was set aside: a compile error, a failed self-test or numerics check, a run-time failure
    kernels_set_aside: dict[str, str] = dataclasses.field(default_factory=dict)
    # op -> worst relative RMS error of its kernel against the XLA op in the self-test (aira_jax.ops.selftest)
    kernels_tested: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RoleUsage:
    role: str
    calls: int
    failed: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclasses.dataclass(frozen=True)
class RunReport:
    workdir: str
    seed: str
    scale: str
    noise_floor: float | None
    seed_loss: float | None
    seed_runs: int
    designs: tuple[DesignRow, ...]   # creation order
    llm: tuple[RoleUsage, ...]
    backends: tuple[str, ...]
    started_at: float | None
    last_record_at: float | None
    fitness_rules: str = ""          # how fitness was computed, for people
    ranking: tuple[str, ...] = ()    # the loop's leaderboard order (leaderboard_rows)
    store: str = ""                  # the store's URL (no password), for the gallery export commands
    kernel_faults: tuple[str, ...] = ()  # 'op on scope (experiment N: why)' for each kernel found faulty at run time

    def ranked(self) -> list[DesignRow]:
        """Designs with a validation loss in the loop's leaderboard order."""
        rows = self.by_name()
        return [rows[n] for n in self.ranking if n in rows and rows[n].val_loss is not None]

    def by_name(self) -> dict[str, DesignRow]:
        return {d.name: d for d in self.designs}

    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(d.status for d in self.designs))

    def stopped_at(self) -> dict[str, list[DesignRow]]:
        """Rejected and failed designs grouped by where they were stopped, most frequent first."""
        groups: dict[str, list[DesignRow]] = collections.defaultdict(list)
        for d in self.designs:
            if d.status in ("rejected", "failed"):
                groups[d.stage].append(d)
        return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def stage_of(status: str, reason: str) -> tuple[str, str]:
    """(where a rejected or failed design was stopped, the reason for people) from the reason the loop recorded.

    Rejections read 'novelty: ...', 'gate <name>: ...' or 'code checker: ...'; failures '<kind>: <message>' then
    diagnostics as JSON (`failures.Failure.reason`), shown as 'training (<kind>)' and the message alone.
    """
    if status == "failed":
        failure = failures.parse_failure_reason(reason)
        if failure is not None:
            return f"training ({failure.kind})", failure.message
        return "training", reason.split(failures.DIAGNOSTICS_MARKER, 1)[0]
    if status == "rejected":
        head = reason.split(":", 1)[0].strip().lower() if ":" in reason else ""
        return (head if head and len(head) <= 40 else "rejected"), reason
    return "", reason


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def llm_usage(path: str) -> tuple[tuple[RoleUsage, ...], tuple[str, ...]]:
    """Calls, tokens and cost per agent role from the LLM call log (malformed lines are skipped)."""
    per: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
    backends: set[str] = set()
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(rec, dict):
                    continue
                role = str(rec.get("role") or "?")
                usage = rec.get("usage") if isinstance(rec.get("usage"), dict) else {}
                r = per[role]
                r["calls"] += 1
                r["failed"] += 0 if rec.get("ok", True) else 1
                r["in"] += _finite(usage.get("input_tokens")) or 0
                r["out"] += _finite(usage.get("output_tokens")) or 0
                r["cost"] += _finite(rec.get("cost_usd")) or 0.0
                if rec.get("backend"):
                    backends.add(str(rec["backend"]))
    rows = tuple(RoleUsage(role, int(r["calls"]), int(r["failed"]), int(r["in"]), int(r["out"]), r["cost"])
                 for role, r in sorted(per.items()))
    return rows, tuple(sorted(backends))


def ops_used(results: Any) -> tuple[tuple[str, ...], dict[str, str], dict[str, float]]:
    """The ops that trained with a Pallas kernel, the kernels set aside (XLA ops instead), and each kept kernel's
    worst self-test error against the XLA op, over the seeds of the latest result (the trainer's summary 'ops',
    kept per seed in the result's meta)."""
    kernels: set[str] = set()
    aside: dict[str, str] = {}
    tested: dict[str, float] = {}
    summaries = (results[-1].meta or {}).get("summaries") if results else None
    for summary in (summaries or {}).values() if isinstance(summaries, dict) else ():
        ops = summary.get("ops") if isinstance(summary, dict) else None
        if isinstance(ops, dict):
            kernels.update(str(k) for k in ops.get("kernels") or ())
            if isinstance(ops.get("set_aside"), dict):
                aside.update({str(k): str(v) for k, v in ops["set_aside"].items()})
            passed = ops.get("self_test", {}).get("ok") if isinstance(ops.get("self_test"), dict) else None
            for op, err in (passed or {}).items() if isinstance(passed, dict) else ():
                if isinstance(err, (int, float)):
                    tested[str(op)] = max(tested.get(str(op), 0.0), float(err))
    return tuple(sorted(kernels)), aside, {op: e for op, e in tested.items() if op in kernels}


def _design_row(view: StoreView, name: str, z_parent: float | None, flags: tuple[str, ...]) -> DesignRow:
    d = view.designs[name]
    status, recorded = view.status_of(name)
    stage, reason = stage_of(status, recorded)
    m = view.metrics(name)
    judges = [s for e in view.by_design.get(name, ()) for s in view.judges.get(e.id, ())]
    judge = judges[-1] if judges else None
    analysis = view.latest_analysis(name)
    results = view.results_of(name)
    weak = analysis.meta.get("weaknesses") if analysis is not None else None
    exps = view.by_design.get(name, ())
    kernels, aside, tested = ops_used(results)
    return DesignRow(
        name=name, parent=d.parent, status=status, reason=reason, stage=stage,
        iteration=d.meta.get("iteration") if isinstance(d.meta.get("iteration"), int) else None,
        operator=str(d.meta.get("operator") or ("seed" if d.parent is None else "")),
        edits=tuple(str(x) for x in (d.meta.get("edits") or ())),
        fitness=m.fitness, val_loss=m.val_loss,
        val_loss_per_seed=tuple(x for x in m.val_loss_per_seed if x is not None),
        z_vs_seed=m.z_vs_seed, z_vs_parent=z_parent, bpb=m.bpb, params=m.params, throughput=m.throughput,
        benchmarks=dict(m.benchmarks), judge_total=judge.total if judge else None,
        judge_subscores=dict(judge.sub_scores) if judge else {}, judge=judge.judge if judge else "",
        judge_rationale=judge.rationale if judge else "", motivation=d.motivation,
        analysis=analysis.text if analysis else "",
        weaknesses=tuple(str(w) for w in weak) if isinstance(weak, (list, tuple)) else (),
        cognition=tuple(i for i, _ in view.cognition_of(name)),
        loss_curve=tuple(results[-1].loss_curve) if results else (), source=d.source,
        created_at=exps[0].created_at if exps else d.created_at, flags=flags, kernels=kernels,
        kernels_set_aside=aside, kernels_tested=tested)


def fitness_rules(cfg: Any, *, inferred: bool = False) -> str:
    terms = ", ".join(cfg.terms)
    text = (f"{cfg.combine} of the {terms} term(s); the loss term saturates at ±{cfg.relative_band:.0%} of the "
            f"seed's loss (k = {cfg.steepness:g})")
    if cfg.detect_leakage:
        text += f"; a loss over {cfg.leakage_fraction:.0%} below the seed's is discarded as leakage"
    if inferred:
        text += (" — inferred: the workdir has no run.json, so these are the default rules over the terms the "
                 "records support, and may differ from the run's own")
    return text


def collect(view: StoreView, workdir: str, *, llm_log: str | None = None, inferred: bool = False,
            store: str = "") -> RunReport:
    """The report's content for the run in `workdir` (its store read through `view`); `inferred`: the run's
    settings were read off the store, not from run.json (said in the report)."""
    board = leaderboard_rows(view)   # the loop's own ranking and fitness flags
    flags = {r.name: r.flags for r in board}
    z_parent = {e["name"]: e["z_vs_parent"] for e in view.history_evidence()}
    rows = tuple(_design_row(view, n, z_parent.get(n), flags.get(n, ())) for n in view.designs)
    llm, backends = llm_usage(llm_log or os.path.join(workdir, LLM_LOG))
    times = [e.created_at for e in view.experiments if e.created_at]
    updates = [e.updated_at or e.created_at for e in view.experiments if e.updated_at or e.created_at]
    b = view.baseline
    return RunReport(workdir=os.path.abspath(workdir), seed=view.seed_name, scale=view.scale,
                     noise_floor=b.loss_std if b else None, seed_loss=b.loss_mean if b else None,
                     seed_runs=b.num_seeds if b else 0, designs=rows, llm=llm, backends=backends,
                     started_at=min(times) if times else None, last_record_at=max(updates) if updates else None,
                     fitness_rules=fitness_rules(view.fitness_cfg, inferred=inferred), store=store,
                     ranking=tuple(r.name for r in board),
                     kernel_faults=tuple(f"{v.op} on {v.scope} (experiment {v.experiment_id}: {v.reason})"
                                         for v in view.kernel_verdicts if v.verdict == KERNEL_FAULT))
