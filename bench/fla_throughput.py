"""Peer side of bench/train_throughput.py: flash-linear-attention's PyTorch DeltaNetForCausalLM (and a
transformers Llama with SDPA) trained at a given size; one JSON line per case on stdout.

Runs in its own process (torch and JAX must not share the GPU's memory pool). Needs torch, transformers and the
`fla-core` / `flash-linear-attention` wheels; prints a JSON line with "error" when they are missing.
"""
from __future__ import annotations

import argparse
import json
import time


def train_throughput(model, batch, seq, steps, warmup):
  import torch
  model = model.cuda()
  opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
  ids = torch.randint(0, model.config.vocab_size, (batch, seq + 1), device="cuda")

  def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
      out = model(input_ids=ids[:, :-1], labels=ids[:, 1:])
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return out.loss

  for _ in range(warmup):
    step()
  torch.cuda.synchronize()
  torch.cuda.reset_peak_memory_stats()
  start = time.perf_counter()
  for _ in range(steps):
    loss = step()
  torch.cuda.synchronize()
  dt = (time.perf_counter() - start) / steps
  return {"step_ms": dt * 1e3, "tokens_per_s": batch * seq / dt,
          "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "loss": float(loss),
          "params": sum(p.numel() for p in model.parameters())}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--d_model", type=int, default=256)
  ap.add_argument("--layers", type=int, default=8)
  ap.add_argument("--heads", type=int, default=8)
  ap.add_argument("--vocab", type=int, default=50257)
  ap.add_argument("--seq", type=int, default=2048)
  ap.add_argument("--batches", default="16,64")
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--warmup", type=int, default=5)
  ap.add_argument("--intermediate", type=int, default=0, help="MLP width; 0 = fla's default")
  a = ap.parse_args()
  for batch in [int(b) for b in a.batches.split(",")]:
    for name in ("fla_DeltaNetForCausalLM", "hf_LlamaForCausalLM_sdpa"):
      row = {"system": name, "batch": batch, "seq": a.seq}
      try:
        import torch
        if name.startswith("fla"):
          from fla.models import DeltaNetConfig, DeltaNetForCausalLM
          kw = dict(intermediate_size=a.intermediate) if a.intermediate else {}
          cfg = DeltaNetConfig(hidden_size=a.d_model, num_heads=a.heads, num_hidden_layers=a.layers,
                               vocab_size=a.vocab, max_position_embeddings=a.seq, **kw)
          model = DeltaNetForCausalLM(cfg)
        else:
          from transformers import LlamaConfig, LlamaForCausalLM
          cfg = LlamaConfig(hidden_size=a.d_model, num_attention_heads=a.heads, num_key_value_heads=a.heads,
                            num_hidden_layers=a.layers, vocab_size=a.vocab, max_position_embeddings=a.seq,
                            intermediate_size=a.intermediate or 4 * a.d_model, attn_implementation="sdpa")
          model = LlamaForCausalLM(cfg)
        row["intermediate_size"] = getattr(model.config, "intermediate_size", None)
        row.update(train_throughput(model, batch, a.seq, a.steps, a.warmup))
        row["device"] = torch.cuda.get_device_name()
        del model
        torch.cuda.empty_cache()
      except Exception as e:  # report and go on: a peer that cannot run is a row, not a crash
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
      print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()
