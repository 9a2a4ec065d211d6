"""The discovery report as Markdown: summary, leaderboard, progress, lineage, where proposals were stopped, a card
for each of the best designs (motivation, numbers, judge, analysis, the change against its parent) and LLM use."""
from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import os
import re
from typing import Sequence

from aira_jax.report import figures
from aira_jax.report.collect import DesignRow, RunReport

REPORT_FILE = "report.md"
REPORT_JSON = "report.json"
FIGURES_DIR = "report_figures"
MAX_DIFF_LINES = 120
FOLD_STOPPED_ABOVE = 80   # designs in a run above which the tree folds rejected / failed leaves
MAX_TREE_LINES = 400


def _f(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _anchor(name: str) -> str:
    """The card's HTML id: the design name as it is (names are unique, so ids are), odd characters replaced."""
    return "design-" + re.sub(r"[^A-Za-z0-9._-]", "-", name)


def _quote(text: str) -> list[str]:
    return ["> " + line if line else ">" for line in text.strip().splitlines()] or ["> (none)"]


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def summary_lines(rep: RunReport) -> list[str]:
    counts = rep.counts()
    proposals = [d for d in rep.designs if d.parent is not None]
    trained = [d for d in proposals if d.val_loss is not None]
    ranked = rep.ranked()
    backends = ", ".join(rep.backends) or "none recorded"
    offline = " (heuristic offline agents, no LLM)" if rep.backends == ("offline",) else ""
    lines = [f"Seed **{rep.seed}** at scale `{rep.scale}`; LLM backend: {backends}{offline}.",
             f"{len(proposals)} proposals: {len(trained)} trained, {counts.get('rejected', 0)} rejected, "
             f"{counts.get('failed', 0)} failed, "
             f"{sum(counts.get(s, 0) for s in ('proposed', 'checked', 'training'))} waiting or in flight."]
    if rep.seed_loss is not None:
        lines.append(f"Seed validation loss {rep.seed_loss:.4f} over {rep.seed_runs} run(s); noise floor "
                     f"σ = {_f(rep.noise_floor, '.4f')} (their std). Δ columns count σ; positive = lower loss.")
    if rep.fitness_rules:
        lines.append(f"Fitness: {rep.fitness_rules}.")
    if rep.started_at is not None and rep.last_record_at is not None:
        span = (rep.last_record_at - rep.started_at) / 60
        lines.append(f"First record {_when(rep.started_at)}, last {_when(rep.last_record_at)} ({span:.1f} min).")
    best = next((d for d in ranked if d.name != rep.seed), None)
    if best is not None:
        what = "Best design" if best is ranked[0] else "No proposal ranks above the seed yet; the best one"
        lines.append(f"{what}: **[{best.name}](#{_anchor(best.name)})**, fitness {_f(best.fitness, '.3f')}, "
                     f"validation loss {best.val_loss:.4f} ({_f(best.z_vs_seed, '+.2f')} σ against the seed).")
    aside = sorted({k for d in rep.designs for k in d.kernels_set_aside})
    if aside:
        hit = sum(1 for d in rep.designs if d.kernels_set_aside)
        lines.append(f"**{hit} design(s) trained with the XLA ops because the Pallas kernel(s) {', '.join(aside)} "
                     f"were set aside** (their cards say why: a compile failure, a failed self-test or numerics "
                     f"check, or a failure at run time): their tokens/s is not comparable with kernel runs.")
    for fault in rep.kernel_faults:
        lines.append(f"Kernel found faulty at run time, set aside in every later run with that device and "
                     f"software: {fault}.")
    cost = sum(u.cost_usd for u in rep.llm)
    if rep.llm:
        lines.append(f"LLM: {sum(u.calls for u in rep.llm)} calls, ${cost:.4f}.")
    return lines


def leaderboard_table(rows: Sequence[DesignRow], top: int) -> list[str]:
    out = ["| # | design | parent | fitness | val loss | Δ seed (σ) | Δ parent (σ) | bpb | params | judge |",
           "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for i, d in enumerate(rows[:top]):
        flag = " ⚑" if d.flags else ""
        out.append(f"| {i + 1} | [{d.name}](#{_anchor(d.name)}){flag} | {d.parent or '(seed)'} | "
                   f"{_f(d.fitness, '.3f')} | {d.val_loss:.4f} | {_f(d.z_vs_seed, '+.2f')} | "
                   f"{_f(d.z_vs_parent, '+.2f')} | {_f(d.bpb, '.4f')} | {_f(d.params, ',')} | "
                   f"{_f(d.judge_total, '.2f')} |")
    if any(d.flags for d in rows[:top]):
        out.append("")
        out.append("⚑ flagged by the fitness rules (e.g. suspected leakage): " + "; ".join(
            f"{d.name}: {', '.join(d.flags)}" for d in rows[:top] if d.flags))
    return out


def lineage_lines(rep: RunReport) -> list[str]:
    """The family tree from each root (the seed and any other parentless design), children in creation order.

    In a large run (over FOLD_STOPPED_ABOVE designs) rejected and failed leaves are folded into a count on their
    parent's line, and the tree stops after MAX_TREE_LINES lines. Walked with a stack: a lineage may be
    thousands of generations deep.
    """
    children: dict[str | None, list[DesignRow]] = {}
    known = rep.by_name()
    for d in rep.designs:
        parent = d.parent if d.parent in known else None
        children.setdefault(parent, []).append(d)
    fold = len(rep.designs) > FOLD_STOPPED_ABOVE

    def label(d: DesignRow) -> str:
        if d.val_loss is not None:
            return f"{d.name}  loss {d.val_loss:.4f}  Δseed {_f(d.z_vs_seed, '+.2f')}σ  fitness {_f(d.fitness, '.3f')}"
        return f"{d.name}  [{d.status}{': ' + d.stage if d.stage else ''}]"

    out: list[str] = []
    stack = [(root, "", True, True) for root in reversed(children.get(None, []))]
    while stack:
        d, prefix, last, root = stack.pop()
        kids = children.get(d.name, [])
        shown = [k for k in kids if k.val_loss is not None or k.name in children] if fold else kids
        text = label(d) + (f"  (+{len(kids) - len(shown)} stopped)" if len(shown) < len(kids) else "")
        out.append(text if root else f"{prefix}{'└── ' if last else '├── '}{text}")
        below = prefix if root else prefix + ("    " if last else "│   ")
        stack.extend((k, below, i == len(shown) - 1, False) for i, k in reversed(list(enumerate(shown))))
    if len(out) > MAX_TREE_LINES:
        out = out[:MAX_TREE_LINES] + [f"... ({len(out) - MAX_TREE_LINES} more; every design is in report.json)"]
    return out


def stopped_lines(rep: RunReport) -> list[str]:
    groups = rep.stopped_at()
    if not groups:
        return ["No proposal was rejected and no training failed."]
    out = ["| stopped at | count | designs | first reason |", "|---|---:|---|---|"]
    for stage, rows in groups.items():
        names = ", ".join(r.name for r in rows[:6]) + (f", … (+{len(rows) - 6})" if len(rows) > 6 else "")
        out.append(f"| {stage} | {len(rows)} | {names} | {_cell(rows[0].reason[:300])} |")
    return out


def program_diff(parent: DesignRow | None, d: DesignRow) -> list[str]:
    if parent is None or not parent.source or not d.source:
        return []
    diff = list(difflib.unified_diff(parent.source.splitlines(), d.source.splitlines(), fromfile=parent.name,
                                     tofile=d.name, lineterm="", n=2))
    if not diff:
        return ["(the program is identical to its parent's)"]
    cut = len(diff) - MAX_DIFF_LINES
    body = diff[:MAX_DIFF_LINES] + ([f"... ({cut} more diff lines; the full program is in the store)"]
                                    if cut > 0 else [])
    return ["```diff", *body, "```"]


def design_card(rep: RunReport, d: DesignRow, rank: int) -> list[str]:
    known = rep.by_name()
    parent = known.get(d.parent) if d.parent else None
    how = d.operator + (f" ({', '.join(d.edits)})" if d.edits else "")
    out = [f'<a id="{_anchor(d.name)}"></a>', f"### {rank}. {d.name}", "",
           f"Parent: {d.parent or '(seed)'}" + (f"; made by {how}" if how.strip() else "")
           + (f"; iteration {d.iteration}" if d.iteration is not None else "") + f"; status {d.status}.", ""]
    per_seed = ", ".join(f"{x:.4f}" for x in d.val_loss_per_seed)
    out += ["| val loss | per seed | Δ seed (σ) | Δ parent (σ) | bpb | params | tokens/s | fitness |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
            f"| {_f(d.val_loss, '.4f')} | {per_seed or '-'} | {_f(d.z_vs_seed, '+.2f')} | "
            f"{_f(d.z_vs_parent, '+.2f')} | {_f(d.bpb, '.4f')} | {_f(d.params, ',')} | "
            f"{_f(d.throughput, ',.0f')} | {_f(d.fitness, '.3f')} |", ""]
    if d.benchmarks:
        out += ["Benchmarks: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(d.benchmarks.items())), ""]
    if d.kernels or d.kernels_set_aside:
        ops = [f"Pallas kernels: {', '.join(d.kernels)}"] if d.kernels else []
        if d.kernels_tested:
            ops.append("self-tested against the XLA ops, worst relative RMS: "
                       + ", ".join(f"{op} {err:.2g}" for op, err in sorted(d.kernels_tested.items())))
        ops += [f"set aside for the XLA ops: {k} ({_cell(v)[:200]})" for k, v in sorted(d.kernels_set_aside.items())]
        out += ["Ops: " + "; ".join(ops) + ".", ""]
    out += ["**Motivation**", "", *_quote(d.motivation or "(none recorded)"), ""]
    if d.analysis:
        out += ["**Analysis**", "", *_quote(d.analysis), ""]
        if d.weaknesses:
            out += ["Weaknesses the analyst names (the query for the cognition base):", ""]
            out += [f"- {_cell(w)}" for w in d.weaknesses] + [""]
    if d.cognition:
        out += [f"Cognition retrieved: {', '.join(d.cognition)}", ""]
    if d.judge_total is not None:
        subs = ", ".join(f"{k} {v:.1f}" for k, v in sorted(d.judge_subscores.items()))
        out += [f"**Judge** ({d.judge or 'unknown'}): {d.judge_total:.2f}/10 — {subs}", ""]
        if d.judge_rationale:
            out += [*_quote(d.judge_rationale), ""]
    diff = program_diff(parent, d)
    if diff:
        out += ["**Change against the parent**", "", *diff, ""]
    if d.val_loss is not None and rep.store:
        out += ["Keep it (program, config, metrics, lineage and Orbax checkpoint) in the gallery:", "",
                f"    python -m aira_jax.gallery export --store={rep.store} --design={d.name}", ""]
    return out


def llm_lines(rep: RunReport) -> list[str]:
    if not rep.llm:
        return ["No LLM calls were logged."]
    out = ["| role | calls | failed | input tokens | output tokens | cost ($) |", "|---|---:|---:|---:|---:|---:|"]
    for u in rep.llm:
        out.append(f"| {u.role} | {u.calls} | {u.failed} | {u.input_tokens:,} | {u.output_tokens:,} | "
                   f"{u.cost_usd:.4f} |")
    return out


def render_markdown(rep: RunReport, *, top: int = 5, figure_paths: dict[str, tuple[str | None, str]] | None = None,
                    base_dir: str | None = None) -> str:
    """The report; figure links are relative to `base_dir` (where report.md goes; default the run's workdir)."""
    figure_paths = figure_paths or {}
    base_dir = base_dir or rep.workdir
    ranked = rep.ranked()
    lines = [f"# Discovery report: {os.path.basename(rep.workdir.rstrip(os.sep))}", "", *summary_lines(rep), "",
             "## Leaderboard", "", *leaderboard_table(ranked, max(top, 10)), ""]
    for key, title in (("progress", "Search progress"), ("loss_curves", "Training curves")):
        if key in figure_paths:
            path, note = figure_paths[key]
            lines += [f"## {title}", ""]
            lines += [f"![{title}]({os.path.relpath(path, base_dir)})" if path else f"(no figure: {note})", ""]
    lines += ["## Lineage", "", "```", *lineage_lines(rep), "```", "",
              "## Where proposals were stopped", "", *stopped_lines(rep), "",
              f"## The best {min(top, len(ranked))} designs", ""]
    for i, d in enumerate(ranked[:top]):
        lines += design_card(rep, d, i + 1)
    lines += ["## LLM use", "", *llm_lines(rep), ""]
    return "\n".join(lines)


def write_report(rep: RunReport, *, top: int = 5, out_dir: str | None = None) -> str:
    """report.md, report.json and the figures in `out_dir` (default: the run's workdir); returns report.md's path."""
    out_dir = os.path.abspath(out_dir or rep.workdir)
    fig_dir = os.path.join(out_dir, FIGURES_DIR)
    ranked = rep.ranked()
    seed = rep.by_name().get(rep.seed)
    best = [d for d in ranked if d.name != rep.seed][:top]
    figs = {"progress": figures.progress_figure(rep, os.path.join(fig_dir, "progress.png")),
            "loss_curves": figures.loss_curves_figure(best, seed, os.path.join(fig_dir, "loss_curves.png"))}
    text = render_markdown(rep, top=top, figure_paths=figs, base_dir=out_dir)
    path = os.path.join(out_dir, REPORT_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    blob = dataclasses.asdict(rep)
    for d in blob["designs"]:
        d.pop("source", None)  # the programs stay in the store
    with open(os.path.join(out_dir, REPORT_JSON), "w", encoding="utf-8") as f:
        json.dump(blob, f, indent=1, default=str)
    return path
