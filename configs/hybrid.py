"""A composition of named primitives instead of a design program: hybrids in one pattern string.

    python -m aira_jax.train --config=configs/hybrid.py:jamba --workdir=DIR
Variants: 'jamba' (Mamba2 with one attention layer in four, each followed by an MLP), 'nemotron_h'
(mostly Mamba2, sparse attention, MLPs between), 'gdn_swa' (Gated DeltaNet interleaved with sliding-window
attention). The scale is tiny by default (CPU); pass :variant,explore for ASI-Arch's exploration width.
"""
from aira_jax.models.scales import get_scale
from aira_jax.train.config import base_config

PATTERNS = {
    "jamba": ["mamba2", "mlp", "mamba2", "mlp", "attention", "mlp", "mamba2", "mlp"],
    "nemotron_h": ["mamba2", "mamba2", "mlp", "mamba2", "attention", "mlp", "mamba2", "mlp"],
    "gdn_swa": ["gated_deltanet", "mlp", "swa", "mlp", "gated_deltanet", "mlp", "swa", "mlp"],
}


def get_config(arg: str = "jamba"):
  name, _, scale = (arg or "jamba").partition(",")
  if name not in PATTERNS:
    raise ValueError(f"configs/hybrid.py: variant must be one of {sorted(PATTERNS)}, got {name!r}")
  scale = scale or "tiny"
  c = base_config()
  c.model.update(get_scale(scale))
  c.model.pattern = ",".join(PATTERNS[name])
  c.model.primitive_kwargs = {"swa": {"sliding_window": 64}}
  if scale == "tiny":
    c.model.d_model = 128
    c.data.source = "synthetic"
    c.data.tokenizer = "byte"
    c.train.seq_len = 128
    c.train.global_batch = 16
    c.train.max_steps = 300
    c.train.lr = 2e-3
    c.train.warmup_steps = 30
    c.train.compute_dtype = "float32"
    c.train.eval_every = 100
    c.train.log_every = 25
  return c
