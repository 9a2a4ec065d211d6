"""ASI-Arch's exploration scale: 8 layers, d_model 256, 8 heads, T=2048, batch 256, AdamW 3e-4 with WSD,
2,000 steps (~1B tokens), on FineWeb-edu as the paper used.

    python -m aira_jax.train --config=configs/explore.py:deltanet --workdir=DIR
Offline: --config.data.source=openstax (or text/jsonl with --config.data.paths=...).
"""
from aira_jax.train.config import baseline_config


def get_config(design: str = "deltanet"):
  c = baseline_config("explore", design, "configs/explore.py")
  c.data.source = "hf"
  c.data.tokenizer = "sentencepiece"
  c.data.spm_vocab_size = 32000
  c.data.spm_model_path = "tokenizers/spm32k.model"
  c.train.seq_len = 2048
  c.train.global_batch = 256
  c.train.max_steps = 2000
  c.train.lr = 3e-4
  c.train.schedule = "wsd"
  c.train.warmup_steps = 100
  c.train.eval_every = 250
  c.mesh.data = -1
  return c
