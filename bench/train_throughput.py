"""Training throughput of the project's engine, with flash-linear-attention's PyTorch model in the same run.

    python bench/train_throughput.py                      # GPU: exploration-scale DeltaNet + Llama, and fla
    python bench/train_throughput.py --preset=tiny_cpu    # CPU tokens/s of configs/tiny.py

For each design and batch size it builds the real train step of aira_jax.train (fp32 master weights, bf16
compute, AdamW, clipping), feeds random tokens, and times `--steps` steps after `--warmup`: tokens/s, step
time, MFU (FLOPs from the compiled step's XLA cost analysis, or 6ND + attention when that under-counts) and
peak device memory; compile_s is XLA's compile, first_step_s the first step (where Mosaic GPU kernels compile). With --fla it runs bench/fla_throughput.py in a subprocess at the same sizes and prints
the ratio. --ops_impls=auto,xla times each design once per aira_jax.ops implementation (auto: the Pallas kernel
wherever one applies, vs the XLA chunked path) in the same run; each row lists the path every op took.
A table is printed and saved as bench/results/train_throughput_<date>_<device>.{md,json}. With --profile (default
on a GPU) two more steps of each case run under jax.profiler and a second table lists the step's kernels by
device time (bench/device_profile.py): where a model-level gap to fla comes from.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import device_profile  # noqa: E402

from aira_jax import ops  # noqa: E402
from aira_jax.ops import dispatch  # noqa: E402
from aira_jax.models import build_model, count_params  # noqa: E402
from aira_jax.train import metrics as metrics_lib  # noqa: E402
from aira_jax.train import schedules  # noqa: E402
from aira_jax.train import sharding as shd  # noqa: E402
from aira_jax.train import state as state_lib  # noqa: E402
from aira_jax.train import steps as steps_lib  # noqa: E402
from aira_jax.train.config import base_config  # noqa: E402

PRESETS = {
    # ASI-Arch exploration scale with fla's anchor settings: GPT-2 vocabulary untied, MLP 768 (fla's default
    # for hidden 256: 4 * 2/3 * 256 rounded up to 256), T = 2048.
    "explore": dict(d_model=256, num_layers=8, num_heads=8, vocab=50257, mlp_hidden=768, seq=2048,
                    batches="16,64", designs="deltanet,attention", dtype="bfloat16", steps=20, warmup=3),
    "tiny_cpu": dict(d_model=128, num_layers=2, num_heads=4, vocab=259, mlp_hidden=0, seq=128,
                     batches="16", designs="deltanet,attention", dtype="float32", steps=10, warmup=2),
}


def jax_case(design: str, a, batch: int) -> dict:
  cfg = base_config()
  cfg.model.update(dict(d_model=a.d_model, num_layers=a.num_layers, num_heads=a.num_heads, vocab_size=a.vocab,
                        mlp_hidden=a.mlp_hidden, design=design))
  cfg.train.update(dict(seq_len=a.seq, global_batch=batch, compute_dtype=a.dtype, max_steps=1000))
  tc = cfg.train
  mesh = shd.make_mesh(cfg.mesh)
  tx = schedules.make_optimizer(tc)
  setup = state_lib.setup_state(build_model, cfg.model, 0, tx, mesh, count_params)
  step_fn = steps_lib.make_train_step(setup, tx, mesh, compute_dtype=jnp.dtype(a.dtype))
  batch_sh = shd.batch_sharding(mesh)
  t0 = time.perf_counter()
  compiled = step_fn.lower(setup.abstract, {"tokens": jax.ShapeDtypeStruct((batch, a.seq + 1), jnp.int32,
                                                                           sharding=batch_sh)},
                           jax.ShapeDtypeStruct((), jnp.float32)).compile()
  compile_s = time.perf_counter() - t0
  tokens = jax.device_put(np.random.default_rng(0).integers(0, a.vocab, (batch, a.seq + 1), dtype=np.int32),
                          batch_sh)
  lr = jnp.float32(3e-4)
  state = setup.init_fn()
  t0 = time.perf_counter()
  state, m = compiled(state, {"tokens": tokens}, lr)  # Mosaic GPU compiles its kernels at their first launch
  jax.block_until_ready(m)
  first_step_s = time.perf_counter() - t0
  for _ in range(a.warmup - 1):
    state, m = compiled(state, {"tokens": tokens}, lr)
  jax.block_until_ready(m)
  start = time.perf_counter()
  for _ in range(a.steps):
    state, m = compiled(state, {"tokens": tokens}, lr)
  jax.block_until_ready(m)
  dt = (time.perf_counter() - start) / a.steps
  tokens_per_step = batch * a.seq
  embed = a.vocab * a.d_model
  flops = metrics_lib.compiled_flops(compiled, jax.device_count())
  analytic = metrics_lib.analytic_flops_per_step(setup.num_params, embed, tokens_per_step,
                                                 num_layers=a.num_layers, d_model=a.d_model, seq_len=a.seq)
  if flops is None or flops < 0.95 * 6.0 * (setup.num_params - embed) * tokens_per_step:
    flops, flops_src = analytic, "analytic"
  else:
    flops_src = "xla"
  peak = metrics_lib.peak_flops_per_device()
  mem, mem_kind = metrics_lib.peak_memory_bytes()
  carry = {"state": state}

  def one_step():  # for the profile (main); the step donates its state, so each call carries it on
    carry["state"], out = compiled(carry["state"], {"tokens": tokens}, lr)
    return out
  return {"_one_step": one_step, "system": f"aira_jax_{design}", "batch": batch, "seq": a.seq, "params": setup.num_params,
          "step_ms": dt * 1e3, "tokens_per_s": tokens_per_step / dt, "compile_s": compile_s,
          "first_step_s": first_step_s,
          "mfu": (flops / dt / (peak * jax.device_count())) if peak else None, "flops_per_step": flops,
          "flops_source": flops_src, "peak_gib": (mem / 2**30) if mem else None, "memory_kind": mem_kind,
          "loss": float(m["loss"]), "device": jax.devices()[0].device_kind}


def fla_cases(a) -> list[dict]:
  cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fla_throughput.py"),
         f"--d_model={a.d_model}", f"--layers={a.num_layers}", f"--heads={a.num_heads}", f"--vocab={a.vocab}",
         f"--seq={a.seq}", f"--batches={a.batches}", f"--steps={a.steps}", f"--warmup={a.warmup}",
         f"--intermediate={a.mlp_hidden}"]
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.fla_timeout)
  rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
  if not rows:
    rows = [{"system": "fla", "error": (out.stderr or "no output")[-400:]}]
  return rows


def table(rows: list[dict]) -> str:
  head = "| system | batch | params (M) | step ms | tokens/s | MFU | peak GiB | vs fla DeltaNet |"
  lines = [head, "|" + "---|" * 8]
  fla = {r["batch"]: r for r in rows if r.get("system") == "fla_DeltaNetForCausalLM" and "tokens_per_s" in r}
  for r in rows:
    if "error" in r:
      lines.append(f"| {r.get('system')} | {r.get('batch', '')} | FAILED: {r['error'][:80]} | | | | | |")
      continue
    ratio = r["tokens_per_s"] / fla[r["batch"]]["tokens_per_s"] if r["batch"] in fla else None
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "n/a"
    peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") else "n/a"
    lines.append(f"| {r['system']} | {r['batch']} | {r['params'] / 1e6:.2f} | {r['step_ms']:.1f} | "
                 f"{r['tokens_per_s']:,.0f} | {mfu} | {peak} | {'' if ratio is None else f'{ratio:.2f}x'} |")
  return "\n".join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--preset", default="explore" if jax.default_backend() == "gpu" else "tiny_cpu",
                  choices=sorted(PRESETS))
  for k in ("d_model", "num_layers", "num_heads", "vocab", "mlp_hidden", "seq", "steps", "warmup"):
    ap.add_argument(f"--{k}", type=int, default=None)
  ap.add_argument("--batches", default=None)
  ap.add_argument("--designs", default=None)
  ap.add_argument("--dtype", default=None)
  ap.add_argument("--fla", action=argparse.BooleanOptionalAction, default=jax.default_backend() == "gpu")
  ap.add_argument("--fla_timeout", type=int, default=300)
  ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=jax.default_backend() == "gpu",
                  help="also profile two steps of each case: the step's kernels by device time")
  ap.add_argument("--ops_impls", default="auto", help="comma list of aira_jax.ops impls to time: auto,kernel,xla")
  ap.add_argument("--cases", default=None,
                  help="comma list of design[:impl] (impl default auto), e.g. deltanet,deltanet:xla,attention; "
                       "overrides --designs x --ops_impls")
  ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
  a = ap.parse_args(argv)
  for k, v in PRESETS[a.preset].items():
    if getattr(a, k) is None:
      setattr(a, k, v)
  try:
    cases = parse_cases(a.cases) if a.cases else [(d, i) for i in a.ops_impls.split(",") for d in a.designs.split(",")]
  except ValueError as e:
    ap.error(str(e))
  device = jax.devices()[0].device_kind
  stem = os.path.join(a.out, f"train_throughput_{datetime.date.today()}_{a.preset}_{device.replace(' ', '_')}")
  rows = []
  for design, impl in cases:
    suffix = "" if impl == "auto" else f"_{impl}"
    for batch in [int(b) for b in a.batches.split(",")]:
      try:
        dispatch._logged.clear()  # dispatch logs each choice once; clearing makes this case's choices visible
        with ops.use_impl(impl):  # dispatch happens at trace time, inside this context
          rows.append(jax_case(design, a, batch))
        one_step = rows[-1].pop("_one_step")
        rows[-1]["system"] += suffix
        # Which path each op took (e.g. whether the Pallas kernel applied at this head dim).
        rows[-1]["op_paths"] = sorted(f"{op}:{path}" for op, path, _ in dispatch._logged)
      except Exception as e:  # e.g. out of memory at a large batch: a row, not a crash
        rows.append({"system": f"aira_jax_{design}{suffix}", "batch": batch,
                     "error": f"{type(e).__name__}: {e}"[:300]})
      print(json.dumps(rows[-1]), flush=True)
      save(stem, a, rows, device)  # after every row: a run stopped by a time limit keeps what it measured
      if a.profile and "error" not in rows[-1]:  # after the save: a profiler that crashes loses no timing
        rows[-1]["profile"] = device_profile.profile(one_step, (), iters=2, top=15)
        save(stem, a, rows, device)
  if a.fla:
    rows.extend(fla_cases(a))
  print(save(stem, a, rows, device))


def parse_cases(text: str) -> list[tuple[str, str]]:
  out = []
  for item in text.split(","):
    design, _, impl = item.strip().partition(":")
    impl = impl or "auto"
    if not design or impl not in ("auto", "kernel", "xla"):
      raise ValueError(f"--cases wants design[:auto|kernel|xla] items, got {item!r}")
    out.append((design, impl))
  return out


def save(stem: str, a, rows: list[dict], device: str) -> str:
  text = (f"# Training throughput, {a.preset}: d_model {a.d_model}, {a.num_layers} layers, {a.num_heads} heads, "
          f"vocab {a.vocab}, T={a.seq}, {a.dtype}; device {device}; jax {jax.__version__}; "
          f"{datetime.date.today()}\n\n{table(rows)}\n")
  profiled = [(f"{r['system']} b{r['batch']}", r["profile"]) for r in rows if "profile" in r]
  if profiled:
    text += ("\n## Where a training step's time goes (jax.profiler, 2 steps; bench/device_profile.py)\n\n"
             f"{device_profile.table(profiled)}\n")
  os.makedirs(os.path.dirname(stem), exist_ok=True)
  with open(stem + ".md", "w") as f:
    f.write(text)
  with open(stem + ".json", "w") as f:
    json.dump({"args": vars(a), "rows": rows}, f, indent=1)
  return text


if __name__ == "__main__":
  main()
