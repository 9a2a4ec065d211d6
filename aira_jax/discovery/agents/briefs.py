"""Typed inputs and outputs the agents share: what an agent sees of a design, and how results read as text."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from aira_jax.discovery.llm import Reply


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


@dataclasses.dataclass(frozen=True)
class Metrics:
    """The numbers of one evaluated design (None = not measured)."""
    val_loss: float | None = None
    val_loss_per_seed: tuple[float, ...] = ()
    bpb: float | None = None
    params: int | None = None
    throughput: float | None = None
    tokens: int | None = None
    benchmarks: dict[str, float] = dataclasses.field(default_factory=dict)
    fitness: float | None = None
    z_vs_seed: float | None = None      # (seed loss - loss) / noise floor: positive = better than the seed
    status: str = ""

    @classmethod
    def from_result(cls, result: Any, **extra: Any) -> "Metrics":
        if result is None:
            return cls(**extra)
        return cls(val_loss=_finite(result.val_loss), val_loss_per_seed=tuple(result.val_loss_per_seed or ()),
                   bpb=_finite(result.bpb), params=result.num_params, throughput=_finite(result.throughput),
                   tokens=result.tokens, benchmarks=dict(result.benchmark_scores or {}), **extra)

    def to_evidence(self) -> dict[str, Any]:
        return {"val_loss": self.val_loss, "val_loss_per_seed": list(self.val_loss_per_seed), "bpb": self.bpb,
                "params": self.params, "throughput": self.throughput, "tokens": self.tokens,
                "benchmarks": self.benchmarks, "fitness": self.fitness, "z_vs_seed": self.z_vs_seed,
                "status": self.status}

    def text(self) -> str:
        """One line a model reads: loss (per seed), bpb, params, throughput, benchmarks, fitness."""
        if self.val_loss is None:
            return f"no finite validation loss ({self.status or 'not trained'})"
        parts = [f"validation loss {self.val_loss:.4f}"]
        if len(self.val_loss_per_seed) > 1:
            parts[-1] += " (seeds: " + ", ".join(f"{x:.4f}" for x in self.val_loss_per_seed) + ")"
        if self.z_vs_seed is not None:
            parts.append(f"{self.z_vs_seed:+.2f} noise floors vs the seed")
        if self.bpb is not None:
            parts.append(f"{self.bpb:.4f} bits/byte")
        if self.params is not None:
            parts.append(f"{self.params:,} parameters")
        if self.throughput is not None:
            parts.append(f"{self.throughput:,.0f} tokens/s")
        if self.benchmarks:
            parts.append("benchmarks " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(self.benchmarks.items())
                                                   if v is not None))
        if self.fitness is not None:
            parts.append(f"fitness {self.fitness:.3f}")
        return "; ".join(parts)


@dataclasses.dataclass(frozen=True)
class DesignBrief:
    """What an agent sees of one design in the pool or history."""
    name: str
    source: str = ""
    parent: str | None = None
    motivation: str = ""
    summary: str = ""
    analysis: str = ""
    metrics: Metrics = Metrics()
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def edits(self) -> list[str]:
        return list(self.meta.get("edits") or ())

    def line(self) -> str:
        """One history line: name, lineage, what changed, outcome."""
        what = f" [{', '.join(self.edits)}]" if self.edits else ""
        parent = f" from {self.parent}" if self.parent else " (seed)"
        gist = (self.summary or self.motivation).strip().split("\n")[0][:220]
        return f"- {self.name}{parent}{what}: {self.metrics.text()}" + (f"\n  {gist}" if gist else "")


@dataclasses.dataclass(frozen=True)
class Feedback:
    """Why a proposal was sent back (gate, novelty or review), for the Researcher's rewrite."""
    stage: str                # 'gates' | 'novelty' | 'code_checker'
    reason: str
    rejected_name: str
    rejected_source: str
    attempt: int              # 1-based rewrite number
    max_attempts: int
    gate: str | None = None
    edits: tuple[str, ...] = ()

    def text(self) -> str:
        where = f"the {self.gate!r} gate" if self.gate else f"the {self.stage.replace('_', ' ')}"
        return (f"REWRITE REQUEST (attempt {self.attempt} of {self.max_attempts}). Your previous proposal "
                f"{self.rejected_name!r} was rejected by {where}:\n{self.reason.strip()}\n\nThe rejected program is "
                f"in design.py. Fix what the rejection names (keep the idea if it can be made valid, otherwise "
                f"choose another idea), write the complete corrected program to design.py, and reply with the JSON "
                f"object (a new name).")

    def to_evidence(self) -> dict[str, Any]:
        return {"stage": self.stage, "gate": self.gate, "reason": self.reason, "rejected": self.rejected_name,
                "attempt": self.attempt, "edits": list(self.edits)}


@dataclasses.dataclass(frozen=True)
class AgentProposal:
    """A Researcher's (or break-the-pattern rewriter's) proposal, ready to be gated and stored."""
    name: str
    motivation: str
    summary: str
    source: str
    cognition_used: tuple[str, ...] = ()
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)   # agent, edits, operator, changes, call
    reply: Reply | None = None

    @property
    def edits(self) -> list[str]:
        return list(self.meta.get("edits") or ())


def reply_meta(reply: Reply | None) -> dict[str, Any]:
    """What a design or analysis record keeps about the call that produced it."""
    if reply is None:
        return {}
    data = reply.data if isinstance(reply.data, Mapping) else {}
    return {"call_id": reply.record.call_id, "model": reply.model, "backend": reply.record.backend,
            "agent": "offline-heuristic" if data.get("agent") == "offline" else "llm",
            "cost_usd": round(reply.cost_usd, 6), "turns": reply.record.turns, "reasks": reply.record.reasks}
