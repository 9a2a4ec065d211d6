"""Kernel-level benchmark: delta rule, gated delta rule and simple GLA, Pallas vs XLA vs flash-linear-attention.

    python bench/kernels.py            # GPU: the four standard shapes, all three implementations, one table
    python bench/kernels.py --smoke    # CPU: tiny shapes, XLA only, checks the script end to end

Implementations, timed in the same run: `pallas` = aira_jax.ops with impl='kernel' (the registered Pallas kernel
of this backend; the delta rules' default GPU scheme, "chunked"), `pallas_fused` = the delta rules' GPU kernels
with scheme="fused" (one sequential sweep per head; delta ops only), `xla` = impl='xla' (chunked pure JAX), `fla` = flash-linear-attention's Triton kernels (fla-core
0.6, PyTorch), run by this same script in a subprocess (--fla_child) so torch and JAX never share the GPU
process. JAX timing: jit, warm-up, block_until_ready, median of --iters; fla: triton.testing.do_bench median.
fwd+bwd = gradients of sum(o * do) with respect to every float input (q, k, v, g, beta), like training.

Floors (written out, per head-token, chunk C = 64, bf16 inputs, fp32 decays/betas):
  FLOPs, forward, matmuls as a chunked kernel executes them (masked halves included):
    simple_gla        2C(Dk+Dv) + 4 Dk Dv                       (QK^T, AV; QS, K^T V)
    delta rules       2C(3Dk+2Dv) + 6 Dk Dv + (2/3) C^2         (KK^T, W=TK, U=TV, QK^T, AU; WS, QS, K^T U; inverse)
  (2/3) C^2 is the triangular inverse's algorithmic cost. The kernels spend more on it: 19 fp32 C x C x C
  matmuls per chunk (38 C^2 per head-token, chunk_math.unit_lower_inverse), masked and dependent, bought for a
  short chain; the floor does not charge that choice (the Mosaic TPU kernels' cost estimates count it).
  fwd+bwd FLOPs = 3 x forward (backward ~ twice forward, the usual matmul count).
  Bytes: compulsory traffic, each tensor read or written once: forward reads q, k, v (2 B/elt) and the gates
  (4 B each), writes o; the backward also reads do and q, k, v, gates again and writes dq, dk, dv, d-gates.
  floor = max(bytes / --peak_bw, FLOPs / --peak_flops), defaults 3 TB/s and 790 TFLOP/s (H100 bf16 dense-ish).
A table is printed and saved as bench/results/kernels_<device>_<date>.{md,json}; a failing implementation or a
missing fla gives a row with its error, not a crash. Cases run shape by shape (the D128 shapes first), each op's
XLA reference before its kernel, the fused scheme last; the table is saved after every case. Each kernel row
gives its relative error against XLA (output and the worst gradient) and its compile seconds: XLA's ahead-of-
time compile plus the first call, where Mosaic GPU compiles its kernels (at first launch, cached by hash for the
process). --case_timeout stops a case whose timed runs take too long as a hung kernel (exit status 3, table
saved); --compile_timeout does the same for the compiles and first calls. With --profile (default: the Pallas implementations) each
such case's fwd+bwd also runs under jax.profiler, and a second table lists its kernels' device time per call
(bench/device_profile.py): which kernel, or which XLA glue around it, to work on next.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import device_profile  # noqa: E402

OPS = ("delta_rule", "gated_delta_rule", "simple_gla")
GATES = {"delta_rule": ("beta",), "gated_delta_rule": ("g", "beta"), "simple_gla": ("g",)}
SHAPES = "8x2048x8x128,2x8192x8x128,8x2048x8x64,2x8192x8x64"
SMOKE_SHAPES = "1x64x1x16"
CHUNK = 64
JAX_IMPLS = ("pallas", "pallas_fused", "xla")


def parse_shapes(text: str) -> list[tuple[int, int, int, int]]:
    shapes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise ValueError(f"--shapes wants BxTxHxD items separated by commas, got {item!r}")
        shapes.append(tuple(int(p) for p in parts))
    return shapes


def shape_name(s) -> str:
    return f"B{s[0]}·T{s[1]}·H{s[2]}·D{s[3]}"


def model(op: str, shape) -> dict:
    """FLOPs and compulsory bytes (see module doc) for one op and shape, Dk = Dv = D."""
    b, t, h, d = shape
    n = b * t * h
    c = CHUNK
    if op == "simple_gla":
        fwd = 2 * c * (2 * d) + 4 * d * d
    else:
        fwd = 2 * c * (5 * d) + 6 * d * d + (2 / 3) * c * c
    gates = 4 * len(GATES[op])
    qkv = 2 * 3 * d
    fwd_bytes = n * (qkv + gates + 2 * d)
    bwd_bytes = n * (qkv + gates + 2 * d + qkv + gates)
    return {"fwd_flops": n * fwd, "fb_flops": 3 * n * fwd, "fwd_bytes": fwd_bytes, "fb_bytes": fwd_bytes + bwd_bytes}


# ----------------------------------------------------------------------------------------------------- JAX side
def jax_inputs(op, shape, seed=0):
    import jax
    import jax.numpy as jnp
    b, t, h, d = shape
    ks = jax.random.split(jax.random.PRNGKey(seed), 6)
    bf = jnp.bfloat16
    k = jax.random.normal(ks[1], (b, t, h, d))
    ins = {"q": jax.random.normal(ks[0], (b, t, h, d), bf),
           "k": (k / jnp.linalg.norm(k, axis=-1, keepdims=True)).astype(bf),
           "v": jax.random.normal(ks[2], (b, t, h, d), bf)}
    if "g" in GATES[op]:
        ins["g"] = -jax.nn.softplus(jax.random.normal(ks[3], (b, t, h))) * 0.1
    if "beta" in GATES[op]:
        ins["beta"] = jax.nn.sigmoid(jax.random.normal(ks[4], (b, t, h))).astype(bf)
    return ins, jax.random.normal(ks[5], (b, t, h, d), bf)


def jax_fn(op, impl):
    """impl: 'kernel' / 'xla' through aira_jax.ops, or 'fused' (the delta rules' fused GPU scheme, called directly)."""
    from aira_jax import ops
    names = ("q", "k", "v") + GATES[op]
    if impl == "fused":
        from pallas_kernels.delta_rule import gpu as dr_gpu
        from pallas_kernels.gated_delta_rule import gpu as gdr_gpu
        kernel = {"delta_rule": dr_gpu.chunk_delta_rule_gpu, "gated_delta_rule": gdr_gpu.chunk_gated_delta_rule_gpu}[op]
        return (lambda *args: kernel(*args, scheme="fused")), names
    fn = getattr(ops, op)

    def run(*args):
        return fn(*args, impl=impl)
    return run, names


def time_jax(f, args, iters, warmup):
    """Median ms of `iters` calls of f (compiled: see compiled()) after `warmup` calls."""
    import jax
    import numpy as np
    for _ in range(warmup):
        jax.block_until_ready(f(*args))
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts))


def compiled(f, args):
    """(f compiled for args ahead of time, seconds the compile took: Mosaic kernels included)."""
    import jax
    t0 = time.perf_counter()
    c = jax.jit(f).lower(*args).compile()
    return c, time.perf_counter() - t0


def rel_err(x, ref) -> float:
    import numpy as np
    x = np.asarray(x, np.float64)
    return float(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30))


def jax_case(op, shape, impl, a, refs: dict, to_profile: list, watchdog: "Watchdog | None" = None) -> dict:
    """Times one JAX implementation of one op and shape. XLA's output and gradients are kept in refs (float32,
    on the host) as the reference every kernel row is checked against: a kernel must be right, not just fast.
    A profiled implementation's case goes to to_profile as (row, fwd+bwd function, args). Compiles are timed
    on their own (ahead of time) and watched with a.compile_timeout, the runs with a.case_timeout."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    case = (op, shape, impl)
    watch = (lambda phase, limit: watchdog.begin(case + (phase,), limit)) if watchdog else (lambda *_: None)  # noqa
    row = {"op": op, "shape": shape_name(shape), "dims": list(shape), "impl": impl}
    try:
        watch("compile", a.compile_timeout)
        ins, do = jax_inputs(op, shape)
        run, names = jax_fn(op, {"pallas": "kernel", "pallas_fused": "fused"}.get(impl, "xla"))
        args = tuple(ins[n] for n in names)
        fwd, row["fwd_compile_s"] = compiled(run, args)
        grad, row["fb_compile_s"] = compiled(jax.grad(lambda *x: jnp.sum(run(*x).astype(jnp.float32)
                                                                          * do.astype(jnp.float32)),
                                                      argnums=tuple(range(len(args)))), args)
        # Mosaic GPU compiles a kernel at its first launch (then caches it by hash for the process): the first
        # calls belong to the compile phase, and their seconds to the compile cost.
        for name, f in (("fwd", fwd), ("fb", grad)):
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            row[f"{name}_first_call_s"] = time.perf_counter() - t0
        watch("run", a.case_timeout)
        row["fwd_ms"] = time_jax(fwd, args, a.iters, a.warmup)
        row["fb_ms"] = time_jax(grad, args, max(1, a.iters // 2), a.warmup)
        out = np.asarray(fwd(*args), np.float32)
        grads = [np.asarray(g, np.float32) for g in grad(*args)]
        if impl == "xla":
            refs[op, shape] = (out, grads)
        elif (op, shape) in refs:
            ref_out, ref_grads = refs[op, shape]
            row["rel_vs_xla"] = rel_err(out, ref_out)
            row["grad_rel_vs_xla"] = max(rel_err(g, r) for g, r in zip(grads, ref_grads))
        if impl in a.profile_impls:  # profiled after every case is timed and saved (main)
            to_profile.append((row, grad, args))
    except Exception as e:  # a failing implementation is a row, not a crash
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    print(json.dumps(row), flush=True)
    return row


def case_order(ops, shapes, impls) -> list[tuple[str, tuple, str]]:
    """(op, shape, impl) in the order they run: shape by shape (the first shapes matter most), every op's XLA
    reference first and then its Pallas kernel; the delta rules' fused scheme, the alternative, comes last."""
    main = [i for i in ("xla", "pallas") if i in impls]
    order = [(op, shape, impl) for shape in shapes for op in ops for impl in main]
    if "pallas_fused" in impls:
        order += [(op, shape, "pallas_fused") for shape in shapes for op in ops if op != "simple_gla"]
    return order


class Watchdog:
    """A phase of a case (compile, run) lasting longer than its limit is taken for a hung kernel: the stacks are
    dumped, on_timeout(case) saves the table with the case as a failed row, and the process ends with status 3
    (bench/gpu_suite.sh then knows a kernel hangs; a hung GPU can run nothing more in this process). Compiles get
    a limit of their own (--compile_timeout): a slow compile is not a hang."""

    def __init__(self, on_timeout):
        import threading
        self.on_timeout, self.case, self.limit = on_timeout, None, 0.0
        self._lock, self._start = threading.Lock(), None
        threading.Thread(target=self._watch, daemon=True).start()

    def begin(self, case, limit: float = 0.0):
        """Times `case` (op, shape, impl, phase) from now on against `limit` seconds (None or 0: no limit)."""
        with self._lock:
            self.case, self.limit = case, float(limit or 0)
            self._start = time.monotonic() if case is not None and self.limit > 0 else None

    def _watch(self):
        import faulthandler
        while True:
            time.sleep(0.2)
            with self._lock:
                late = self._start is not None and time.monotonic() - self._start > self.limit
                case, limit = self.case, self.limit
            if late:
                print(f"case {case} still running after {limit:g}s: taken for a hang", flush=True)
                faulthandler.dump_traceback(all_threads=True)
                self.on_timeout(case)
                os._exit(3)


# ----------------------------------------------------------------------------------------------------- fla side
def fla_child(a) -> None:
    """Runs in its own process: imports torch/fla only, prints one JSON line per case."""
    for op in a.ops.split(","):
        for shape in parse_shapes(a.shapes):
            row = {"op": op, "shape": shape_name(shape), "dims": list(shape), "impl": "fla"}
            try:
                import torch
                import torch.nn.functional as F
                import triton
                mod = {"delta_rule": "fla.ops.delta_rule", "gated_delta_rule": "fla.ops.gated_delta_rule",
                       "simple_gla": "fla.ops.simple_gla"}[op]
                fn = getattr(__import__(mod, fromlist=["_"]), "chunk_" + op)
                b, t, h, d = shape
                torch.manual_seed(0)
                bf = torch.bfloat16
                ins = {"q": torch.randn(b, t, h, d, device="cuda", dtype=bf),
                       "k": F.normalize(torch.randn(b, t, h, d, device="cuda"), dim=-1).to(bf),
                       "v": torch.randn(b, t, h, d, device="cuda", dtype=bf)}
                if "g" in GATES[op]:
                    ins["g"] = (-F.softplus(torch.randn(b, t, h, device="cuda")) * 0.1).float()
                if "beta" in GATES[op]:
                    ins["beta"] = torch.sigmoid(torch.randn(b, t, h, device="cuda")).to(bf)
                do = torch.randn(b, t, h, d, device="cuda", dtype=bf)
                row["fwd_ms"] = triton.testing.do_bench(lambda: fn(**ins)[0], return_mode="median")
                leaves = {n: x.detach().clone().requires_grad_(True) for n, x in ins.items()}

                def fwd_bwd():
                    fn(**leaves)[0].backward(do)
                row["fb_ms"] = triton.testing.do_bench(fwd_bwd, return_mode="median",
                                                       grad_to_none=list(leaves.values()))
                row["device"] = torch.cuda.get_device_name()
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            print(json.dumps(row), flush=True)


def fla_rows(a) -> list[dict]:
    cmd = [sys.executable, os.path.abspath(__file__), "--fla_child", f"--ops={a.ops}", f"--shapes={a.shapes}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.fla_timeout)
        rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        err = (out.stderr or "no output").strip()[-300:]
    except subprocess.TimeoutExpired as e:
        rows, err = [json.loads(x) for x in (e.stdout or b"").decode().splitlines() if x.startswith("{")], "timeout"
    done = {(r["op"], r["shape"]) for r in rows}
    for op in a.ops.split(","):
        for shape in parse_shapes(a.shapes):
            if (op, shape_name(shape)) not in done:
                rows.append({"op": op, "shape": shape_name(shape), "dims": list(shape), "impl": "fla",
                             "error": f"fla child: {err}"})
    return rows


# ----------------------------------------------------------------------------------------------------- table
def annotate(rows: list[dict], a) -> None:
    """Adds floors, achieved rates and the Pallas/fla, XLA/Pallas ratios in place."""
    by = {(r["op"], r["shape"], r["impl"]): r for r in rows}
    for r in rows:
        m = model(r["op"], tuple(r["dims"]))
        r["floor_fwd_ms"] = 1e3 * max(m["fwd_bytes"] / a.peak_bw, m["fwd_flops"] / a.peak_flops)
        r["floor_fb_ms"] = 1e3 * max(m["fb_bytes"] / a.peak_bw, m["fb_flops"] / a.peak_flops)
        if "fwd_ms" in r:
            r["fwd_gbs"] = m["fwd_bytes"] / r["fwd_ms"] / 1e6
            r["fwd_tflops"] = m["fwd_flops"] / r["fwd_ms"] / 1e9
            r["fb_tflops"] = m["fb_flops"] / r["fb_ms"] / 1e9
            r["fb_of_floor"] = r["floor_fb_ms"] / r["fb_ms"]
        if r["impl"] in ("pallas", "pallas_fused") and "fwd_ms" in r:
            for other, key in (("fla", "pallas_over_fla"), ("xla", "xla_over_pallas")):
                o = by.get((r["op"], r["shape"], other), {})
                if "fwd_ms" in o:
                    num, den = (r, o) if other == "fla" else (o, r)
                    r[key] = (num["fwd_ms"] / den["fwd_ms"], num["fb_ms"] / den["fb_ms"])


def table(rows: list[dict]) -> str:
    head = ("| op | shape | impl | fwd ms | fwd+bwd ms | fwd GB/s | fwd TFLOP/s | fwd+bwd TFLOP/s | floor fwd / fwd+bwd ms "
            "| % of floor (fwd+bwd) | Pallas/fla fwd, fwd+bwd | XLA/Pallas fwd, fwd+bwd | rel err vs XLA: out, grads "
            "| compile + first call s: fwd, fwd+bwd |")
    lines = [head, "|" + "---|" * 14]
    ratio = lambda x: "" if x is None else f"{x[0]:.2f}, {x[1]:.2f}"  # noqa: E731
    for r in rows:
        floors = f"{r['floor_fwd_ms']:.3g} / {r['floor_fb_ms']:.3g}"
        if "error" in r:
            lines.append(f"| {r['op']} | {r['shape']} | {r['impl']} | FAILED: {r['error'][:120]} | | | | | {floors} "
                         "| | | | | |")
            continue
        rel = f"{r['rel_vs_xla']:.1e}, {r['grad_rel_vs_xla']:.1e}" if "rel_vs_xla" in r else ""
        first = (f"{r['fwd_compile_s'] + r['fwd_first_call_s']:.1f}, {r['fb_compile_s'] + r['fb_first_call_s']:.1f}"
                 if "fwd_first_call_s" in r else "")
        lines.append(f"| {r['op']} | {r['shape']} | {r['impl']} | {r['fwd_ms']:.3f} | {r['fb_ms']:.3f} | "
                     f"{r['fwd_gbs']:.4g} | {r['fwd_tflops']:.3g} | {r['fb_tflops']:.3g} | {floors} | "
                     f"{100 * r['fb_of_floor']:.2g}% | {ratio(r.get('pallas_over_fla'))} | "
                     f"{ratio(r.get('xla_over_pallas'))} | {rel} | {first} |")
    return "\n".join(lines)


def save(rows, impls, a, device, today, stem) -> str:
    import jax
    order = {i: n for n, i in enumerate(impls)}
    rows.sort(key=lambda r: (OPS.index(r["op"]), r["shape"], order.get(r["impl"], 9)))
    annotate(rows, a)
    text = (f"# Kernels: Pallas vs XLA vs fla, bf16, chunk {CHUNK}; device {device}; jax {jax.__version__}; {today}\n\n"
            f"{table(rows)}\n\nFloors at {a.peak_bw / 1e12:.1f} TB/s and {a.peak_flops / 1e12:.0f} TFLOP/s; "
            "FLOP and byte models in bench/kernels.py's docstring.\n")
    profiled = [(f"{r['op']} {r['shape']} {r['impl']}", r["profile"]) for r in rows if "profile" in r]
    if profiled:
        text += ("\n## Where the fwd+bwd time goes (jax.profiler, 3 calls; bench/device_profile.py)\n\n"
                 f"{device_profile.table(profiled)}\n")
    with open(stem + ".md", "w") as f:
        f.write(text)
    with open(stem + ".json", "w") as f:
        json.dump({"args": vars(a), "device": device, "rows": rows}, f, indent=1)
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU check: tiny shapes, XLA only, few iterations")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--shapes", default=None, help=f"BxTxHxD,... (default {SHAPES})")
    ap.add_argument("--impls", default=None,
                    help="comma list of pallas,pallas_fused,xla,fla (default all; --smoke: xla)")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--fla_timeout", type=int, default=240)
    ap.add_argument("--case_timeout", type=float, default=0,
                    help="seconds after which a case's runs (its compiles excluded) count as a hung kernel: table "
                         "saved, exit status 3 (0: no limit)")
    ap.add_argument("--compile_timeout", type=float, default=0,
                    help="the same for a case's compiles and first calls (Mosaic compiles at first launch; 0: no "
                         "limit)")
    ap.add_argument("--peak_bw", type=float, default=3e12, help="bytes/s used for the floor")
    ap.add_argument("--peak_flops", type=float, default=790e12, help="FLOP/s used for the floor")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--profile", default="pallas,pallas_fused",
                    help="implementations whose fwd+bwd also runs under the profiler (kernel breakdown); '' for none")
    ap.add_argument("--fla_child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.shapes = a.shapes or (SMOKE_SHAPES if a.smoke else SHAPES)
    a.iters = a.iters or (2 if a.smoke else 20)
    impls = (a.impls or ("xla" if a.smoke else "pallas,pallas_fused,xla,fla")).split(",")
    a.profile_impls = [i for i in a.profile.split(",") if i]
    for impl in a.profile_impls:
        if impl not in JAX_IMPLS:
            raise ValueError(f"--profile: unknown implementation {impl!r}; choose from {', '.join(JAX_IMPLS)}")
    for op in a.ops.split(","):
        if op not in OPS:
            raise ValueError(f"--ops: unknown op {op!r}; choose from {OPS}")
    for impl in impls:
        if impl not in JAX_IMPLS + ("fla",):
            raise ValueError(f"--impls: unknown implementation {impl!r}; choose from pallas, pallas_fused, xla, fla")
    parse_shapes(a.shapes)
    if a.fla_child:
        return fla_child(a)

    # fla first, in its own process, before JAX touches the GPU (JAX preallocates most of its memory); then
    # every JAX case by priority, saving the table after each case so a step timeout keeps what was measured.
    rows = fla_rows(a) if "fla" in impls else []
    for r in rows:
        print(json.dumps(r), flush=True)
    import jax
    device = jax.devices()[0].device_kind
    today = datetime.date.today().isoformat()
    stem = os.path.join(a.out, f"kernels_{device.replace(' ', '_')}_{today}{'_smoke' if a.smoke else ''}")
    os.makedirs(a.out, exist_ok=True)
    to_profile, refs = [], {}

    def timed_out(case):
        op, shape, impl, phase = case
        limit = a.compile_timeout if phase == "compile" else a.case_timeout
        rows.append({"op": op, "shape": shape_name(shape), "dims": list(shape), "impl": impl,
                     "error": f"timeout: {phase} still running after {limit:g}s (a hung kernel?)"})
        save(rows, impls, a, device, today, stem)

    watchdog = Watchdog(timed_out)
    for case in case_order(a.ops.split(","), parse_shapes(a.shapes), impls):
        rows.append(jax_case(*case, a, refs, to_profile, watchdog))
        save(rows, impls, a, device, today, stem)  # after every case: a step's time limit keeps what was measured
    watchdog.begin(None)
    # The kernel breakdowns last: a profiler that fails or crashes the process costs no timing row.
    for row, grad, args in to_profile:
        row["profile"] = device_profile.profile(grad, args, iters=3)
        save(rows, impls, a, device, today, stem)
    text = save(rows, impls, a, device, today, stem)
    print(text)
    return rows


if __name__ == "__main__":
    main()
