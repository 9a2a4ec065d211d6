"""`python -m aira_jax.discover`: usage errors, and a real offline run that is interrupted with Ctrl-C and resumed."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from aira_jax import discover

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "discover_tiny.py")
# The tiny discovery config shrunk from the command line: a 32-wide one-layer model, 8 steps, the static gate.
TINY = [f"--config={CONFIG}", "--config.seed.baseline_seeds=0", "--config.loop.max_seconds=0",
        "--config.engineer.train.model.d_model=32", "--config.engineer.train.model.num_layers=1",
        "--config.engineer.train.model.num_heads=2", "--config.engineer.train.train.seq_len=32",
        "--config.engineer.train.train.global_batch=4", "--config.engineer.train.train.max_steps=8",
        "--config.engineer.train.train.warmup_steps=2", "--config.engineer.train.train.eval_batches=1",
        "--config.engineer.train.data.val_docs=16", "--config.engineer.train.data.synthetic_num_docs=200",
        "--config.check.stop_after=static", "--config.loop.poll_s=0.2"]


def test_malformed_ops_variables_are_usage_errors(tmp_path, capsys, monkeypatch):
    """Every training child inherits them: a typo is named once, before the loop starts."""
    for name, value in (("AIRA_JAX_OPS_TARGET", "gpuu"), ("AIRA_JAX_OPS_IMPL", "pallas")):
        monkeypatch.setenv(name, value)
        assert discover.main(["discover", *TINY, f"--workdir={tmp_path}"]) == discover.EXIT_USAGE
        assert f"{name}={value!r}" in capsys.readouterr().err
        monkeypatch.delenv(name)


def test_usage_errors(tmp_path, capsys):
    assert discover.main(["discover", *TINY]) == discover.EXIT_USAGE
    assert "--workdir is required" in capsys.readouterr().err
    assert discover.main(["discover", f"--workdir={tmp_path}"]) == discover.EXIT_USAGE
    assert "--config is required" in capsys.readouterr().err
    assert discover.main(["discover", *TINY, f"--workdir={tmp_path}", "--config.loop.no_such=1"]) == \
        discover.EXIT_USAGE
    assert "no_such" in capsys.readouterr().err
    assert discover.main(["discover", *TINY, f"--workdir={tmp_path}", "--llm=claude"]) == discover.EXIT_USAGE
    assert "claude" in capsys.readouterr().err
    bad = tmp_path / "bad.py"
    bad.write_text("import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict({'loop': {}})\n")
    assert discover.main(["discover", f"--config={bad}", f"--workdir={tmp_path}"]) == discover.EXIT_USAGE
    assert "no `seed` section" in capsys.readouterr().err
    assert discover.main(["discover", *TINY, f"--workdir={tmp_path}", "--config.loop.max_iterations=-3"]) == \
        discover.EXIT_USAGE
    assert "loop.max_iterations" in capsys.readouterr().err
    fresh = tmp_path / "fresh"  # settings are checked before the store is opened: nothing is left behind
    for flag, named in (("--config.engineer.first_step_timeout_s=-1", "first_step_timeout_s"),
                        ("--config.check.ops_impl=pallas", "ops_impl")):
        assert discover.main(["discover", *TINY, f"--workdir={fresh}", flag]) == discover.EXIT_USAGE
        assert named in capsys.readouterr().err
        assert not (fresh / "store.sqlite").exists() and not (fresh / "run.json").exists()
    f = tmp_path / "file"
    f.write_text("x")
    assert discover.main(["discover", *TINY, f"--workdir={f}"]) == discover.EXIT_USAGE
    assert discover.main(["discover", *TINY, f"--workdir={tmp_path}", "--store=nosuchdb://host/x"]) == \
        discover.EXIT_USAGE
    assert "cannot open --store=nosuchdb://host/x" in capsys.readouterr().err


def _start(workdir, *extra):
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "aira_jax.discover", *TINY, f"--workdir={workdir}", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_then_resume_to_the_leaderboard(tmp_path):
    workdir = tmp_path / "run"
    proc = _start(workdir, "--config.loop.max_iterations=1")
    events = workdir / "events.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (events.exists() and "seed design" in events.read_text()):
        time.sleep(0.2)
    time.sleep(1.0)                       # the seed's training child is starting
    proc.send_signal(signal.SIGINT)       # finish the current step ...
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)       # ... no: abandon it
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == discover.EXIT_INTERRUPTED, (out, err)
    assert "abandoning" in out or "interrupted" in out
    from aira_jax.discovery.store import ExperimentStore
    store = ExperimentStore(str(workdir / "store.sqlite"))
    seed_exp = store.experiments(design="deltanet")
    assert len(seed_exp) == 1 and seed_exp[0].status in ("checked", "training")
    assert seed_exp[0].claimed_by is None       # released: the resumed run takes it at once
    store.close()
    # Resume: the same command finishes the seed and the iteration, then prints the leaderboard.
    proc = _start(workdir, "--config.loop.max_iterations=1")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out, err[-3000:])
    assert "Leaderboard" in out and "deltanet" in out and "1 trained designs" in out
    assert "heuristic, no LLM" in out and "| training" in out            # plain progress lines
    rows = json.load(open(workdir / "leaderboard.json"))
    assert {r["name"] for r in rows} >= {"deltanet"} and len(rows) == 2
    assert all(r["val_loss"] is not None for r in rows)
    # ... and writes the report, whose leaderboard is the loop's.
    assert f"Report: {workdir / 'report.md'}" in out
    report = (workdir / "report.md").read_text(encoding="utf-8")
    child = next(r for r in rows if r["name"] != "deltanet")
    assert f": **[{child['name']}](#design-" in report and "| [deltanet](#design-deltanet) | (seed) |" in report
    assert json.load(open(workdir / "run.json"))["seed"] == "deltanet"
    store = ExperimentStore(str(workdir / "store.sqlite"))
    assert len(store.experiments(design="deltanet")) == 1   # the seed was resumed, not duplicated
    store.close()


@pytest.mark.parametrize("name", ["discover_tiny", "discover_explore"])
def test_configs_validate(name):
    import importlib.util
    from aira_jax.discovery import engineer
    from aira_jax.discovery.gates.config import settings_from_config
    from aira_jax.discovery.llm import llm_config_from
    from aira_jax.discovery.loop_settings import fitness_config, loop_settings, pool_config
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config()
    s = loop_settings(cfg)
    pool_config(cfg, seed_name="deltanet", scale=s.scale)
    fit = fitness_config(cfg)
    eng = engineer.settings_from_config(cfg)
    settings_from_config(cfg.check)
    llm = llm_config_from(cfg.llm)
    assert s.baseline_seeds == (0, 1, 2) and eng.seeds == (0,)
    if name == "discover_tiny":
        assert llm.backend == "offline" and fit.terms == ("loss", "judge") and eng.train.model.d_model == 128
    else:
        assert "benchmark" in fit.terms and eng.eval_tasks and eng.train.model.num_layers == 8
