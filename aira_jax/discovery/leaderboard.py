"""The leaderboard of a discovery run: the top designs with lineage, fitness and loss against the seed.

Columns: name, parent, fitness, validation loss, delta vs the seed in noise-floor units (the std of the seed's
runs; positive = better), parameters, status, and who judged (an LLM or the heuristic offline judge).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

from aira_jax.discovery.loop_context import StoreView


@dataclasses.dataclass(frozen=True)
class Row:
    rank: int
    name: str
    parent: str
    fitness: float | None
    val_loss: float | None
    delta_z: float | None
    params: int | None
    status: str
    judge: str
    flags: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def leaderboard_rows(view: StoreView) -> list[Row]:
    """Every design with a result, best fitness first (designs without a fitness last), then the rest."""
    rows = []
    for name, d in view.designs.items():
        m = view.metrics(name)
        report = view.fitness_report(name)
        judges = [s.judge for e in view.by_design.get(name, ()) for s in view.judges.get(e.id, ())]
        rows.append(Row(0, name, d.parent or "(seed)", report.fitness if report else None, m.val_loss, m.z_vs_seed,
                        m.params, m.status, judges[-1] if judges else "", report.flags if report else ()))
    rows.sort(key=lambda r: (r.fitness is None, -(r.fitness or 0.0), r.val_loss is None, r.val_loss or 0.0, r.name))
    return [dataclasses.replace(r, rank=i + 1) for i, r in enumerate(rows)]


def _f(x, fmt):
    return "-" if x is None else format(x, fmt)


def format_table(rows: Sequence[Row], *, top: int = 10, noise_floor: float | None = None,
                 seed_loss: float | None = None) -> str:
    shown = [r for r in rows if r.val_loss is not None][:top]
    header = ["#", "name", "parent", "fitness", "val loss", "Δ vs seed (σ)", "params", "status"]
    body = [[str(r.rank), r.name, r.parent, _f(r.fitness, ".3f"), _f(r.val_loss, ".4f"),
             _f(r.delta_z, "+.2f"), _f(r.params, ","), r.status + (" *" if r.flags else "")] for r in shown]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    foot = []
    if seed_loss is not None:
        foot.append(f"seed val loss {seed_loss:.4f}")
    if noise_floor is not None:
        foot.append(f"noise floor σ = {noise_floor:.4f} (std over the seed's runs)")
    judges = sorted({r.judge.split(" (")[0] for r in shown if r.judge})
    if judges:
        foot.append(f"judged by {', '.join(judges)}")
    if any(r.flags for r in shown):
        foot.append("* flagged (see leaderboard.json)")
    if foot:
        lines.append("; ".join(foot))
    return "\n".join(lines)


def write_leaderboard(workdir: str, rows: Sequence[Row], table: str) -> tuple[str, str]:
    """leaderboard.md (the table) and leaderboard.json (every row) in `workdir`."""
    md, js = os.path.join(workdir, "leaderboard.md"), os.path.join(workdir, "leaderboard.json")
    with open(md, "w", encoding="utf-8") as f:
        f.write("# Leaderboard\n\n```\n" + table + "\n```\n")
    with open(js, "w", encoding="utf-8") as f:
        json.dump([r.to_dict() for r in rows], f, indent=1, default=str)
    return md, js
