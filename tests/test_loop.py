"""The discovery loop: offline end to end (fake trainer, fast), resume, Ctrl-C, leaderboard; then the real google-genai
and OpenAI clients against scripted local servers with failures, and a leaky design caught by the real gates."""
import io
import json
import math
import signal
import zlib

import pytest

from aira_jax.discovery import engineer as engineer_lib
from aira_jax.discovery import loop as loop_lib
from aira_jax.discovery.agents.evidence import read_evidence
from aira_jax.discovery.leaderboard import format_table, leaderboard_rows
from aira_jax.discovery.llm import LLMClient, LLMConfig, RetryConfig
from aira_jax.discovery.loop import DiscoveryLoop
from aira_jax.discovery.loop_context import StoreView
from aira_jax.discovery.loop_settings import ConfigError, loop_settings
from aira_jax.discovery.loop_workers import StopControl, write_resolved_config
from aira_jax.discovery.offline.genome import genome_of
from aira_jax.discovery.progress import Progress
from aira_jax.discovery.records import Result, Status
from aira_jax.discovery.store import TRAIN_QUEUE


def discovery_config(**loop):
    """configs/discover_tiny.py shrunk for tests: tiny training, 2 baseline seeds, the static gate only."""
    from configs.discover_tiny import get_config
    from tests.engineer_helpers import tiny_train_config
    c = get_config()
    c.seed.baseline_seeds = (0, 1)
    c.loop.update({"max_iterations": 2, "max_seconds": 0.0, "poll_s": 0.05, **loop})
    c.engineer.train = tiny_train_config()
    c.engineer.timeout_s = 120.0
    c.engineer.lease_s = 30.0
    c.engineer.heartbeat_s = 5.0
    c.check.stop_after = "static"
    c.check.d_model, c.check.num_heads, c.check.num_layers = 32, 2, 1
    return c


class FakeEngineer:
    """Stands in for the Engineer in fast tests: a pseudo-loss from the program (a forget gate helps), same store
    protocol (claim -> training -> result -> release)."""
    calls: list = []

    def __init__(self, store, settings, *, worker_id, debugger=None):
        self.store, self.settings, self.worker_id = store, settings, worker_id

    def work(self, *, stop=None, max_experiments=None, idle_exit=True):
        claim = self.store.claim(self.worker_id, statuses=TRAIN_QUEUE, lease_s=30.0, scale=self.settings.scale)
        if claim is None:
            return 0
        exp = self.store.transition(claim.experiment_id, Status.TRAINING, claim=claim)
        design = self.store.get_design(exp.design)
        g = genome_of(design.source)
        base = 1.20 - (0.05 if g is not None and g.decay != "none" else 0.0)
        jitter = (zlib.crc32(design.source.encode()) % 100) / 10000.0
        seeds = self.settings.seeds
        losses = [base + jitter + 0.01 * i for i in range(len(seeds))]
        self.store.add_result(exp.id, Result(val_loss=sum(losses) / len(losses), val_loss_per_seed=losses,
                                             seeds=seeds, num_params=1000, throughput=500.0), claim=claim)
        self.store.release(claim)
        FakeEngineer.calls.append((design.name, tuple(seeds)))
        return 1


@pytest.fixture
def fake_engineer(monkeypatch):
    FakeEngineer.calls = []
    monkeypatch.setattr(engineer_lib, "Engineer", FakeEngineer)
    return FakeEngineer


def run_loop(cfg, workdir, client=None, **kw):
    out = io.StringIO()
    loop = DiscoveryLoop(cfg, str(workdir), client=client, progress=Progress(out, tty=False), **kw)
    summary = loop.run()
    return loop, summary, out.getvalue()


# ------------------------------------------------------------------------------------------------ offline, fast
def test_offline_loop_end_to_end_and_resume(tmp_path, fake_engineer, monkeypatch):
    monkeypatch.setattr(loop_lib, "REPORT_EVERY_S", 0.0)
    loop, summary, out = run_loop(discovery_config(), tmp_path)
    live = open(tmp_path / "report.md", encoding="utf-8").read()   # refreshed while running, after analyses
    assert "## Leaderboard" in live and "deltanet" in live
    assert summary.stopped_because == "2 iterations done" and summary.trained == 2 and not summary.interrupted
    assert fake_engineer.calls[0] == ("deltanet", (0, 1))            # the seed first, over its baseline seeds
    assert all(seeds == (0,) for _, seeds in fake_engineer.calls[1:])
    store = loop.store
    designs = {d.name: d for d in store.designs()}
    kids = [d for d in designs.values() if d.parent is not None]
    assert len(kids) == 2 and all(d.meta["iteration"] in (0, 1) for d in kids)
    for d in kids:
        assert d.meta["agent"] == "offline-heuristic" and d.meta["edits"] and d.meta["gates"]["ok"]
        assert "offline evolutionary proposer" in d.motivation and d.meta["novelty"]["is_novel"]
    for e in store.experiments():
        assert e.status == Status.ANALYSED, (e.design, e.status, e.reason)
        a = store.analyses(e.id)[-1]
        assert a.meta["agent"] == "offline-heuristic" and a.meta["summary"] and a.text.startswith("[heuristic")
        assert [r.stage for r in store.cognition(e.id) if r.stage == "analysis"] == ["analysis"]
        assert store.judge_scores(e.id)[0].judge.startswith("offline-heuristic")
    # The second proposal saw the first one's outcome in its evidence and recent attempts.
    calls = [json.loads(line) for line in open(tmp_path / "llm_calls.jsonl")]
    assert {c["role"] for c in calls} >= {"researcher", "novelty_check", "code_checker", "analyst", "judge",
                                          "summarizer"}
    assert "deltanet" in summary.leaderboard and "Δ vs seed" in summary.leaderboard
    assert (tmp_path / "leaderboard.md").exists() and json.load(open(tmp_path / "leaderboard.json"))
    # run.json tells the report how this loop reads its store; the report ranks as the leaderboard does.
    info = json.load(open(tmp_path / "run.json"))
    assert info["seed"] == "deltanet" and info["fitness"]["terms"] == ["loss", "judge"] and info["scale"] == "tiny"
    report = open(loop.report(), encoding="utf-8").read()
    top = leaderboard_rows(loop.view())[0]
    assert f"| 1 | [{top.name}](#design-{top.name})" in report and f'<a id="design-{top.name}"></a>' in report
    assert "iter 1/2 | researcher" in out and "trained 2" in out   # plain progress lines (not a TTY)
    # Resume with a larger budget: only the new iterations run; nothing is retrained.
    loop.store.close()
    n_calls = len(fake_engineer.calls)
    cfg = discovery_config(max_iterations=3)
    loop2, summary2, _ = run_loop(cfg, tmp_path)
    assert summary2.iterations == 1 and summary2.trained == 3
    assert len(fake_engineer.calls) == n_calls + 1
    its = sorted(d.meta.get("iteration") for d in loop2.store.designs() if d.parent)
    assert its == [0, 1, 2]
    loop2.store.close()


@pytest.mark.postgres
def test_loop_on_a_postgres_store_records_it_for_the_report(tmp_path, fake_engineer, postgres_url):
    """`discover --store=postgresql://...`: the loop runs on the server; run.json and the report name that store."""
    from aira_jax.discovery.store import ExperimentStore
    loop, summary, _ = run_loop(discovery_config(max_iterations=1), tmp_path, store=ExperimentStore(postgres_url))
    assert summary.trained == 1 and not (tmp_path / "store.sqlite").exists()
    info = json.load(open(tmp_path / "run.json"))
    assert info["store"].startswith("postgresql") and info["store"] == loop.store.url
    report = open(loop.report(), encoding="utf-8").read()
    assert f"gallery export --store={loop.store.url} --design=" in report
    loop.store.close()


def test_resume_finishes_interrupted_steps(tmp_path, fake_engineer):
    loop, _, _ = run_loop(discovery_config(max_iterations=1), tmp_path)
    store = loop.store
    kid = next(d for d in store.designs() if d.parent)
    # Simulate a crash after a proposal was stored but before its status moved, and a trained-but-unanalysed run.
    from aira_jax.discovery.records import Design
    d2, e2 = store.propose(Design(name="half-done", kind="program", source=kid.source + "\n# v2\n",
                                  parent="deltanet", meta={"iteration": 1, "outcome": "checked"}), scale="tiny")
    loop2, summary, _ = run_loop(discovery_config(max_iterations=2), tmp_path)
    e2 = loop2.store.get_experiment(e2.id)
    assert e2.status == Status.ANALYSED and loop2.store.judge_scores(e2.id)
    assert summary.iterations == 0   # iteration 1 was already taken by the half-done proposal


def test_stop_request_finishes_the_step_and_keeps_everything(tmp_path, fake_engineer):
    cfg = discovery_config(max_iterations=5)
    stop = StopControl()
    loop = DiscoveryLoop(cfg, str(tmp_path), progress=Progress(io.StringIO(), tty=False), stop=stop)
    real = loop.proposals.run

    def run_then_stop(view, it):
        out = real(view, it)
        stop.request_stop()   # as a first Ctrl-C during the iteration would
        return out
    loop.proposals.run = run_then_stop
    summary = loop.run()
    assert summary.stopped_because == "stop requested" and summary.iterations == 1 and not summary.interrupted
    kid = next(e for e in loop.store.experiments() if e.design != "deltanet")
    assert kid.status == Status.CHECKED   # queued, not lost: the next run trains it
    loop.store.close()
    loop2, summary2, _ = run_loop(discovery_config(max_iterations=1), tmp_path)
    assert loop2.store.get_experiment(kid.id).status == Status.ANALYSED and summary2.iterations == 0


def test_stop_control_signals():
    notes = []
    stop = StopControl(notes.append)
    stop._handle(signal.SIGINT, None)
    assert stop.requested and not stop.abandon.is_set()
    stop.in_training = True
    stop._handle(signal.SIGINT, None)        # abandons the training step without raising
    assert stop.abandon.is_set()
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGINT, None)
    fresh = StopControl()
    with pytest.raises(KeyboardInterrupt):
        fresh._handle(signal.SIGTERM, None)  # outside training, SIGTERM interrupts at once
    assert len(notes) == 3


def test_config_errors_name_the_field(tmp_path):
    cfg = discovery_config()
    cfg.loop.max_iterations = -1
    with pytest.raises(ConfigError, match="loop.max_iterations"):
        loop_settings(cfg)
    cfg = discovery_config()
    with cfg.unlocked():
        cfg.loop.frobnicate = 1
    with pytest.raises(ConfigError, match="frobnicate"):
        loop_settings(cfg)
    cfg = discovery_config()
    cfg.seed.design = "no_such_baseline"
    loop = DiscoveryLoop(cfg, str(tmp_path), progress=Progress(io.StringIO(), tty=False))
    with pytest.raises(loop_lib.LoopError, match="no_such_baseline"):
        loop._ensure_seed()
    loop.store.close()


def test_resolved_config_file_loads_back(tmp_path):
    import importlib.util
    cfg = discovery_config()
    path = write_resolved_config(cfg, str(tmp_path / "resolved.py"))
    spec = importlib.util.spec_from_file_location("resolved", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    back = mod.get_config()
    assert back.loop.max_iterations == 2 and back.engineer.train.model.d_model == 32
    assert engineer_lib.settings_from_config(back).seeds == (0,)


def test_leaderboard_and_progress(tmp_path, fake_engineer):
    loop, summary, _ = run_loop(discovery_config(max_iterations=2), tmp_path)
    v = StoreView(loop.store, seed_name="deltanet", scale="tiny", fitness_cfg=loop.fitness_cfg)
    rows = leaderboard_rows(v)
    assert rows[0].fitness == max(r.fitness for r in rows if r.fitness is not None)
    seed = next(r for r in rows if r.name == "deltanet")
    assert seed.parent == "(seed)" and abs(seed.delta_z) < 1e-9 and seed.params == 1000
    gated = [r for r in rows if r.parent == "deltanet" and genome_of(v.designs[r.name].source).decay != "none"]
    for r in gated:   # the fake trainer gives a forget gate 0.05 lower loss; the seed's std is 0.00707
        assert r.delta_z > 3
    table = format_table(rows, top=2, noise_floor=v.baseline.loss_std, seed_loss=v.baseline.loss_mean)
    assert len(table.splitlines()) == 2 + 2 + 1 and "noise floor" in table
    buf = io.StringIO()
    p = Progress(buf, tty=True)
    p.update(stage="training", design="x", iteration=1, max_iterations=3)
    p.event("hello")
    p.close()
    assert "\r\x1b[2K" in buf.getvalue() and "hello\n" in buf.getvalue() and "iter 1/3" in buf.getvalue()
    loop.store.close()


# ------------------------------------------------------------------------------------------------ real clients
def _role_router(dialect, server, failures):
    """Answers each request from its evidence block, like the offline agents would, but over the wire; injects the
    scripted failures (role -> list of Scripted steps or markers) first."""
    from aira_jax.discovery.offline.handlers import offline_handlers
    from aira_jax.discovery.llm import BackendRequest, Message, ToolCall
    handlers = offline_handlers(seed=0)

    def messages_of(req):
        text = dialect.sent_text(req)
        out = [Message("user", text)]
        # Rebuild the tool conversation: calls the model made and their results.
        for m in dialect.sent_messages(req):
            if dialect.name == "openai":
                for tc in m.get("tool_calls") or ():
                    out.append(Message("assistant", "", (ToolCall(tc["id"], tc["function"]["name"],
                                                                   json.loads(tc["function"]["arguments"])),)))
                if m["role"] == "tool":
                    out.append(Message("tool", m["content"], tool_call_id=m["tool_call_id"], name="?"))
            else:
                for p in m.get("parts", []):
                    if "functionCall" in p:
                        fc = p["functionCall"]
                        out.append(Message("assistant", "", (ToolCall(fc.get("id") or fc["name"], fc["name"],
                                                                       fc.get("args") or {}),)))
                    if "functionResponse" in p:
                        fr = p["functionResponse"]
                        out.append(Message("tool", fr["response"]["result"], tool_call_id=fr.get("id") or fr["name"],
                                           name=fr["name"]))
        return out

    class Router:
        def __bool__(self):
            return True

        def pop(self, _i):
            req = server.requests[-1]
            msgs = messages_of(req)
            kind = read_evidence(msgs).get("kind", "?")
            role = {"novelty": "novelty_check"}.get(kind, kind)
            queue = failures.get(role)
            if queue:
                return queue.pop(0)
            out = handlers[role](BackendRequest(role=role, model="m", messages=tuple(msgs)))
            if isinstance(out, ToolCall):
                out = [out]
            if isinstance(out, list):
                return dialect.tool_calls([(c.id, c.name, c.arguments) for c in out])
            return dialect.text(json.dumps(out))

    return Router()


# The real trainer under both clients is slow (three trainings, ~40 s): the fast variants train with the fake
# Engineer; real training in the loop is covered by the leaky-design test below and by test_discover_cli.
@pytest.mark.parametrize("backend,trainer", [("openai", "fake"), ("gemini", "fake"),
                                             pytest.param("openai", "real", marks=pytest.mark.slow),
                                             pytest.param("gemini", "real", marks=pytest.mark.slow)])
def test_loop_with_real_clients_and_bad_replies(tmp_path, monkeypatch, backend, trainer):
    from aira_jax.discovery.llm.backends.gemini import GeminiBackend
    from aira_jax.discovery.llm.backends.openai_compat import OpenAICompatBackend
    from aira_jax.discovery.llm.config import GeminiConfig, OpenAIConfig
    from tests.llm_fakes import GeminiDialect, OpenAIDialect, Scripted, ScriptedServer
    dialect = {"openai": OpenAIDialect, "gemini": GeminiDialect}[backend]
    failures = {
        "researcher": [dialect.error(429, "slow down", {"retry-after": "0"}),   # retried
                       dialect.text('{"name": "oops", "motivation": '),          # malformed: re-asked
                       dialect.text(json.dumps({                                 # no code written: re-asked
                           "name": "no-code", "summary": "forgot to write the program",
                           "motivation": "A design whose program was never written to design.py at all."})),
                       ],
        "novelty_check": [dialect.refusal("I won't judge that.")],               # refused: passes as novel
        "code_checker": [Scripted(dialect.text("{}").body, delay_s=2.0),         # timeout, retried
                         Scripted(dialect.text("{}").body, delay_s=2.0)],        # ... twice: review skipped
        "judge": [dialect.text(json.dumps({"sub_scores": {"performance": 11}, "rationale": "too high!!"}))],
        "analyst": [dialect.text("no json here at all")] * 3,                    # fails: heuristic fallback
    }
    if trainer == "fake":
        FakeEngineer.calls = []
        monkeypatch.setattr(engineer_lib, "Engineer", FakeEngineer)
    cfg = discovery_config(max_iterations=2)
    cfg.seed.baseline_seeds = (0,)   # one seed run: this test is about the LLM side (no noise floor needed)
    with ScriptedServer() as srv:
        srv.script = _role_router(dialect, srv, failures)
        if backend == "gemini":
            be = GeminiBackend(GeminiConfig(base_url=srv.url), timeout_s=1.0, api_key="k")
        else:
            be = OpenAICompatBackend(OpenAIConfig(base_url=srv.url + "/v1"), timeout_s=1.0, api_key="k")
        client = LLMClient(LLMConfig(backend=backend, default_model="m", timeout_s=1.0, max_reasks=2,
                                     retry=RetryConfig(max_attempts=2, initial_delay_s=0.0, jitter=0.0),
                                     log_path=str(tmp_path / "llm_calls.jsonl")), backend=be, sleep=lambda s: None)
        loop, summary, out = run_loop(cfg, tmp_path, client=client)
    assert summary.trained == 2 and summary.stopped_because == "2 iterations done", out
    recs = [json.loads(line) for line in open(tmp_path / "llm_calls.jsonl")]
    outcomes = [a["outcome"] for r in recs for a in r["attempts"]]
    assert "rate_limited" in outcomes and "timeout" in outcomes
    assert any(r["role"] == "researcher" and r["reasks"] == 2 and r["ok"] for r in recs)
    assert any("unchanged from the parent" in dialect.sent_text(q) for q in srv.requests)
    failed = {(r["role"], r["failure"]["kind"]) for r in recs if not r["ok"]}
    assert ("novelty_check", "refused") in failed and ("code_checker", "timeout") in failed
    assert ("analyst", "malformed_output") in failed
    assert any(r["role"] == "judge" and r["ok"] and r["reasks"] == 1 for r in recs)
    kids = [d for d in loop.store.designs() if d.parent]
    assert kids[0].meta["novelty"]["by"] == "failed-call" and kids[0].meta["code_checker"]["verdict"] == "skipped"
    seed_exp = loop.store.experiments(design="deltanet")[0]   # the first analysis: the seed's, after 3 bad replies
    assert loop.store.analyses(seed_exp.id)[0].meta.get("fallback") is True
    assert all(e.status == Status.ANALYSED for e in loop.store.experiments())
    for e in loop.store.experiments():
        assert math.isfinite(loop.store.result(e.id).val_loss)
    loop.store.close()


LEAKY = '''"""Mixes each position with the NEXT one: a leak of the future."""
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):
    def __init__(self, d_model, num_heads, *, rngs, **kwargs):
        self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

    def __call__(self, x):
        nxt = jnp.concatenate([x[:, 1:], jnp.zeros_like(x[:, :1])], axis=1)
        return self.proj(x + nxt)
'''
CAUSAL = LEAKY.replace("the NEXT one: a leak of the future", "the PREVIOUS one (causal)").replace(
    "nxt = jnp.concatenate([x[:, 1:], jnp.zeros_like(x[:, :1])], axis=1)",
    "nxt = jnp.concatenate([jnp.zeros_like(x[:, :1]), x[:, :-1]], axis=1)").replace("x + nxt", "x + nxt")


def test_leaky_design_is_rejected_and_the_feedback_reaches_the_rewrite(tmp_path):
    from aira_jax.discovery.llm import ToolCall
    from aira_jax.discovery.offline.handlers import offline_handlers
    seen = []

    def researcher(request):
        seen.append(request)
        wrote = [c for m in request.messages if m.role == "assistant" for c in m.tool_calls]
        rewrite = "REWRITE REQUEST" in request.messages[1].content
        if not wrote:
            return ToolCall("w", "write_file", {"path": "design.py", "content": CAUSAL if rewrite else LEAKY})
        return {"name": "shift-mix-fixed" if rewrite else "shift-mix",
                "motivation": "Mix every token with its neighbour so that bigrams are visible to the memory.",
                "summary": "neighbour mixing"}

    handlers = {**offline_handlers(), "researcher": researcher}
    client = LLMClient(LLMConfig(log_path=str(tmp_path / "llm_calls.jsonl")), offline_handlers=handlers)
    cfg = discovery_config(max_iterations=1)
    cfg.check.stop_after = "causality"   # the real sandboxed gates up to the causality gate
    loop, summary, out = run_loop(cfg, tmp_path, client=client)
    designs = {d.name: d for d in loop.store.designs()}
    leaky = loop.store.experiments(design="shift-mix")[0]
    assert leaky.status == Status.REJECTED and "causality" in leaky.reason
    reason = designs["shift-mix"].meta["gates"]["reason"]
    # The rejection reason reaches the Researcher's next request, and the rewrite is accepted and trained.
    assert len(seen) == 4 and reason[:80] in seen[2].messages[1].content
    assert read_evidence(seen[2].messages)["feedback"]["gate"] == "causality"
    fixed = loop.store.experiments(design="shift-mix-fixed")[0]
    assert fixed.status == Status.ANALYSED and math.isfinite(loop.store.result(fixed.id).val_loss)
    assert designs["shift-mix-fixed"].meta["attempt"] == 1 and summary.trained == 1
    assert "rejected at causality" in out
    loop.store.close()


def test_duplicate_is_broken_and_a_review_fix_is_regated(tmp_path, fake_engineer):
    from aira_jax.discovery.llm import ToolCall
    from aira_jax.discovery.offline.handlers import offline_handlers
    handlers = offline_handlers()
    verdicts = [{"is_novel": False, "most_similar": "deltanet", "similarity": 0.95,
                 "reason": "only a renamed forget gate; the pool already explores decay"}]

    def novelty(request):
        return verdicts.pop(0) if verdicts else handlers["novelty_check"](request)

    def checker(request):   # fixes every program by changing the norm epsilon, then says so
        wrote = [c for m in request.messages if m.role == "assistant" for c in m.tool_calls if c.name == "write_file"]
        reads = [m.content for m in request.messages if m.role == "tool"]
        if not reads:
            return ToolCall("r", "read_file", {"path": "design.py"})
        if not wrote:
            return ToolCall("w", "write_file", {"path": "design.py",
                                                "content": reads[0].replace("norm_eps: float = 1e-5",
                                                                            "norm_eps: float = 1e-6")})
        return {"verdict": "fixed", "issues": [{"category": "numerics", "description": "epsilon 1e-6"}]}

    client = LLMClient(LLMConfig(log_path=str(tmp_path / "calls.jsonl")),
                       offline_handlers={**handlers, "novelty_check": novelty, "code_checker": checker})
    loop, summary, out = run_loop(discovery_config(max_iterations=1), tmp_path, client=client)
    kids = [d for d in loop.store.designs() if d.parent]
    rejected = [d for d in kids if loop.store.experiments(design=d.name)[0].status == Status.REJECTED]
    accepted = [d for d in kids if d not in rejected]
    assert len(rejected) == 1 and len(accepted) == 1
    assert "novelty: not novel" in loop.store.experiments(design=rejected[0].name)[0].reason
    a = accepted[0]
    assert a.meta["rewrite_of"] == rejected[0].name and a.meta["operator"] == "break_pattern"
    assert a.meta["broken_pattern"] and a.meta["code_checker"]["verdict"] == "fixed"
    assert a.meta["code_checker"]["fix_gates"]["ok"] and "norm_eps: float = 1e-6" in a.source
    assert summary.trained == 1
    loop.store.close()
