"""Tiny CPU scale: trains in a few minutes on 2 cores, offline, on the built-in synthetic language.

    python -m aira_jax.train --config=configs/tiny.py --workdir=/tmp/tiny            # DeltaNet
    python -m aira_jax.train --config=configs/tiny.py:attention --workdir=/tmp/tiny  # any baseline
"""
from aira_jax.train.config import baseline_config


def get_config(design: str = "deltanet"):
  c = baseline_config("tiny", design, "configs/tiny.py")
  c.model.d_model = 128
  c.model.num_heads = 4
  c.model.num_layers = 2
  c.data.source = "synthetic"
  c.data.tokenizer = "byte"
  c.data.val_docs = 64
  c.train.seq_len = 128
  c.train.global_batch = 16
  c.train.max_steps = 600
  c.train.max_seconds = 240.0  # the wall-clock budget caps the run on slow machines
  c.train.lr = 3e-3
  c.train.warmup_steps = 30
  c.train.compute_dtype = "float32"  # CPUs have no fast bf16 matmul; accelerators use bfloat16
  c.train.eval_every = 100
  c.train.eval_batches = 4
  c.train.log_every = 25
  c.train.checkpoint_every = 200
  return c
