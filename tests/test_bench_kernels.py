"""bench/kernels.py runs end to end on CPU (--smoke) and its floors follow the written-out models."""
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_bench(name="kernels"):
    """A bench/ script as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(ROOT, "bench", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_smoke_writes_one_table_with_every_op(tmp_path):
    bench = load_bench()
    rows = bench.main(["--smoke", "--impls=xla,pallas", "--iters=1", "--warmup=0", f"--out={tmp_path}"])
    xla = {r["op"]: r for r in rows if r["impl"] == "xla"}
    assert set(xla) == set(bench.OPS)
    for r in xla.values():
        assert "error" not in r, r
        assert r["fwd_ms"] > 0 and r["fb_ms"] > 0 and r["floor_fb_ms"] > r["floor_fwd_ms"] > 0
    # No Pallas kernel applies on CPU: that is a row carrying the error, not a crash.
    pallas = [r for r in rows if r["impl"] == "pallas"]
    assert len(pallas) == 3 and all("NotImplementedError" in r["error"] for r in pallas)
    md = [f for f in os.listdir(tmp_path) if f.endswith(".md")]
    js = [f for f in os.listdir(tmp_path) if f.endswith(".json")]
    assert len(md) == 1 and md[0].startswith("kernels_cpu_") and len(js) == 1
    text = (tmp_path / md[0]).read_text()
    assert text.count("| simple_gla |") == 2 and "FAILED: NotImplementedError" in text
    assert len(json.loads((tmp_path / js[0]).read_text())["rows"]) == 6


def test_models_and_bad_shapes():
    bench = load_bench()
    small, big = bench.model("simple_gla", (1, 64, 1, 64)), bench.model("simple_gla", (2, 64, 1, 64))
    assert big["fwd_flops"] == 2 * small["fwd_flops"] and big["fb_bytes"] == 2 * small["fb_bytes"]
    # simple GLA per head-token: 2C(Dk+Dv) + 4DkDv with C = 64, D = 64.
    assert small["fwd_flops"] == 64 * (2 * 64 * 128 + 4 * 64 * 64)
    assert bench.model("delta_rule", (1, 64, 1, 64))["fwd_flops"] > small["fwd_flops"]
    with pytest.raises(ValueError, match="BxTxHxD"):
        bench.parse_shapes("8x2048x8")


def test_profile_breakdown_lands_in_the_table(tmp_path):
    """--profile=xla on CPU: the host fallback still names XLA's ops; the breakdown goes to the md and the json."""
    bench = load_bench()
    rows = bench.main(["--smoke", "--ops=delta_rule", "--impls=xla", "--profile=xla", "--iters=1", "--warmup=0",
                       f"--out={tmp_path}"])
    prof = rows[0]["profile"]
    assert "error" not in prof, prof
    assert prof["source"] == "host" and prof["kernels"] and prof["busy_us"] > 0 and prof["wall_ms"] > 0
    assert abs(sum(r["share"] for r in prof["kernels"]) - 1) < 1e-6 or prof["other_kernels"] > 0
    text = next(p for p in tmp_path.iterdir() if p.suffix == ".md").read_text()
    assert "Where the fwd+bwd time goes" in text and "delta_rule B1·T64·H1·D16 xla" in text
    with pytest.raises(ValueError, match="--profile: unknown implementation 'fla'"):
        bench.main(["--smoke", "--profile=fla", f"--out={tmp_path}"])


def test_profile_sums_per_call_and_never_raises():
    prof = load_bench("device_profile")
    rows = prof.summarize([("a", 3000.0), ("b", 1000.0), ("a", 3000.0), ("b", 1000.0)], calls=2)
    assert [r["name"] for r in rows] == ["a", "b"]
    assert rows[0]["launches"] == 1 and rows[0]["us"] == 3.0 and rows[0]["share"] == 0.75

    def broken(x):
        raise RuntimeError("kernel exploded")
    out = prof.profile(broken, (1,))
    assert out == {"error": "RuntimeError: kernel exploded"}


def test_cases_run_by_priority_and_kernels_are_checked_against_xla(tmp_path, monkeypatch):
    bench = load_bench()
    shapes = bench.parse_shapes("1x64x1x16,1x128x1x16")
    order = bench.case_order(["delta_rule", "simple_gla"], shapes, ["pallas_fused", "pallas", "xla"])
    assert order[:4] == [("delta_rule", shapes[0], "xla"), ("delta_rule", shapes[0], "pallas"),
                         ("simple_gla", shapes[0], "xla"), ("simple_gla", shapes[0], "pallas")]
    assert [c[2] for c in order[-2:]] == ["pallas_fused"] * 2 and all(
        c[0] != "simple_gla" for c in order if c[2] == "pallas_fused")
    # A "kernel" 1% off XLA's output: its row says so, for the output and for the gradients.
    real = bench.jax_fn

    def fake(op, impl):
        run, names = real(op, "xla")
        return ((lambda *x: run(*x) * 1.01) if impl == "kernel" else run), names
    monkeypatch.setattr(bench, "jax_fn", fake)
    rows = bench.main(["--smoke", "--ops=delta_rule", "--impls=xla,pallas", "--profile=", "--iters=1",
                       "--warmup=0", f"--out={tmp_path}"])
    (kernel,) = [r for r in rows if r["impl"] == "pallas"]
    # (about 1%: the scaled output is rounded to bf16 again)
    assert 0.005 < kernel["rel_vs_xla"] < 0.015 and 0.005 < kernel["grad_rel_vs_xla"] < 0.015, kernel
    xla = next(r for r in rows if r["impl"] == "xla")
    assert "rel_vs_xla" not in xla
    assert kernel["fwd_compile_s"] > 0 and kernel["fb_compile_s"] > 0 and kernel["fb_first_call_s"] > 0


@pytest.mark.parametrize("flag,phase", [("--compile_timeout=0.01", "compile"), ("--case_timeout=0.001", "run")])
def test_a_case_past_its_timeout_is_a_hang_exit_3_with_the_table_saved(tmp_path, flag, phase):
    """The run phase is timed apart from the compiles: a slow compile is not taken for a hung kernel."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "kernels.py"), "--smoke", "--ops=delta_rule",
                          "--impls=xla", "--iters=5000", "--warmup=0", flag, f"--out={tmp_path}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 3, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"'xla', '{phase}') still running" in out.stdout
    (md,) = [p for p in tmp_path.iterdir() if p.suffix == ".md"]
    assert f"FAILED: timeout: {phase} still running after" in md.read_text()


def test_profile_reads_device_streams_and_skips_derived_lines():
    """A GPU trace (built here as an XSpace text proto): kernel launches on the stream lines count, the "XLA Ops"
    line that re-lists them does not, and the host fallback is not used when a device plane has events."""
    from jax.profiler import ProfileData
    prof = load_bench("device_profile")
    text = """
    planes { id: 1 name: "/device:GPU:0"
      lines { id: 1 name: "Stream #13(compute)" timestamp_ns: 1000
        events { metadata_id: 1 offset_ps: 0 duration_ps: 5000000 }
        events { metadata_id: 2 offset_ps: 6000000 duration_ps: 1000000 }
        events { metadata_id: 1 offset_ps: 8000000 duration_ps: 5000000 } }
      lines { id: 2 name: "XLA Ops" timestamp_ns: 1000 events { metadata_id: 3 offset_ps: 0 duration_ps: 9000000 } }
      event_metadata { key: 1 value { id: 1 name: "delta_rule_grads_k128_v64_bfloat16" } }
      event_metadata { key: 2 value { id: 2 name: "loop_reduce_fusion" } }
      event_metadata { key: 3 value { id: 3 name: "custom-call.1" } } }
    planes { id: 2 name: "/host:CPU"
      lines { id: 1 name: "tf_XLAEigen/1" events { metadata_id: 1 offset_ps: 0 duration_ps: 7000000 } }
      event_metadata { key: 1 value { id: 1 name: "host_op" } } }
    """
    found, source = prof.events(ProfileData.from_text_proto(text))
    assert source == "device"
    rows = prof.summarize(found, calls=2)
    assert [(r["name"], r["launches"], r["us"]) for r in rows] == [
        ("delta_rule_grads_k128_v64_bfloat16", 1.0, 5.0), ("loop_reduce_fusion", 0.5, 0.5)]
