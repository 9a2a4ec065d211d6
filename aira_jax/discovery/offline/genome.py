"""A typed genome of the delta-rule family of sequence mixers, the search space of the offline proposer.

Every field is one design decision with a closed set of values; the renderer (`render.py`) turns a genome into a
readable design program in the contract form, and the genome travels inside that program as one JSON comment
line (`# aira-genome: {...}`), so a program the store holds can be read back into its genome exactly. The
defaults are DeltaNet as the baseline program implements it; `KNOWN_BASELINES` maps the shipped baseline
programs onto genomes, so a search seeded with `deltanet` or `gated_deltanet` starts inside the family.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Mapping

GENOME_MARK = "# aira-genome:"
_MARK_RE = re.compile(r"^# aira-genome: (\{.*\})\s*$", re.MULTILINE)


class GenomeError(ValueError):
    """A genome with an unknown field or a value outside its choices."""


# field -> allowed values. Order matters only for readability of diffs and docs.
CHOICES: dict[str, tuple[Any, ...]] = {
    "update": ("delta", "additive"),                    # delta rule, or additive (linear attention) writes
    "decay": ("none", "data", "fixed"),                 # forgetting: none, data-dependent, learned constant
    "decay_param": ("mamba", "logsigmoid"),             # -exp(A) softplus(Wx + dt) | logsigmoid(Wx + b) / tau
    "decay_span": ("short", "medium", "long"),          # initial memory horizon of the decay
    "beta": ("sigmoid", "sigmoid2"),                    # write strength in (0, 1) | (0, 2) (negative eigenvalues)
    "conv_size": (0, 2, 3, 4, 6, 8),                    # causal short convolution width on q/k/v (0 = off)
    "conv_targets": ("qkv", "qk", "v"),                 # which projections get the short convolution
    "feature_map": ("silu", "identity", "elu1", "relu"),  # applied to q and k before the L2 norm
    "out_norm": ("rms", "none"),
    "out_gate": ("silu", "sigmoid", "none"),            # output gate from x (silu inside a gated RMSNorm)
    "local_path": ("none", "swa", "conv"),              # an extra local branch: sliding-window attention or conv
    "local_window": (8, 16, 32, 64),                    # its receptive field (keys, or conv taps)
    "long_path": ("none", "slow_linear"),               # an extra long-memory branch: slowly decaying linear attn
    "fusion": ("sum", "static", "gate"),                # how branches combine: sum, learned per-head, data-gated
    "heads": ("half", "same", "double"),                # head count relative to the model's num_heads
    "qk_shared": (False, True),                         # one projection for q and k (frees parameters)
}
DEFAULTS: dict[str, Any] = {
    "update": "delta", "decay": "none", "decay_param": "mamba", "decay_span": "medium", "beta": "sigmoid",
    "conv_size": 4, "conv_targets": "qkv", "feature_map": "silu", "out_norm": "rms", "out_gate": "silu",
    "local_path": "none", "local_window": 16, "long_path": "none", "fusion": "sum", "heads": "same",
    "qk_shared": False,
}
# Genes that matter together (crossover exchanges whole groups, so a decay law travels with its parametrisation).
GROUPS: dict[str, tuple[str, ...]] = {
    "memory": ("update", "decay", "decay_param", "decay_span", "beta"),
    "input": ("conv_size", "conv_targets", "feature_map", "qk_shared"),
    "output": ("out_norm", "out_gate"),
    "paths": ("local_path", "local_window", "long_path", "fusion"),
    "heads": ("heads",),
}
assert sorted(g for gs in GROUPS.values() for g in gs) == sorted(CHOICES) == sorted(DEFAULTS)


@dataclasses.dataclass(frozen=True)
class MixerGenome:
    update: str = DEFAULTS["update"]
    decay: str = DEFAULTS["decay"]
    decay_param: str = DEFAULTS["decay_param"]
    decay_span: str = DEFAULTS["decay_span"]
    beta: str = DEFAULTS["beta"]
    conv_size: int = DEFAULTS["conv_size"]
    conv_targets: str = DEFAULTS["conv_targets"]
    feature_map: str = DEFAULTS["feature_map"]
    out_norm: str = DEFAULTS["out_norm"]
    out_gate: str = DEFAULTS["out_gate"]
    local_path: str = DEFAULTS["local_path"]
    local_window: int = DEFAULTS["local_window"]
    long_path: str = DEFAULTS["long_path"]
    fusion: str = DEFAULTS["fusion"]
    heads: str = DEFAULTS["heads"]
    qk_shared: bool = DEFAULTS["qk_shared"]

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed or type(value) is not type(allowed[0]):
                raise GenomeError(f"genome field {name!r} must be one of {list(allowed)}, got {value!r}")

    # -------------------------------------------------------------------------------------------- derived
    @property
    def num_paths(self) -> int:
        return 1 + (self.local_path != "none") + (self.long_path != "none")

    @property
    def has_decay(self) -> bool:
        return self.decay != "none"

    def key(self) -> str:
        """Canonical identity: genes that do not affect the computation are normalised away."""
        d = self.to_dict()
        if not self.has_decay:
            d["decay_param"] = d["decay_span"] = "-"
        elif self.decay == "fixed":
            d["decay_param"] = "-"
        if self.update == "additive":
            d["beta"] = "-"
        if self.conv_size == 0:
            d["conv_targets"] = "-"
        if self.local_path == "none":
            d["local_window"] = "-"
        if self.num_paths == 1:
            d["fusion"] = "-"
        return json.dumps(d, sort_keys=True)

    def diff(self, other: "MixerGenome") -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: name -> (self's value, other's value)."""
        return {f: (getattr(self, f), getattr(other, f)) for f in CHOICES if getattr(self, f) != getattr(other, f)}

    def distance(self, other: "MixerGenome") -> int:
        """Design decisions that differ; a gene without effect on either side (e.g. the decay's form when one has
        no decay) is not counted again."""
        a, b = json.loads(self.key()), json.loads(other.key())
        return sum(a[k] != b[k] for k in a if a[k] != "-" and b[k] != "-")

    def replace(self, **changes: Any) -> "MixerGenome":
        unknown = set(changes) - set(CHOICES)
        if unknown:
            raise GenomeError(f"unknown genome fields {sorted(unknown)}; known: {sorted(CHOICES)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MixerGenome":
        unknown = set(d) - set(CHOICES)
        if unknown:
            raise GenomeError(f"unknown genome fields {sorted(unknown)}; known: {sorted(CHOICES)}")
        return cls(**dict(d))

    def describe(self) -> str:
        """The design in one sentence of words (used in motivations, summaries and docstrings)."""
        memory = {"delta": "delta-rule", "additive": "additive linear-attention"}[self.update]
        decay = {"none": "without forgetting",
                 "data": f"with a data-dependent {self.decay_span} decay ({self.decay_param} form)",
                 "fixed": f"with a learned per-head constant {self.decay_span} decay"}[self.decay]
        conv = (f"width-{self.conv_size} short convolution on {self.conv_targets}" if self.conv_size
                else "no short convolution")
        parts = [f"{memory} memory {decay}", conv, f"{self.feature_map} feature map on q/k"]
        if self.update == "delta" and self.beta == "sigmoid2":
            parts.append("write strength in (0, 2) (negative eigenvalues)")
        if self.qk_shared:
            parts.append("a shared q/k projection")
        out = {"rms": "RMS-normalised", "none": "unnormalised"}[self.out_norm]
        gate = {"silu": "a SiLU output gate", "sigmoid": "a sigmoid output gate", "none": "no output gate"}[
            self.out_gate]
        parts.append(f"{out} output with {gate}")
        if self.local_path == "swa":
            parts.append(f"a sliding-window attention branch (window {self.local_window})")
        elif self.local_path == "conv":
            parts.append(f"a local convolution branch ({self.local_window} taps)")
        if self.long_path == "slow_linear":
            parts.append("a slowly decaying linear-attention branch for long memory")
        if self.num_paths > 1:
            parts.append({"sum": "branches summed", "static": "branches mixed by learned per-head weights",
                          "gate": "branches mixed by a data-dependent per-head router"}[self.fusion])
        if self.heads != "same":
            parts.append({"half": "half as many (wider) heads", "double": "twice as many (narrower) heads"}[
                self.heads])
        return "; ".join(parts)


def genome_of(source: str) -> MixerGenome | None:
    """The genome embedded in a rendered program, the genome of a known baseline, or None (a foreign program)."""
    m = _MARK_RE.search(source or "")
    if m:
        try:
            return MixerGenome.from_dict(json.loads(m.group(1)))
        except (ValueError, TypeError):
            return None
    return _baseline_genomes().get(_normalise(source or ""))


def _normalise(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


KNOWN_BASELINES: dict[str, MixerGenome] = {
    "deltanet": MixerGenome(),
    "gated_deltanet": MixerGenome(decay="data", decay_param="mamba", decay_span="medium"),
}


def _baseline_genomes() -> dict[str, MixerGenome]:
    """Shipped baseline program text -> genome (read lazily: the loader imports flax)."""
    global _BASELINE_CACHE
    if _BASELINE_CACHE is None:
        from aira_jax.models.loader import baseline_source  # pylint: disable=import-outside-toplevel
        _BASELINE_CACHE = {_normalise(baseline_source(n)): g for n, g in KNOWN_BASELINES.items()}
    return _BASELINE_CACHE


_BASELINE_CACHE: dict[str, MixerGenome] | None = None
