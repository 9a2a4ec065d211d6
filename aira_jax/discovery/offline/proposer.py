"""The evolutionary proposer: mutation and crossover of design programs through typed transformations.

Given the parent program, reference programs and the evidence the loop gathered (history of edits and their
outcomes, the parent's analysis, retrieved cognition, gate feedback), it picks edits by an upper-confidence
score: the mean improvement (in noise-floor units, child vs parent) each transformation achieved so far, plus an
exploration bonus for rarely tried ones, plus a bonus when the parent's analysis or the retrieved research notes
point at it. It never proposes a genome the store already holds. Programs without a genome are edited at the
source level (`ast_edits`). Every proposal states its motivation in words derived from its edits.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

from aira_jax.discovery.agents.evidence import program_fingerprint
from aira_jax.discovery.offline import ast_edits
from aira_jax.discovery.offline.genome import MixerGenome, genome_of
from aira_jax.discovery.offline.render import render_program
from aira_jax.discovery.offline.transforms import BY_NAME, TRANSFORMS, Edit, crossover

# Research notes of the starter cognition base -> the transformations that implement their idea.
COGNITION_LINKS: dict[str, tuple[str, ...]] = {
    "gated-delta-rule": ("add_forget_gate",), "scalar-decay-ssd": ("add_forget_gate", "switch_memory_update"),
    "forget-gate-lower-bound": ("add_forget_gate", "lengthen_decay"),
    "short-causal-conv": ("toggle_short_conv", "resize_short_conv", "retarget_short_conv"),
    "linear-attention-feature-map": ("change_feature_map",),
    "output-gated-norm": ("change_output_gate", "toggle_output_norm"),
    "gated-attention-output": ("change_output_gate",),
    "swa-hybrid-layer": ("add_local_attention", "resize_local_window"),
    "grouped-query-local-attention": ("add_local_attention",),
    "multi-scale-decay": ("fixed_decay",), "multi-resolution-state": ("add_long_path",),
    "mixture-of-memories": ("add_long_path", "change_fusion"),
    "negative-eigenvalue-beta": ("negative_eigenvalues",), "beta-write-strength": ("negative_eigenvalues",),
    "decay-initialisation": ("lengthen_decay", "shorten_decay", "switch_decay_param"),
    "head-geometry": ("change_head_count",), "delta-rule-update": ("switch_memory_update",),
    "state-expansion": ("change_head_count",), "vector-decay": ("switch_decay_param",),
}
_NAME_OK = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclasses.dataclass(frozen=True)
class ProposerConfig:
    seed: int = 0
    exploration: float = 1.0        # weight of the 1/sqrt(1 + n) bonus for rarely tried transformations
    suggestion_bonus: float = 0.8   # the parent's analysis names the transformation
    cognition_bonus: float = 0.4    # a retrieved research note implements it
    failure_penalty: float = 1.0    # outcome counted for a rejected / failed child (in noise-floor units)
    compound_rate: float = 0.25     # chance of stacking a second edit of another category
    crossover_rate: float = 0.25    # chance of crossing with a reference whose genome differs
    noise: float = 0.15             # random jitter of the scores (ties and diversity)
    max_name_chars: int = 48


@dataclasses.dataclass(frozen=True)
class Proposal:
    name: str
    source: str
    motivation: str
    summary: str
    operator: str                   # 'mutation' | 'crossover' | 'source_edit'
    edits: tuple[Edit, ...]
    genome: MixerGenome | None

    @property
    def edit_names(self) -> list[str]:
        return [e.transform for e in self.edits]


class Seen:
    """The designs the search already holds, by genome key or by program fingerprint (rendered on demand)."""

    def __init__(self, keys=(), fingerprints=()):
        self.keys, self.fps = set(keys), set(fingerprints)

    def add(self, genome: MixerGenome) -> "Seen":
        self.keys.add(genome.key())
        return self

    def __contains__(self, genome: MixerGenome) -> bool:
        return genome.key() in self.keys or program_fingerprint(render_program(genome)) in self.fps


def transform_stats(history: Sequence[Mapping[str, Any]], failure_penalty: float) -> dict[str, list[float]]:
    """Transformation -> outcomes of the children it produced (z of the loss gain vs their parent)."""
    stats: dict[str, list[float]] = collections.defaultdict(list)
    for h in history:
        z = h.get("z_vs_parent")
        if h.get("status") in ("rejected", "failed"):
            z = -failure_penalty
        if z is None or not isinstance(z, (int, float)) or not math.isfinite(z):
            continue
        for name in h.get("edits") or ():
            stats[name].append(float(max(-3.0, min(3.0, z))))
    return stats


def _seen(ev: Mapping[str, Any]) -> Seen:
    return Seen(ev.get("known_genomes") or (), ev.get("known_fingerprints") or ())


class EvolutionaryProposer:
    def __init__(self, config: ProposerConfig = ProposerConfig()):
        self.cfg = config

    # ------------------------------------------------------------------------------------------ public
    def propose(self, parent_name: str, parent_source: str, *, references: Sequence[tuple[str, str]] = (),
                evidence: Mapping[str, Any] | None = None, attempt: int = 0) -> Proposal | None:
        """A new design derived from the parent, or None when no edit reaches an unseen design."""
        ev = dict(evidence or {})
        rng = np.random.default_rng([self.cfg.seed, int(ev.get("draw", 0)), attempt])
        avoid = set(ev.get("avoid") or ())
        genome = genome_of(parent_source)
        if genome is None:
            return self._source_edit(parent_name, parent_source, ev, rng, avoid)
        seen = _seen(ev).add(genome)
        scores = self._scores(ev, rng, avoid)
        operator = ev.get("operator")   # Genesys operators asked by the loop (None: the proposer's own rates)
        if operator == "crossover" or (operator != "mutate_unit" and rng.random() < self.cfg.crossover_rate):
            child = self._crossover(parent_name, genome, references, ev, rng, seen)
            if child is not None:
                return child
        first = self._best_edit(genome, scores, rng, seen)
        if first is None:
            return None
        new, edits = first[0], [first[1]]
        if operator != "mutate_unit" and rng.random() < self.cfg.compound_rate:   # one unit: no second edit
            second = self._best_edit(new, scores, rng, seen.add(new), skip_categories={edits[0].category})
            if second is not None:
                new, edits = second[0], edits + [second[1]]
        return self._make(parent_name, genome, new, edits, "mutation", ev)

    def break_pattern(self, name: str, source: str, *, pattern_edits: Sequence[str] = (),
                      evidence: Mapping[str, Any] | None = None) -> Proposal | None:
        """A bigger jump: two edits from categories the repeated pattern did not touch."""
        ev = dict(evidence or {})
        rng = np.random.default_rng([self.cfg.seed, int(ev.get("draw", 0)), 991])
        genome = genome_of(source)
        if genome is None:
            return self._source_edit(name, source, ev, rng, set(pattern_edits))
        used = {BY_NAME[e].category for e in pattern_edits if e in BY_NAME}
        seen = _seen(ev).add(genome)
        scores = self._scores(ev, rng, set(pattern_edits))
        edits, new = [], genome
        for _ in range(2):
            step = self._best_edit(new, scores, rng, seen.add(new), skip_categories=used)
            if step is None:
                break
            new, edit = step
            edits.append(edit)
            used.add(edit.category)
        if not edits:
            return None
        return self._make(name, genome, new, edits, "mutation", ev, broke=list(pattern_edits))

    # ------------------------------------------------------------------------------------------ choosing
    def _scores(self, ev: Mapping[str, Any], rng: np.random.Generator, avoid: set[str]) -> dict[str, float]:
        stats = transform_stats(ev.get("history") or (), self.cfg.failure_penalty)
        # The analysis lists its most important shortcoming first: earlier suggestions weigh more.
        suggested = {}
        for i, idea in enumerate(ev.get("suggestions") or ()):
            name = str(idea)[4:] if str(idea).startswith("try ") else str(idea)
            suggested.setdefault(name, 1.0 / (1.0 + 0.5 * i))
        linked = {t for cid in ev.get("cognition_ids") or () for t in COGNITION_LINKS.get(cid, ())}
        scores = {}
        for t in TRANSFORMS:
            outcomes = stats.get(t.name, [])
            mean = float(np.mean(outcomes)) if outcomes else 0.0
            s = mean + self.cfg.exploration / math.sqrt(1 + len(outcomes))
            s += self.cfg.suggestion_bonus * suggested.get(t.name, 0.0) + self.cfg.cognition_bonus * (t.name in linked)
            s += self.cfg.noise * float(rng.standard_normal())
            scores[t.name] = s - (10.0 if t.name in avoid else 0.0)
        return scores

    def _best_edit(self, genome: MixerGenome, scores: Mapping[str, float], rng: np.random.Generator,
                   seen: Seen, skip_categories: set[str] = frozenset()) -> tuple[MixerGenome, Edit] | None:
        for name in sorted(scores, key=lambda n: -scores[n]):
            t = BY_NAME[name]
            if t.category in skip_categories:
                continue
            for _ in range(3):   # a randomised edit may land on a known design; retry its other values
                out = t.apply(genome, rng)
                if out is not None and out[0] not in seen:
                    return out
        return None

    def _crossover(self, parent_name, genome, references, ev, rng, seen: Seen) -> Proposal | None:
        fitness = {r.get("name"): r.get("fitness") for r in ev.get("references") or () if isinstance(r, Mapping)}
        mates = [(n, genome_of(src)) for n, src in references]
        mates = [(n, g) for n, g in mates if g is not None and g.key() != genome.key()]
        mates.sort(key=lambda m: -(fitness.get(m[0]) or 0.0))
        for mate_name, mate in mates:
            out = crossover(genome, mate, rng, a_name=parent_name, b_name=mate_name)
            if out is not None and out[0] not in seen:
                return self._make(parent_name, genome, out[0], [out[1]], "crossover", ev, mate=mate_name)
        return None

    def _source_edit(self, parent_name, source, ev, rng, avoid) -> Proposal | None:
        tried = {e for h in ev.get("history") or () if h.get("parent") == parent_name for e in h.get("edits") or ()}
        names = [n for n in ast_edits.applicable_ast_edits(source) if n not in avoid]
        names.sort(key=lambda n: (n in tried, float(rng.random())))
        for name in names:
            out = ast_edits.apply_ast_edit(name, source, rng)
            if out is None:
                continue
            text, edit = out
            motivation = self._motivation(parent_name, [edit], ev, extra="The parent is a program outside the "
                                          "offline genome family, so the edit is made at the source level.")
            return Proposal(self._name(parent_name, [edit]), text, motivation,
                            f"{parent_name} with {edit.rationale[0].lower()}{edit.rationale[1:80]}", "source_edit",
                            (edit,), None)
        return None

    # ------------------------------------------------------------------------------------------ wording
    def _make(self, parent_name: str, old: MixerGenome, new: MixerGenome, edits: list[Edit], operator: str,
              ev: Mapping[str, Any], *, mate: str | None = None, broke: Sequence[str] = ()) -> Proposal:
        name = self._name(parent_name, edits)
        extra = ""
        if broke:
            extra = (f"This deliberately leaves the repeated pattern ({', '.join(broke)}) and changes "
                     f"{', '.join(sorted({e.category for e in edits}))} instead.")
        motivation = self._motivation(parent_name, edits, ev, extra=extra)
        title = f"{name} (from {parent_name}" + (f" x {mate})" if mate else ")")
        notes = " ".join(e.rationale for e in edits)
        source = render_program(new, title=title, notes=notes)
        changed = "; ".join(f"{k}: {a} -> {b}" for e in edits for k, (a, b) in e.changes.items())
        summary = f"{parent_name} with {changed}: {new.describe()}"
        return Proposal(name, source, motivation, summary[:600], operator, tuple(edits), new)

    def _motivation(self, parent_name: str, edits: Sequence[Edit], ev: Mapping[str, Any], extra: str = "") -> str:
        parts = []
        parent = ev.get("parent") or {}
        if parent.get("val_loss") is not None:
            z = parent.get("z_vs_seed")
            where = f" ({z:+.1f} noise floors vs the seed)" if isinstance(z, (int, float)) else ""
            parts.append(f"Parent {parent_name} reached validation loss {parent['val_loss']:.4f}{where}.")
        weak = ev.get("parent_weaknesses") or []
        if weak:
            parts.append(f"Its analysis names as weakness: {weak[0].rstrip('.')}.")
        parts += [e.rationale for e in edits]
        stats = transform_stats(ev.get("history") or (), self.cfg.failure_penalty)
        for e in edits:
            seen = stats.get(e.transform)
            if seen:
                parts.append(f"Elsewhere in this search {e.transform} changed the loss by {np.mean(seen):+.1f} noise "
                             f"floors on average over {len(seen)} trial(s).")
            else:
                parts.append(f"{e.transform} has not been tried in this search yet.")
        if extra:
            parts.append(extra)
        parts.append("(Proposed by the offline evolutionary proposer from typed transformations, not by an LLM.)")
        return " ".join(parts)

    def _name(self, parent_name: str, edits: Sequence[Edit]) -> str:
        parts = parent_name.split(".") + ["+".join(e.tag for e in edits).replace("+", "_")]
        name = ".".join(parts)
        while len(name) > self.cfg.max_name_chars and len(parts) > 2:
            parts.pop(1)
            name = ".".join(parts)
        name = _NAME_OK.sub("-", name)[: self.cfg.max_name_chars].strip(".-_") or "design"
        return name if name[0].isalnum() else "d" + name
