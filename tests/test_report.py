"""The discovery report (aira_jax.report): what it says about a run built record by record, that it agrees with the
loop's own leaderboard, how it reads a run without run.json, and the CLI's errors."""
import json
import os
import re
import subprocess
import sys

import pytest

from aira_jax.discovery.failures import DIAGNOSTICS_MARKER, Failure
from aira_jax.discovery.fitness import FitnessConfig
from aira_jax.discovery.leaderboard import leaderboard_rows
from aira_jax.discovery.loop_context import StoreView
from aira_jax.discovery.records import (Analysis, CognitionRetrieval, Design, JudgeScore, KernelVerdict, Result,
                                        Status)
from aira_jax.discovery.store import ExperimentStore
from aira_jax.report import ReportError, RunInfo, open_run, read_run_info, report_workdir, write_run_info
from aira_jax.report import render
from aira_jax.report.collect import DesignRow, RunReport, stage_of

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_SRC = "class Mixer:\n    # the seed\n    def __call__(self, x):\n        return x\n"
FITNESS = {"terms": ["loss", "judge"], "relative_band": 0.25, "leakage_fraction": 0.25}


def _trained(store, name, parent, losses, *, src, judge=None, weak=(), curve=((10, 2.0), (20, 1.6)), ops=None):
    _, exp = store.propose(Design(name=name, kind="program", source=src, motivation=f"why {name}", parent=parent,
                                  meta={"operator": "mutation" if parent else "seed", "edits": ["edit_" + name],
                                        "iteration": 0 if parent else None}), scale="tiny")
    store.transition(exp.id, Status.CHECKED, reason="gates and review passed")
    claim = store.claim("w", scale="tiny")
    store.transition(exp.id, Status.TRAINING, claim=claim)
    store.add_result(exp.id, Result(val_loss=sum(losses) / len(losses), val_loss_per_seed=tuple(losses),
                                    seeds=tuple(range(len(losses))), num_params=1000, throughput=500.0, bpb=1.5,
                                    loss_curve=curve,
                                    meta={"summaries": {str(i): {"ops": ops} for i in range(len(losses))}}
                                    if ops else {}), claim=claim)
    store.release(claim)
    store.add_cognition(exp.id, CognitionRetrieval(entries=({"entry_id": "forget-gate", "text": "t"},),
                                                   stage="analysis", query="q"))
    store.add_analysis(exp.id, Analysis(text=f"analysis of {name}", meta={"weaknesses": list(weak)}))
    if judge is not None:
        store.add_judge_score(exp.id, JudgeScore(sub_scores={"performance": judge, "novelty": 5.0},
                                                 rationale=f"judged {name}", judge="test-judge"))
    return exp


def _stopped(store, name, parent, status, reason):
    _, exp = store.propose(Design(name=name, kind="program", source=SEED_SRC + f"# {name}\n", parent=parent),
                           scale="tiny")
    store.transition(exp.id, status, reason=reason)


@pytest.fixture
def run_dir(tmp_path):
    """A run: seed over 3 seeds, a better child A, A's worse child B, one rejection, one training failure."""
    store = ExperimentStore(str(tmp_path / "store.sqlite"))
    _trained(store, "seed", None, [1.35, 1.38, 1.32], src=SEED_SRC, judge=5.0)
    _trained(store, "a", "seed", [1.20], src=SEED_SRC.replace("return x", "return x * gate"), judge=8.0,
             weak=["no local attention"], curve=((10, 1.9), (20, 1.4)),
             ops={"kernels": ["delta_rule"], "self_test": {"ok": {"delta_rule": 0.0052}, "failed": {}, "seconds": 3.1}})
    b = _trained(store, "b", "a", [1.30], src=SEED_SRC.replace("return x", "return x * gate + conv"), judge=6.0,
                 ops={"kernels": [], "set_aside": {"delta_rule@gpu": "ValueError: smem overflow"}})
    store.add_kernel_verdict(b.id, KernelVerdict(op="simple_gla", scope="NVIDIA H200 (jax 0.11.2)", verdict="fault",
                                                 reason="runtime failure in experiment 2 (nan: loss)"))
    store.add_kernel_verdict(b.id, KernelVerdict(op="delta_rule", scope="NVIDIA H200 (jax 0.11.2)",
                                                 verdict="cleared"))
    _stopped(store, "c", "a", Status.REJECTED, "gate causality: output at position 3 depends on input 7")
    _stopped(store, "d", "seed", Status.FAILED,
             Failure("nan", "the training loss became nan at step 12", {"step": 12, "secret": "DIAG"}).reason())
    store.close()
    write_run_info(str(tmp_path), RunInfo(seed="seed", scale="tiny", fitness=FITNESS))
    with open(tmp_path / "llm_calls.jsonl", "w", encoding="utf-8") as f:
        for role, ok, cost in (("researcher", True, 0.01), ("researcher", False, 0.0), ("judge", True, 0.002)):
            f.write(json.dumps({"role": role, "ok": ok, "cost_usd": cost, "backend": "openai",
                                "usage": {"input_tokens": 100, "output_tokens": 10}}) + "\n")
        f.write("{not json\n")
    return tmp_path


def test_report_says_what_the_run_found(run_dir):
    path = report_workdir(str(run_dir), top=3)
    text = open(path, encoding="utf-8").read()
    # The leaderboard agrees with the loop's own ranking (same view, same fitness rules).
    es, view, info = open_run(str(run_dir))
    expected = [r.name for r in leaderboard_rows(view) if r.val_loss is not None]
    es.close()
    assert info == RunInfo(seed="seed", scale="tiny", fitness=FITNESS)
    board = [line for line in text.split("## Leaderboard")[1].split("##")[0].splitlines() if line.startswith("| ")]
    assert [line.split("[", 1)[1].split("]")[0] for line in board[1:]] == expected == ["a", "b", "seed"]
    assert "Best design: **[a](#design-a)**" in text and "±25% of the seed's loss" in text
    assert "4 proposals: 2 trained, 1 rejected, 1 failed" in text
    # Δ against the parent in noise floors: b is 0.10 worse than a; the seed's std is 0.03.
    b_row = next(line for line in board if "[b]" in line)
    assert b_row.split("|")[7].strip() == "-3.33"   # sample std (ddof 1) of the seed runs
    # Lineage: a under the seed, b and the rejected c under a.
    tree = text.split("## Lineage")[1].split("```")[1].splitlines()
    assert tree[1].startswith("seed  loss 1.3500")
    assert any(line.startswith("├── a  loss 1.2000") for line in tree)
    assert any(line.strip("│ ").startswith("├── b  loss 1.3000") for line in tree)
    assert any(line.strip("│ ").startswith("└── c  [rejected: gate causality]") for line in tree)
    assert any(line.startswith("└── d  [failed: training (nan)]") for line in tree)
    # Where proposals were stopped: by stage, with the message for people and no diagnostics JSON.
    assert "| gate causality | 1 | c | gate causality: output at position 3 depends on input 7 |" in text
    assert "| training (nan) | 1 | d | the training loss became nan at step 12 |" in text
    assert "DIAG" not in text and DIAGNOSTICS_MARKER.strip() not in text
    # The best design's card: motivation, analysis, weaknesses, cognition, judge, and its change against the seed.
    card = text.split('<a id="design-a"></a>')[1].split("<a id=")[0]
    assert "> why a" in card and "> analysis of a" in card and "- no local attention" in card
    assert "Cognition retrieved: forget-gate" in card and "**Judge** (test-judge): 6.50/10" in card
    assert "-        return x\n+        return x * gate" in card and card.count("```diff") == 1
    assert f"python -m aira_jax.gallery export --store={run_dir / 'store.sqlite'} --design=a" in card
    # Which op path each design trained with; a kernel set aside is said in the summary and on the card.
    assert ("Ops: Pallas kernels: delta_rule; self-tested against the XLA ops, worst relative RMS: delta_rule "
            "0.0052.") in card
    b_card = text.split('<a id="design-b"></a>')[1].split("<a id=")[0]
    assert "Ops: set aside for the XLA ops: delta_rule@gpu (ValueError: smem overflow)." in b_card
    assert ("**1 design(s) trained with the XLA ops because the Pallas kernel(s) delta_rule@gpu were set "
            "aside**") in text.split("## Leaderboard")[0]
    # The store's kernel verdicts: a kernel found faulty at run time is named with where and why; a clearance is not.
    assert re.search(r"Kernel found faulty at run time, set aside in every later run with that device and software: "
                     r"simple_gla on NVIDIA H200 \(jax 0\.11\.2\) \(experiment \d+: runtime failure in experiment 2 "
                     r"\(nan: loss\)\)\.", text)
    assert text.count("Kernel found faulty") == 1
    # LLM use per role, the malformed log line skipped.
    assert "| researcher | 2 | 1 | 200 | 20 | 0.0100 |" in text and "| judge | 1 | 0 |" in text
    assert "LLM backend: openai." in text
    # Figures and the machine-readable twin.
    for name in ("progress.png", "loss_curves.png"):
        with open(run_dir / "report_figures" / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"(report_figures/{name})" in text
    blob = json.load(open(run_dir / "report.json", encoding="utf-8"))
    assert [d["name"] for d in blob["designs"]] == ["seed", "a", "b", "c", "d"]
    assert all("source" not in d for d in blob["designs"])
    assert blob["designs"][1]["fitness"] == pytest.approx(next(r.fitness for r in leaderboard_rows(
        StoreView(ExperimentStore(str(run_dir / "store.sqlite")), seed_name="seed", scale="tiny",
                  fitness_cfg=FitnessConfig(**FITNESS))) if r.name == "a"))


def test_report_elsewhere_and_without_run_json(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    os.remove(run_dir / "run.json")
    path = report_workdir(str(run_dir), out_dir=str(out))
    text = open(path, encoding="utf-8").read()
    assert os.path.dirname(path) == str(out) and (out / "report_figures" / "progress.png").exists()
    assert "](report_figures/progress.png)" in text        # links are relative to where the report is
    assert "inferred: the workdir has no run.json" in text and "±10% of the seed's loss" in text
    # The run's own rules given explicitly (the CLI's --config) replace the guess.
    text = open(report_workdir(str(run_dir), info=RunInfo(seed="seed", scale="tiny", fitness=FITNESS)),
                encoding="utf-8").read()
    assert "inferred" not in text and "±25%" in text


def test_run_info_and_stage_parsing_fail_clearly(tmp_path):
    assert read_run_info(str(tmp_path)) is None
    with pytest.raises(ReportError, match="does not exist"):
        open_run(str(tmp_path / "x"))
    with pytest.raises(ReportError, match="no experiment store"):
        open_run(str(tmp_path))
    write_run_info(str(tmp_path), RunInfo(seed="s", scale="t", store="nosuchdb://u:***@host/db"))
    with pytest.raises(ReportError, match=r"cannot open the store .*pass --store=URL"):
        open_run(str(tmp_path))
    (tmp_path / "run.json").write_text("{\"scale\": 1}", encoding="utf-8")
    with pytest.raises(ReportError, match="run.json: unreadable"):
        read_run_info(str(tmp_path))
    os.remove(tmp_path / "run.json")
    (tmp_path / "compose.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ReportError, match="is a compose search .*compose.md"):
        open_run(str(tmp_path))
    os.remove(tmp_path / "compose.json")
    ExperimentStore(str(tmp_path / "store.sqlite")).close()
    with pytest.raises(ReportError, match="no seed design"):   # an empty store: nothing to report yet
        open_run(str(tmp_path))
    with pytest.raises(ReportError, match="bad fitness settings"):
        RunInfo(seed="s", scale="t", fitness={"terms": ["speed"]}).fitness_config()
    assert stage_of("rejected", "novelty: not novel (like a)") == ("novelty", "novelty: not novel (like a)")
    assert stage_of("rejected", "code checker: unsafe") == ("code checker", "code checker: unsafe")
    assert stage_of("failed", "something odd") == ("training", "something odd")
    assert stage_of("analysed", "") == ("", "")


def test_run_info_from_a_discovery_config_matches_what_the_loop_writes(tmp_path):
    """The report CLI's --config path: the same seed, scale and fitness rules as the loop's run.json."""
    from aira_jax.discovery.loop import DiscoveryLoop, run_info_from_config
    from aira_jax.discovery.progress import Progress
    from configs.discover_tiny import get_config
    cfg = get_config()
    info = run_info_from_config(cfg)
    assert info.seed == "deltanet" and info.fitness["relative_band"] == 0.25 and not info.inferred
    loop = DiscoveryLoop(cfg, str(tmp_path), progress=Progress(open(os.devnull, "w"), tty=False))
    loop.store.close()
    assert read_run_info(str(tmp_path)) == info


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "aira_jax.report", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_report_cli(run_dir, tmp_path_factory):
    missing = _cli(f"--workdir={run_dir / 'nope'}")
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: workdir")
    empty = _cli(f"--workdir={tmp_path_factory.mktemp('empty')}")
    assert empty.returncode == 2 and "error: no experiment store" in empty.stderr
    ok = _cli(f"--workdir={run_dir}", "--top=1")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(run_dir / "report.md")
    text = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "## The best 1 designs" in text and text.count("<a id=") == 1


def _row(name, parent, loss=None, status="analysed"):
    return DesignRow(name=name, parent=parent, status=status, reason="", stage="" if loss else "gate cost",
                     iteration=None, operator="", edits=(), fitness=None, val_loss=loss, val_loss_per_seed=(),
                     z_vs_seed=None, z_vs_parent=None, bpb=None, params=None, throughput=None, benchmarks={},
                     judge_total=None, judge_subscores={}, judge="", judge_rationale="", motivation="", analysis="",
                     weaknesses=(), cognition=(), loss_curve=(), source="x", created_at=None)


def _report(rows):
    return RunReport(workdir="/w", seed="g0", scale="t", noise_floor=None, seed_loss=None, seed_runs=0,
                     designs=tuple(rows), llm=(), backends=(), started_at=None, last_record_at=None)


def test_lineage_of_a_large_deep_run_folds_and_stops():
    # 1,500 generations in one line (deeper than Python's recursion limit), each with a rejected sibling leaf.
    rows = [_row("g0", None, 1.0)]
    for i in range(1, 1501):
        rows += [_row(f"g{i}", f"g{i - 1}", 1.0), _row(f"r{i}", f"g{i - 1}", status="rejected")]
    lines = render.lineage_lines(_report(rows))
    assert len(lines) == render.MAX_TREE_LINES + 1 and lines[-1].startswith("... (1101 more")
    assert lines[0].startswith("g0  loss 1.0000") and lines[0].endswith("(+1 stopped)")
    assert lines[2].strip().startswith("└── g2") and not any("r1" in line for line in lines)
    # A small run shows every design, rejected leaves included.
    small = render.lineage_lines(_report(rows[:5]))
    assert small == ["g0  loss 1.0000  Δseed -σ  fitness -", "├── g1  loss 1.0000  Δseed -σ  fitness -",
                     "│   ├── g2  loss 1.0000  Δseed -σ  fitness -", "│   └── r2  [rejected: gate cost]",
                     "└── r1  [rejected: gate cost]"]
