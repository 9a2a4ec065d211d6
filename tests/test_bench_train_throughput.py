"""bench/train_throughput.py end to end on CPU at a toy size: cases, rows, the saved table."""
import importlib.util
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    spec = importlib.util.spec_from_file_location("bench_train_throughput",
                                                  os.path.join(ROOT, "bench", "train_throughput.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_cases_are_timed_with_their_op_path_and_saved(tmp_path):
    mod = _load()
    mod.main(["--preset=tiny_cpu", "--d_model=32", "--num_layers=1", "--num_heads=2", "--seq=32", "--batches=2",
              "--steps=2", "--warmup=1", "--no-fla", "--cases=deltanet,deltanet:xla,attention",
              f"--out={tmp_path}"])
    (js,) = list(tmp_path.glob("train_throughput_*_tiny_cpu_*.json"))
    rows = json.loads(js.read_text())["rows"]
    assert [r["system"] for r in rows] == ["aira_jax_deltanet", "aira_jax_deltanet_xla", "aira_jax_attention"]
    for r in rows:
        assert "error" not in r, r
        assert r["tokens_per_s"] > 0 and r["step_ms"] > 0 and r["batch"] == 2 and r["seq"] == 32
    # The forced-XLA row took the XLA path for the delta rule; the table names every system.
    assert any(p.startswith("delta_rule:xla") for p in rows[1]["op_paths"]), rows[1]["op_paths"]
    md = js.with_suffix(".md").read_text()
    assert md.startswith("# Training throughput, tiny_cpu") and "aira_jax_deltanet_xla" in md
    assert "profile" not in rows[0] and "Where a training step" not in md  # off by default on CPU


def test_profile_adds_the_steps_kernel_breakdown(tmp_path):
    """--profile runs two more (donating) steps under the profiler: the breakdown lands in the row and the table."""
    mod = _load()
    mod.main(["--preset=tiny_cpu", "--d_model=32", "--num_layers=1", "--num_heads=2", "--seq=32", "--batches=2",
              "--steps=1", "--warmup=1", "--no-fla", "--cases=deltanet", "--profile", f"--out={tmp_path}"])
    (js,) = list(tmp_path.glob("train_throughput_*.json"))
    (row,) = json.loads(js.read_text())["rows"]
    prof = row["profile"]
    assert "error" not in prof, prof
    assert prof["source"] == "host" and prof["iters"] == 2 and prof["kernels"] and prof["busy_us"] > 0
    assert "Where a training step's time goes" in js.with_suffix(".md").read_text()


def test_bad_cases_are_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _load().main(["--preset=tiny_cpu", "--cases=deltanet:fast", f"--out={tmp_path}"])
    assert e.value.code == 2 and "--cases wants design[:auto|kernel|xla]" in capsys.readouterr().err
