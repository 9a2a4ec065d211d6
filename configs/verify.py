"""ASI-Arch's verification scale (~340M): 24 layers, d_model 1024; 15B tokens in the paper, FSDP over the mesh.

    python -m aira_jax.train --config=configs/verify.py:deltanet --workdir=DIR --config.train.max_tokens=...
"""
from aira_jax.train.config import baseline_config


def get_config(design: str = "deltanet"):
  c = baseline_config("verify", design, "configs/verify.py")
  c.data.source = "hf"
  c.data.tokenizer = "sentencepiece"
  c.data.spm_vocab_size = 32000
  c.data.spm_model_path = "tokenizers/spm32k.model"
  c.train.seq_len = 2048
  c.train.global_batch = 512
  c.train.max_steps = 0
  c.train.max_tokens = 15_000_000_000
  c.train.lr = 3e-4
  c.train.warmup_steps = 500
  c.train.eval_every = 2000
  c.train.checkpoint_every = 1000
  c.mesh.data = 1
  c.mesh.fsdp = -1
  return c
