"""Where a jitted function's time goes: its kernels' device time, from a jax.profiler trace.

    prof = device_profile.profile(fn, args, iters=3)
    print(device_profile.table([("delta_rule B8·T2048·H8·D128 pallas", prof)]))

Runs `fn(*args)` `iters` times (after one warm-up call) under jax.profiler.trace, reads the trace back with
jax.profiler.ProfileData and sums the events of the device planes ("/device:GPU:0", ...: one event per kernel
launch, from CUPTI) by name. Per kernel: launches and microseconds per call of fn, share of the device time. The
sum against the wall time per call shows how much of a call the device sits idle (launch gaps, host work).
Mosaic GPU kernels carry the names the project gives them (`gated_delta_rule_grads_k128_v64_bfloat16`, ...);
XLA's own kernels carry their fusion names.

Without a device plane (CPU, or a GPU build whose profiler has no CUPTI) it falls back to the host XLA threads'
op events and says so (`source: host`); a failing trace is reported, not raised: a benchmark keeps its row.
"""
from __future__ import annotations

import collections
import glob
import os
import tempfile
import time

# Lines of a device plane that re-list the kernels' time by XLA module or op (derived views, not launches).
_DERIVED_LINES = ("XLA Modules", "XLA Ops", "Steps", "Framework Ops", "Framework Name Scope", "Source code",
                  "XLA TraceMe", "Launch Stats")
# Host-thread bookkeeping events that are not ops.
_HOST_NOISE = ("ThreadpoolListener", "ThunkExecutor", "SlinkyThreadPool", "end: ", "$")


def _outermost(events):
    """The events of one host thread that no other event of it contains (a while loop's body ops are inside it)."""
    out, end = [], float("-inf")
    for e in sorted(events, key=lambda e: (e.start_ns, -e.duration_ns)):
        if e.start_ns >= end:
            out.append(e)
            end = e.end_ns
    return out


def events(data) -> tuple[list[tuple[str, float]], str]:
    """(name, duration in ns) of every kernel event of a jax.profiler.ProfileData, and where they came from:
    "device" (the device planes' stream lines: one event per launch) or "host" (the CPU fallback)."""
    device, host = [], []
    for plane in data.planes:
        if plane.name.startswith("/device:"):
            lines = [ln for ln in plane.lines if not ln.name.startswith(_DERIVED_LINES)]
            streams = [ln for ln in lines if ln.name.startswith("Stream")]
            for line in streams or lines:
                device.extend((e.name, float(e.duration_ns)) for e in line.events)
        elif plane.name == "/host:CPU":
            for line in plane.lines:
                if line.name.startswith("tf_XLA"):
                    ops = [e for e in line.events if e.duration_ns > 0 and not e.name.startswith(_HOST_NOISE)]
                    host.extend((e.name, float(e.duration_ns)) for e in _outermost(ops))
    return (device, "device") if device else (host, "host")


def summarize(events: list[tuple[str, float]], calls: int) -> list[dict]:
    """Events summed by name, per call of the profiled function, longest first."""
    total = collections.defaultdict(float)
    count = collections.Counter()
    for name, ns in events:
        total[name] += ns
        count[name] += 1
    busy = sum(total.values()) or 1.0
    rows = [{"name": n, "launches": count[n] / calls, "us": total[n] / calls / 1e3, "share": total[n] / busy}
            for n in total]
    return sorted(rows, key=lambda r: -r["us"])


def profile(fn, args, iters: int = 3, top: int = 12) -> dict:
    """Kernel breakdown of fn(*args) (jitted; outputs are waited for): see the module doc. Never raises."""
    import jax
    from jax.profiler import ProfileData
    try:
        jax.block_until_ready(fn(*args))
        with tempfile.TemporaryDirectory() as log_dir:
            t0 = time.perf_counter()
            with jax.profiler.trace(log_dir):
                for _ in range(iters):
                    jax.block_until_ready(fn(*args))
            wall_ms = 1e3 * (time.perf_counter() - t0) / iters  # includes the profiler's own overhead
            paths = glob.glob(os.path.join(log_dir, "**", "*.xplane.pb"), recursive=True)
            if not paths:
                return {"error": "the profiler wrote no trace"}
            found, source = events(ProfileData.from_file(max(paths, key=os.path.getmtime)))
    except Exception as e:  # a benchmark keeps its row without a breakdown
        return {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    rows = summarize(found, iters)
    return {"source": source, "iters": iters, "busy_us": sum(r["us"] for r in rows), "wall_ms": wall_ms,
            "kernels": rows[:top], "other_kernels": max(0, len(rows) - top)}


def table(cases: list[tuple[str, dict]]) -> str:
    """Markdown: per case, its kernels with launches and µs per call and their share of the device time."""
    lines = ["| case | kernel | launches | µs per call | share |", "|---|---|---|---|---|"]
    for label, prof in cases:
        if "error" in prof:
            lines.append(f"| {label} | profile failed: {prof['error'][:120]} | | | |")
            continue
        for r in prof["kernels"]:
            lines.append(f"| {label} | `{r['name'][:90]}` | {r['launches']:.3g} | {r['us']:.1f} | "
                         f"{100 * r['share']:.1f}% |")
        rest = f" ({prof['other_kernels']} smaller kernels not listed)" if prof["other_kernels"] else ""
        lines.append(f"| {label} | **{prof['source']} busy** / wall per call{rest} | | "
                     f"**{prof['busy_us']:.1f}** / {1e3 * prof['wall_ms']:.1f} | |")
    return "\n".join(lines)
