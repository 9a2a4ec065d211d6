"""Heuristic (rule-based) Analyst, Judge, Summarizer and Novelty checker for the offline backend.

They read only the evidence block of a request (aira_jax.discovery.agents.evidence) and reply with the JSON each
role's schema asks for. Every reply says it is heuristic, so records and reports never pass it off as an LLM's
reading. The analysis is an ablation-style reading: the child differs from its parent by the listed edits, so the
change in loss (in units of the seed's seed-to-seed noise) is attributed to them, then placed among the siblings
and against the baseline.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from aira_jax.discovery.offline.genome import KNOWN_BASELINES, MixerGenome, genome_of

LABEL = "[heuristic offline agent]"


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _z(delta: float | None, std: float | None) -> float | None:
    if delta is None or not std:
        return None
    return delta / std


def verdict_words(z: float | None, delta: float | None) -> str:
    if delta is None:
        return "not measurable"
    if z is None:
        return "better" if delta > 0 else "worse"
    if z >= 2:
        return "clearly better (beyond twice the noise floor)"
    if z >= 1:
        return "better, beyond the noise floor"
    if z > -1:
        return "within the seed-to-seed noise (inconclusive)"
    if z > -2:
        return "worse, beyond the noise floor"
    return "clearly worse"


def genome_weaknesses(g: MixerGenome | None) -> list[str]:
    """Mechanistic weaknesses a design of this genome is expected to have (the cognition query)."""
    if g is None:
        return ["the mechanism is outside the known family; its memory and forgetting behaviour are unknown"]
    out = []
    if g.decay == "none":
        out.append("the memory has no forgetting mechanism, so stale associations from earlier documents and topics "
                   "accumulate and interfere with recall; a data-dependent decay or gate is missing")
    if g.local_path == "none":
        out.append("local context and exact recent tokens are carried only by the short convolution and the "
                   "recurrent state, which blurs precise local patterns; no sliding-window attention hybrid")
    if g.conv_size == 0:
        out.append("no short causal convolution: keys and values lack the local token-shift context")
    if g.long_path == "none" and g.decay != "none":
        out.append("a single decay time scale per head may forget distant facts; no multi-scale or long memory")
    if g.update == "additive":
        out.append("additive linear-attention writes blur keys together as the state saturates; recall suffers")
    if g.out_norm == "none":
        out.append("the read-out is unnormalised, so its scale drifts with memory contents")
    if g.update == "delta" and g.beta == "sigmoid":
        out.append("write strength beta is limited to (0, 1), so transitions have no negative eigenvalues for state "
                   "tracking")
    return out or ["no obvious structural weakness; gains must come from finer decay or fusion choices"]


_SUGGEST = (  # weakness keyword -> transformations that address it
    ("no forgetting", ("add_forget_gate", "fixed_decay")),
    ("sliding-window", ("add_local_attention", "add_local_conv")),
    ("short causal convolution", ("toggle_short_conv",)),
    ("single decay time scale", ("add_long_path", "lengthen_decay")),
    ("additive linear-attention", ("switch_memory_update",)),
    ("unnormalised", ("toggle_output_norm",)),
    ("negative eigenvalues", ("negative_eigenvalues",)),
)


def suggestions_for(weaknesses: list[str]) -> list[str]:
    out: list[str] = []
    for w in weaknesses:
        for key, names in _SUGGEST:
            if key in w:
                out += [n for n in names if n not in out]
    return out


def analyse(ev: Mapping[str, Any]) -> dict[str, Any]:
    design, result = ev.get("design") or {}, ev.get("result") or {}
    parent, base = ev.get("parent") or {}, ev.get("baseline") or {}
    siblings = [s for s in ev.get("siblings") or () if _num(s.get("val_loss")) is not None]
    name, loss = design.get("name", "?"), _num(result.get("val_loss"))
    std = _num(base.get("loss_std"))
    edits = design.get("edits") or []
    genome = genome_of(ev.get("program") or "")
    compared, paras, strengths, weaknesses, insights, ideas = [], [], [], [], [], []
    if loss is None:
        text = (f"{LABEL} {name} produced no finite validation loss, so nothing can be attributed to its "
                f"edits ({', '.join(edits) or 'unknown'}); it is treated as a failed direction.")
        return {"analysis": text, "compared_with": [], "strengths": [], "weaknesses": ["no finite validation loss"],
                "insights": [f"{', '.join(edits) or 'this change'} did not train stably"],
                "next_ideas": [f"revert {e}" for e in edits]}
    p_loss = _num(parent.get("val_loss"))
    if p_loss is not None:
        d = p_loss - loss
        z = _z(d, std)
        compared.append(parent.get("name"))
        what = f"the edit(s) {', '.join(edits)}" if edits else "its changes"
        paras.append(f"{name} reaches validation loss {loss:.4f} against {p_loss:.4f} for its parent "
                     f"{parent.get('name')} (delta {d:+.4f}" + (f", {z:+.2f} noise floors" if z is not None else "")
                     + f"): {verdict_words(z, d)}. As the child differs from the parent only by {what}, the "
                     "change is attributed to them (an ablation reading).")
        if z is not None and z >= 1:
            strengths.append(f"{what} lowered the loss by {d:.4f} ({z:+.1f} noise floors) vs the parent")
            insights.append(f"{', '.join(edits) or 'the change'} helps on top of {parent.get('name')}")
        elif z is not None and z <= -1:
            weaknesses.append(f"{what} raised the loss by {-d:.4f} ({z:+.1f} noise floors) vs the parent")
            insights.append(f"{', '.join(edits) or 'the change'} hurts on top of {parent.get('name')}")
            ideas += [f"revert {e}" for e in edits]
    b_loss = _num(base.get("loss_mean"))
    if b_loss is not None:
        d = b_loss - loss
        z = _z(d, std)
        compared.append(base.get("name"))
        paras.append(f"Against the seed {base.get('name')} ({b_loss:.4f}, mean of {base.get('num_seeds')} seeds, "
                     f"noise floor {std:.4f})" if std else f"Against the seed {base.get('name')} ({b_loss:.4f})")
        paras[-1] += f" the design is {verdict_words(z, d)} (delta {d:+.4f}" + (
            f", {z:+.2f} noise floors)." if z is not None else ").")
        if z is not None and z >= 1:
            strengths.append(f"beats the seed by {z:.1f} noise floors")
    if siblings:
        ranked = sorted(siblings + [{"name": name, "val_loss": loss}], key=lambda s: s["val_loss"])
        pos = [s["name"] for s in ranked].index(name) + 1
        best = ranked[0]
        compared += [s["name"] for s in siblings[:4]]
        paras.append(f"Among the {len(ranked)} children of {parent.get('name')} it ranks {pos}; the best is "
                     f"{best['name']} ({best['val_loss']:.4f}" + (
                         f", edits {', '.join(best.get('edits') or [])})" if best.get("edits") else ")") + ".")
        if best["name"] != name and best.get("edits"):
            ideas += [f"try {e}" for e in best["edits"] if e not in edits]
    thr, p_thr = _num(result.get("throughput")), _num(parent.get("throughput"))
    params, p_params = _num(result.get("params")), _num(parent.get("params"))
    if thr and p_thr:
        ratio = thr / p_thr
        paras.append(f"Throughput is {ratio:.2f}x the parent's" + (
            f" with {params / p_params:.2f}x its parameters." if params and p_params else "."))
        if ratio < 0.7:
            weaknesses.append(f"training throughput fell to {ratio:.2f}x the parent's")
    structural = genome_weaknesses(genome)
    weaknesses += structural
    ideas += suggestions_for(structural)
    text = f"{LABEL} " + " ".join(paras)
    return {"analysis": text, "compared_with": [c for c in dict.fromkeys(compared) if c],
            "strengths": strengths, "weaknesses": weaknesses, "insights": insights,
            "next_ideas": list(dict.fromkeys(ideas))[:8]}


def judge(ev: Mapping[str, Any]) -> dict[str, Any]:
    """Sub-scores on the 1-10 scale anchored DeltaNet = 5, Gated DeltaNet = 10 (total computed in code)."""
    result, base, anchors = ev.get("result") or {}, ev.get("baseline") or {}, ev.get("anchors") or {}
    loss, std = _num(result.get("val_loss")), _num(base.get("loss_std")) or 0.0
    l5 = _num(anchors.get("deltanet")) or _num(base.get("loss_mean"))
    l10 = _num(anchors.get("gated_deltanet"))
    why = []
    if loss is None or l5 is None:
        perf = 1.0
        why.append("performance 1: no finite loss")
    else:
        # Without a trained Gated DeltaNet anchor, 10 stands for a gain of 8% of the loss (what a forget gate is
        # worth at small scale), or 3 noise floors if the noise is larger.
        span = (l5 - l10) if l10 is not None and l5 - l10 > 0 else max(3.0 * std, 0.08 * l5)
        perf = 5.0 + 5.0 * (l5 - loss) / span
        if abs(l5 - loss) < std:
            perf = 5.0
        perf = min(10.0, max(1.0, perf))
        why.append(f"performance {perf:.1f}: loss {loss:.4f} vs DeltaNet anchor {l5:.4f}"
                   + (f" and Gated DeltaNet {l10:.4f}" if l10 is not None else f" (10 = {span:.4f} lower)"))
    genome = genome_of(ev.get("program") or "")
    if genome is None:
        nov = 5.0
        why.append("novelty 5: a program outside the genome family, not compared structurally")
    else:
        # Diminishing returns: stacking standard components is not a new mechanism.
        dist = min(genome.distance(g) for g in KNOWN_BASELINES.values())
        nov = min(10.0, 3.0 + 2.0 * math.sqrt(dist)) if dist else 3.0
        why.append(f"novelty {nov:.1f}: {dist} design decision(s) away from the nearest baseline")
    thr, b_thr = _num(result.get("throughput")), _num(base.get("throughput"))
    params, b_params = _num(result.get("params")), _num(base.get("params"))
    eff = 5.0
    if thr and b_thr:
        eff += 5.0 * (thr / b_thr - 1.0)
    if params and b_params and params > 1.1 * b_params:
        eff -= 10.0 * (params / b_params - 1.1)
    eff = min(10.0, max(1.0, eff))
    why.append(f"efficiency {eff:.1f}: throughput and parameters relative to the seed")
    sound = 7.0
    if genome is not None:
        sound -= 2.0 * (genome.out_norm == "none") + 1.5 * (genome.update == "additive" and genome.decay == "none")
        sound -= 1.0 * genome.qk_shared + 0.5 * (genome.num_paths > 2)
    if loss is None:
        sound = 1.0
    sound = min(10.0, max(1.0, sound))
    why.append(f"soundness {sound:.1f}: stability of normalisation and state updates")
    return {"sub_scores": {"performance": round(perf, 2), "novelty": round(nov, 2), "efficiency": round(eff, 2),
                           "soundness": round(sound, 2)},
            "rationale": f"{LABEL} " + "; ".join(why) + "."}


def summarize(ev: Mapping[str, Any]) -> dict[str, Any]:
    design, result, parent = ev.get("design") or {}, ev.get("result") or {}, ev.get("parent") or {}
    genome = genome_of(ev.get("program") or "")
    mechanism = genome.describe() if genome else (design.get("summary") or design.get("motivation") or "")[:300]
    edits = design.get("edits") or []
    loss, p_loss = _num(result.get("val_loss")), _num(parent.get("val_loss"))
    outcome = "no finite validation loss" if loss is None else f"val loss {loss:.4f}" + (
        f" vs parent {p_loss:.4f}" if p_loss is not None else "")
    change = f"changed from {parent.get('name')}: {', '.join(edits)}" if edits and parent.get("name") else \
        "a seed design" if not parent.get("name") else f"derived from {parent.get('name')}"
    summary = f"{mechanism[:500]}. {change}. Outcome: {outcome}. {LABEL}"
    key = ", ".join(edits)[:180] or mechanism[:180] or "design"
    tags = sorted({e.split("_")[-1] for e in edits} | ({"delta-rule"} if genome and genome.update == "delta" else set()))
    return {"summary": summary[:1200], "key_idea": key if len(key) >= 5 else f"{key} design", "tags": tags[:8]}


def novelty(ev: Mapping[str, Any]) -> dict[str, Any]:
    """Not novel when an existing design has the same genome (or the same program text)."""
    program = ev.get("program") or ""
    genome = genome_of(program)
    similar = ev.get("similar") or []
    best, best_sim = "", 0.0
    for s in similar:
        other = s.get("genome_key")
        sim = _num(s.get("text_similarity")) or 0.0
        if s.get("program_hash") and s.get("program_hash") == ev.get("program_hash"):
            return {"is_novel": False, "most_similar": s.get("name", ""), "similarity": 1.0,
                    "reason": f"{LABEL} the program is identical to {s.get('name')}'s."}
        if genome is not None and other and other == genome.key():
            return {"is_novel": False, "most_similar": s.get("name", ""), "similarity": 1.0,
                    "reason": f"{LABEL} it computes the same mechanism as {s.get('name')} (identical genome); "
                              "change a design decision the pool has not explored."}
        if sim > best_sim:
            best, best_sim = s.get("name", ""), sim
    return {"is_novel": True, "most_similar": best, "similarity": round(min(1.0, best_sim), 3),
            "reason": f"{LABEL} no existing design computes the same mechanism; the closest motivation is "
                      f"{best or 'none'} (text similarity {best_sim:.2f})."}
