"""The report's figures: the search's progress and the training curves of the best designs (matplotlib, headless).

Each function returns (path or None, note): without matplotlib, or with nothing to draw, the note says why and
the report says it in place of the figure.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

from aira_jax.report.collect import DesignRow, RunReport


def _pyplot():
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)  # never needs a display
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    return plt


def _finish(plt, fig, ax, path: str, *, xlabel: str, ylabel: str, title: str, legend_loc: str) -> tuple[str, str]:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc=legend_loc)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, ""


def progress_figure(report: RunReport, path: str) -> tuple[str | None, str]:
    """Fitness of every proposal in the order it was made, the best so far, and where proposals were stopped."""
    proposals = [d for d in report.designs if d.parent is not None]
    if not proposals:
        return None, "no proposals yet"
    plt = _pyplot()
    if plt is None:
        return None, "matplotlib is not installed (pip install matplotlib)"
    seed = report.by_name().get(report.seed)
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    xs = list(range(1, len(proposals) + 1))
    scored = [(x, d.fitness) for x, d in zip(xs, proposals) if d.fitness is not None]
    if scored:
        ax.scatter([x for x, _ in scored], [f for _, f in scored], s=22, color="tab:blue", zorder=3,
                   label="trained design")
        best, line = -math.inf, []
        for x, f in scored:
            best = max(best, f)
            line.append((x, best))
        ax.step([x for x, _ in line], [b for _, b in line], where="post", color="tab:green", label="best so far")
    low = min([f for _, f in scored] + ([seed.fitness] if seed and seed.fitness is not None else []) + [0.0])
    stopped = [x for x, d in zip(xs, proposals) if d.status in ("rejected", "failed")]
    if stopped:
        ax.scatter(stopped, [low] * len(stopped), marker="x", color="tab:red", zorder=3,
                   label="rejected or failed")
    if seed is not None and seed.fitness is not None:
        ax.axhline(seed.fitness, color="gray", linestyle="--", linewidth=1, label=f"seed ({report.seed})")
    return _finish(plt, fig, ax, path, xlabel="proposal (in the order made)", ylabel="fitness",
                   title="Search progress", legend_loc="best")


def loss_curves_figure(rows: Sequence[DesignRow], seed: DesignRow | None, path: str) -> tuple[str | None, str]:
    """Training loss against step for `rows` (the best designs) and the seed."""
    drawn = [r for r in ([seed] if seed is not None else []) + [r for r in rows if r is not seed] if r.loss_curve]
    if not drawn:
        return None, "no training curves recorded"
    plt = _pyplot()
    if plt is None:
        return None, "matplotlib is not installed (pip install matplotlib)"
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    for r in drawn:
        steps = [s for s, _ in r.loss_curve]
        losses = [v for _, v in r.loss_curve]
        is_seed = seed is not None and r.name == seed.name
        ax.plot(steps, losses, linestyle="--" if is_seed else "-", color="black" if is_seed else None,
                linewidth=1.2, label=f"{r.name} (seed)" if is_seed else r.name)
    return _finish(plt, fig, ax, path, xlabel="step", ylabel="training loss", title="Training curves (one seed each)",
                   legend_loc="upper right")
