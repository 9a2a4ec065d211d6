"""The library of typed code transformations the offline proposer evolves designs with.

A transformation is a named, typed edit of a MixerGenome (`Transformation.apply(genome, rng) -> Edit | None`):
it says which genes it changes, when it applies, and why, in words that become the proposal's motivation. The
renderer turns the edited genome into a real program, so every edit is a code change a reviewer can read.
`crossover` combines two parents' genomes gene group by gene group.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from aira_jax.discovery.offline.genome import CHOICES, GROUPS, MixerGenome

CATEGORIES = ("gating", "decay", "conv", "feature_map", "normalisation", "output_gate", "paths", "fusion", "heads",
              "memory", "input")


@dataclasses.dataclass(frozen=True)
class Edit:
    """One applied transformation: what changed, and why."""
    transform: str
    category: str
    changes: dict[str, tuple[Any, Any]]   # gene -> (old, new)
    rationale: str
    tag: str                              # short label for names ('gate', 'swa16', ...)

    def to_dict(self) -> dict[str, Any]:
        return {"transform": self.transform, "category": self.category, "tag": self.tag, "rationale": self.rationale,
                "changes": {k: list(v) for k, v in self.changes.items()}}


Step = Callable[[MixerGenome, np.random.Generator], "tuple[dict[str, Any], str, str] | None"]


@dataclasses.dataclass(frozen=True)
class Transformation:
    name: str
    category: str
    doc: str
    step: Step   # genome, rng -> (gene changes, rationale, tag), or None when it does not apply

    def apply(self, genome: MixerGenome, rng: np.random.Generator) -> tuple[MixerGenome, Edit] | None:
        out = self.step(genome, rng)
        if out is None:
            return None
        changes, rationale, tag = out
        new = genome.replace(**changes)
        if new.key() == genome.key():
            return None
        diff = {k: (getattr(genome, k), v) for k, v in changes.items() if getattr(genome, k) != v}
        return new, Edit(self.name, self.category, diff, rationale, tag)


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _other(rng: np.random.Generator, field: str, current: Any, allowed: Sequence[Any] | None = None) -> Any:
    options = [v for v in (allowed or CHOICES[field]) if v != current]
    return _pick(rng, options) if options else None


# ------------------------------------------------------------------------------------------------- the steps
def _add_forget_gate(g, rng):
    if g.decay == "data":
        return None
    span = _pick(rng, ("medium", "long")) if g.decay == "none" else g.decay_span
    return ({"decay": "data", "decay_param": "mamba", "decay_span": span},
            "Add a data-dependent forget gate (the Gated DeltaNet decay a_t = exp(-exp(A) softplus(W_a x + dt))) "
            "to the memory: without forgetting, the state can only overwrite associations one key at a time, so "
            "stale facts from earlier documents and topics keep interfering; a gate lets each token decide how "
            "much of the past to keep.", "gate" if span == "medium" else f"gate{span}")


def _remove_forget_gate(g, rng):
    if g.decay == "none":
        return None
    return ({"decay": "none"}, "Remove the decay and rely on the delta rule's own overwriting: if the decay "
            "forgets facts that are queried much later, a memory that only changes where it is written keeps them "
            "available for in-context recall.", "nogate")


def _fixed_decay(g, rng):
    if g.decay == "fixed":
        return None
    return ({"decay": "fixed", "decay_span": _pick(rng, ("medium", "long"))},
            "Replace the forgetting by a learned per-head constant decay whose horizons are spread over heads "
            "(a multi-timescale memory, as in RetNet): some heads track recent tokens, others keep long context, "
            "at no cost in input-dependent parameters.", "mscale")


def _switch_decay_param(g, rng):
    if g.decay != "data":
        return None
    new = "logsigmoid" if g.decay_param == "mamba" else "mamba"
    why = ("the GLA form logsigmoid(W x + b) / 16 bounds the per-token log decay and starts near one, so the memory "
           "keeps a long horizon unless the input asks to forget" if new == "logsigmoid" else
           "the Mamba2 form -exp(A) softplus(W x + dt) lets each head learn its own rate scale A, covering fast "
           "and slow heads at once")
    return {"decay_param": new}, f"Re-parametrise the decay: {why}.", "lsig" if new == "logsigmoid" else "mamba"


def _lengthen_decay(g, rng):
    spans = CHOICES["decay_span"]
    if g.decay == "none" or g.decay_span == spans[-1]:
        return None
    new = spans[spans.index(g.decay_span) + 1]
    return ({"decay_span": new}, f"Initialise the decay for a longer memory horizon ({g.decay_span} -> {new}): "
            "the queries of in-context facts come many tokens after their definitions, and a decay that starts "
            "fast may erase them before the model learns to hold them.", "longer")


def _shorten_decay(g, rng):
    spans = CHOICES["decay_span"]
    if g.decay == "none" or g.decay_span == spans[0]:
        return None
    new = spans[spans.index(g.decay_span) - 1]
    return ({"decay_span": new}, f"Initialise the decay for a shorter horizon ({g.decay_span} -> {new}), so the "
            "state is cleared quickly at document and topic boundaries and has capacity for the local context.",
            "shorter")


def _toggle_short_conv(g, rng):
    if g.conv_size:
        return ({"conv_size": 0}, "Remove the short convolution: the delta-rule memory and the output gate then "
                "see the raw projections, which tests whether the local token-shift is needed at all and frees "
                "its parameters.", "noconv")
    return ({"conv_size": 4, "conv_targets": "qkv"}, "Add a width-4 causal short convolution on q, k and v: it "
            "gives keys and values access to the few preceding tokens (n-gram context), which linear-attention "
            "memories cannot form on their own.", "conv4")


def _resize_short_conv(g, rng):
    if not g.conv_size:
        return None
    sizes = [s for s in CHOICES["conv_size"] if s]
    i = sizes.index(g.conv_size)
    options = [sizes[j] for j in (i - 1, i + 1) if 0 <= j < len(sizes)]
    new = _pick(rng, options)
    why = ("a wider window lets keys encode longer local patterns (whole words of a byte-level language)"
           if new > g.conv_size else "a narrower window keeps keys sharper and cheaper")
    return {"conv_size": new}, f"Change the short convolution width {g.conv_size} -> {new}: {why}.", f"conv{new}"


def _retarget_short_conv(g, rng):
    if not g.conv_size:
        return None
    new = _other(rng, "conv_targets", g.conv_targets)
    return ({"conv_targets": new}, f"Apply the short convolution to {new} only (was {g.conv_targets}), to find "
            "which inputs of the memory actually need local context.", f"conv{new}")


def _change_feature_map(g, rng):
    new = _other(rng, "feature_map", g.feature_map)
    why = {"silu": "SiLU keeps small negative responses and is smooth",
           "identity": "no feature map keeps the full sign information of q and k for the L2-normalised memory",
           "elu1": "elu + 1 gives positive features, so retrieval weights never cancel (as in linear transformers)",
           "relu": "ReLU gives sparse, positive features, which reduces interference between stored keys"}[new]
    return {"feature_map": new}, f"Change the q/k feature map {g.feature_map} -> {new}: {why}.", f"fm{new}"


def _toggle_output_norm(g, rng):
    new = "none" if g.out_norm == "rms" else "rms"
    why = ("normalising each head's read-out stabilises its scale across positions and memory contents"
           if new == "rms" else "dropping the norm keeps the magnitude of the read-out, which carries how "
           "confident the memory is")
    return {"out_norm": new}, f"{'Add' if new == 'rms' else 'Remove'} the per-head output RMSNorm: {why}.", \
        "onorm" if new == "rms" else "nonorm"


def _change_output_gate(g, rng):
    new = _other(rng, "out_gate", g.out_gate)
    why = {"silu": "a SiLU gate from the input (as in the gated RMSNorm of DeltaNet) lets each token modulate "
                   "what it reads", "sigmoid": "a sigmoid gate bounds the modulation to (0, 1), a softer, more "
                   "stable selection of the read-out", "none": "without a gate the read-out goes straight to the "
                   "output projection, which tests whether the gate earns its parameters"}[new]
    return {"out_gate": new}, f"Change the output gate {g.out_gate} -> {new}: {why}.", f"og{new}"


def _add_local_attention(g, rng):
    if g.local_path == "swa":
        return None
    window = int(_pick(rng, (16, 32)))
    return ({"local_path": "swa", "local_window": window, "fusion": g.fusion if g.num_paths > 1 else "gate"},
            f"Add a sliding-window softmax attention branch (window {window}) fused with the memory: a fixed-size "
            "recurrent state blurs the exact recent tokens that local syntax depends on, while exact attention over "
            "a short window recovers them at linear cost (a local/global hybrid).", f"swa{window}")


def _add_local_conv(g, rng):
    if g.local_path == "conv":
        return None
    window = int(_pick(rng, (8, 16)))
    return ({"local_path": "conv", "local_window": window, "fusion": g.fusion if g.num_paths > 1 else "gate"},
            f"Add a local convolution branch over the values ({window} taps) fused with the memory, so that short "
            "range patterns are carried by a cheap, exact path and the memory is left for long-range facts.",
            f"lconv{window}")


def _remove_local_path(g, rng):
    if g.local_path == "none":
        return None
    return ({"local_path": "none"}, f"Remove the local {g.local_path} branch, to see whether the memory alone "
            "carries the local context once the rest of the design has changed.", "nolocal")


def _resize_local_window(g, rng):
    if g.local_path == "none":
        return None
    new = _other(rng, "local_window", g.local_window)
    return ({"local_window": new}, f"Change the local branch's window {g.local_window} -> {new}, trading exact "
            "context length against cost and specialisation.", f"win{new}")


def _add_long_path(g, rng):
    if g.long_path != "none":
        return None
    return ({"long_path": "slow_linear", "fusion": g.fusion if g.num_paths > 1 else "gate"},
            "Add a long-memory branch: a linear-attention state with slow learned decay (horizons of hundreds to "
            "thousands of tokens) that shares q, k and v, fused with the main memory, so that document-level "
            "context (topic, entities) survives the main memory's overwrites.", "long")


def _remove_long_path(g, rng):
    if g.long_path == "none":
        return None
    return {"long_path": "none"}, "Remove the slow long-memory branch and give its share back to the main memory.", \
        "nolong"


def _change_fusion(g, rng):
    if g.num_paths < 2:
        return None
    new = _other(rng, "fusion", g.fusion)
    why = {"sum": "a plain sum lets every branch contribute fully", "static": "learned per-head weights let heads "
           "specialise in one branch", "gate": "a data-dependent router lets each token choose between exact local "
           "context and memory"}[new]
    return {"fusion": new}, f"Change how the branches are fused, {g.fusion} -> {new}: {why}.", f"fuse{new}"


def _change_head_count(g, rng):
    new = _other(rng, "heads", g.heads)
    why = {"half": "fewer, wider heads give each memory a larger key space (capacity grows with head_dim^2)",
           "same": "the model's own head count", "double": "more, narrower heads give more independent memories "
           "and write strengths per token"}[new]
    return {"heads": new}, f"Change the number of heads ({g.heads} -> {new}): {why}.", f"h{new}"


def _negative_eigenvalues(g, rng):
    if g.update != "delta":
        return None
    new = "sigmoid2" if g.beta == "sigmoid" else "sigmoid"
    why = ("allowing beta in (0, 2) gives the transition I - beta k k^T negative eigenvalues, which lets the "
           "memory flip and track state (Grazzi et al. 2024)" if new == "sigmoid2" else
           "restricting beta to (0, 1) keeps every update a contraction")
    return {"beta": new}, f"Change the write strength range: {why}.", "negeig" if new == "sigmoid2" else "beta1"


def _switch_memory_update(g, rng):
    new = "additive" if g.update == "delta" else "delta"
    changes: dict[str, Any] = {"update": new}
    if new == "additive" and g.decay == "none":
        changes.update(decay="data", decay_param="mamba", decay_span="medium")  # an additive memory must forget
    why = ("an additive write with decay (Mamba2/SSD-like) is cheaper and smoother to train than the delta rule"
           if new == "additive" else "the delta rule erases what a key retrieves before writing, keeping "
           "associations separable up to the key dimension (better in-context recall)")
    return changes, f"Switch the memory update to {new}: {why}.", new


def _share_qk(g, rng):
    new = not g.qk_shared
    why = ("one projection for queries and keys frees a d_model x d_model matrix; retrieval by the same features "
           "that were written is a natural inductive bias for recall" if new else
           "separate query and key projections let reading and writing use different features")
    return {"qk_shared": new}, f"{'Share' if new else 'Un-share'} the q/k projection: {why}.", \
        "qkshare" if new else "qksplit"


TRANSFORMS: tuple[Transformation, ...] = (
    Transformation("add_forget_gate", "gating", "add a data-dependent decay (Gated DeltaNet)", _add_forget_gate),
    Transformation("remove_forget_gate", "gating", "drop the decay", _remove_forget_gate),
    Transformation("fixed_decay", "decay", "learned per-head constant decay (multi-timescale)", _fixed_decay),
    Transformation("switch_decay_param", "decay", "Mamba2 <-> GLA decay parametrisation", _switch_decay_param),
    Transformation("lengthen_decay", "decay", "longer initial decay horizon", _lengthen_decay),
    Transformation("shorten_decay", "decay", "shorter initial decay horizon", _shorten_decay),
    Transformation("toggle_short_conv", "conv", "short convolution on/off", _toggle_short_conv),
    Transformation("resize_short_conv", "conv", "short convolution width", _resize_short_conv),
    Transformation("retarget_short_conv", "conv", "which of q/k/v are convolved", _retarget_short_conv),
    Transformation("change_feature_map", "feature_map", "q/k feature map", _change_feature_map),
    Transformation("toggle_output_norm", "normalisation", "per-head output RMSNorm on/off", _toggle_output_norm),
    Transformation("change_output_gate", "output_gate", "output gate kind", _change_output_gate),
    Transformation("add_local_attention", "paths", "sliding-window attention branch", _add_local_attention),
    Transformation("add_local_conv", "paths", "local convolution branch", _add_local_conv),
    Transformation("remove_local_path", "paths", "drop the local branch", _remove_local_path),
    Transformation("resize_local_window", "paths", "local branch window", _resize_local_window),
    Transformation("add_long_path", "paths", "slow-decay long-memory branch", _add_long_path),
    Transformation("remove_long_path", "paths", "drop the long branch", _remove_long_path),
    Transformation("change_fusion", "fusion", "how branches are combined", _change_fusion),
    Transformation("change_head_count", "heads", "head count", _change_head_count),
    Transformation("negative_eigenvalues", "memory", "beta range (0,1) <-> (0,2)", _negative_eigenvalues),
    Transformation("switch_memory_update", "memory", "delta rule <-> additive memory", _switch_memory_update),
    Transformation("share_qk_projection", "input", "shared q/k projection", _share_qk),
)
BY_NAME: dict[str, Transformation] = {t.name: t for t in TRANSFORMS}
assert all(t.category in CATEGORIES for t in TRANSFORMS)


def crossover(a: MixerGenome, b: MixerGenome, rng: np.random.Generator, *, a_name: str = "A",
              b_name: str = "B") -> tuple[MixerGenome, Edit] | None:
    """A child taking each gene group from one parent; at least one group from each. None if they agree."""
    differing = [grp for grp, genes in GROUPS.items() if any(getattr(a, f) != getattr(b, f) for f in genes)]
    if not differing:
        return None
    if len(differing) == 1:
        take_b = set(differing)
    else:
        k = int(rng.integers(1, len(differing)))   # 1 .. len-1 groups from b, the rest from a
        take_b = {differing[int(i)] for i in rng.permutation(len(differing))[:k]}
    changes = {f: getattr(b, f) for grp in take_b for f in GROUPS[grp]}
    child = a.replace(**changes)
    if child.key() in (a.key(), b.key()):
        return None
    kept = sorted(set(differing) - take_b)
    rationale = (f"Cross {a_name} with {b_name}: keep {a_name}'s {', '.join(kept) or 'remaining'} design and take "
                 f"the {', '.join(sorted(take_b))} design of {b_name} ({b.describe()}), combining mechanisms that "
                 "each scored well on their own.")
    diff = {k: (getattr(a, k), v) for k, v in changes.items() if getattr(a, k) != v}
    return child, Edit("crossover", "crossover", diff, rationale, "x")
