"""bench/kernels.py runs end to end on CPU (--smoke) and its floors follow the written-out models."""
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_kernels", os.path.join(ROOT, "bench", "kernels.py"))
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
