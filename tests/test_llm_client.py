"""The LLM client's loop, config, retries, cache, accounting and tools, through the offline backend (no network)."""
import dataclasses
import json
import random

import pytest

from aira_jax.discovery.llm import (AGENT_ROLES, BackendError, BackendRequest, BackendResponse, FailureKind,
                                    LLMClient, LLMConfig, LLMError, Message, OfflineBackend, PriceTable,
                                    ResponseCache, RetryConfig, ToolCall, Usage, Workspace, cache_key,
                                    default_llm_config, llm_config_from, make_backend, program_problems, schemas,
                                    tiered_models, workspace_tools)
from aira_jax.discovery.llm.config import GeminiConfig, OpenAIConfig
from aira_jax.discovery.llm.prompts import parse_template
from aira_jax.discovery.llm.retry import backoff_delay
from aira_jax.discovery.llm.structured import OutputError, check_schema, extract_json
from aira_jax.discovery.llm.tools import ToolError
from aira_jax.discovery.records import JudgeScore

FAST_RETRY = RetryConfig(max_attempts=3, initial_delay_s=0.01, max_delay_s=0.05, jitter=0.0)


def client_with(handlers, **cfg):
    sleeps = []
    cfg.setdefault("retry", FAST_RETRY)
    return LLMClient(LLMConfig(**cfg), offline_handlers=handlers, sleep=sleeps.append), sleeps


# ------------------------------------------------------------------------------------------ offline backend
def test_offline_dispatches_by_role_and_estimates_tokens():
    client, _ = client_with({"summarizer": lambda req: "short", "judge": lambda req: {"k": req.model}})
    a = client.complete("summarizer", "text " * 40)
    b = client.complete("judge", "x", schema={"type": "object"})
    assert a.ok and a.text == "short" and a.usage.input_tokens > 0 and a.cost_usd == 0.0
    assert b.data == {"k": "offline"}


def test_offline_missing_handler_is_typed_failure():
    client, sleeps = client_with({})
    reply = client.complete("analyst", "x")
    assert reply.failure.kind == FailureKind.NO_HANDLER and "analyst" in reply.failure.message and sleeps == []


def test_handler_errors_are_retried_or_reported_never_raised():
    calls = {"n": 0}

    def flaky(req):
        calls["n"] += 1
        if calls["n"] < 3:
            raise BackendError(FailureKind.SERVER_ERROR, "boom", status_code=503)
        return "recovered"

    def broken(req):
        raise ValueError("handler bug")

    client, sleeps = client_with({"a": flaky, "b": broken})
    ok = client.complete("a", "x")
    bad = client.complete("b", "x")
    assert ok.ok and ok.text == "recovered" and sleeps == [0.01, 0.02]
    assert bad.failure.kind == FailureKind.BACKEND_ERROR and "handler bug" in bad.failure.message
    assert [a.outcome for a in bad.record.attempts] == ["backend_error"]


def test_tool_loop_with_offline_agent():
    ws = Workspace({"parent.py": "print('parent')"}, read_only=["parent.py"])

    def researcher(req: BackendRequest):
        last = req.messages[-1]
        if last.role != "tool":
            return [ToolCall("1", "read_file", {"path": "parent.py"}), ToolCall("2", "nope", {})]
        if last.tool_call_id == "2":
            assert "no tool named" in last.content
            return ToolCall("3", "replace_in_file", {"path": "design.py", "old": "a", "new": "b"})
        return {"done": True}

    client, _ = client_with({"researcher": researcher})
    reply = client.complete("researcher", "go", tools=workspace_tools(ws), schema={"type": "object"})
    assert reply.ok and reply.data == {"done": True}
    assert [(r.name, r.ok) for r in reply.record.tool_runs] == [("read_file", True), ("nope", False),
                                                                 ("replace_in_file", False)]
    roles = [m.role for m in reply.messages]
    assert roles == ["system", "user", "assistant", "tool", "tool", "assistant", "tool", "assistant"]


def test_empty_reply_and_semantic_check_are_reasked():
    replies = iter(["", "too short", "long enough answer"])
    client, _ = client_with({"summarizer": lambda req: next(replies)}, max_reasks=2)
    reply = client.complete("summarizer", "x", check=lambda text: None if len(text) > 10 else "make it longer")
    assert reply.ok and reply.text == "long enough answer" and reply.record.reasks == 2
    assert "make it longer" in reply.messages[-2].content

    client, _ = client_with({"summarizer": lambda req: ""}, max_reasks=1)
    reply = client.complete("summarizer", "x")
    assert reply.failure.kind == FailureKind.EMPTY_REPLY


def test_refusal_from_offline_response():
    client, _ = client_with({"judge": lambda req: BackendResponse(refusal="no")})
    assert client.complete("judge", "x").failure.kind == FailureKind.REFUSED


def test_records_go_to_log_callback_and_memory(tmp_path):
    seen = []

    def bad_callback(record):
        seen.append(record)
        raise RuntimeError("store down")

    log = tmp_path / "calls.jsonl"
    client = LLMClient(LLMConfig(log_path=str(log)), offline_handlers={"judge": lambda r: "ok"},
                       on_record=bad_callback)
    r1 = client.complete("judge", "x", experiment=7)
    r2 = client.complete("missing", "x")
    assert r1.ok and not r2.ok and len(seen) == 2 and client.records == [r1.record, r2.record]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [d["ok"] for d in lines] == [True, False] and lines[0]["experiment"] == "7"
    assert lines[1]["failure"]["kind"] == "no_handler"


def test_prompt_version_is_recorded():
    prompt = parse_template("t", "=== system ===\nsys {a}\n=== user ===\nuser").render(a=1)
    client, _ = client_with({"t": lambda req: "x"})
    reply = client.complete("t", prompt)
    assert reply.record.prompt_version == prompt.version and len(prompt.version) == 12
    assert reply.messages[0] == Message("system", "sys 1")


def test_offline_backend_is_not_cached(tmp_path):
    n = {"calls": 0}

    def h(req):
        n["calls"] += 1
        return "x"

    client, _ = client_with({"a": h}, cache_dir=str(tmp_path / "c"))
    client.complete("a", "q")
    client.complete("a", "q")
    assert n["calls"] == 2 and client.cache is None


def test_cache_works_for_cacheable_backends(tmp_path):
    n = {"calls": 0}

    class Counting(OfflineBackend):
        name, cacheable = "counting", True

    def h(req):
        n["calls"] += 1
        return f"reply {n['calls']}"

    client = LLMClient(LLMConfig(cache_dir=str(tmp_path)), backend=Counting({"a": h}))
    assert client.complete("a", "q", seed=1).text == "reply 1"
    assert client.complete("a", "q", seed=1).text == "reply 1"
    assert client.complete("a", "q", seed=2).text == "reply 2"           # another sample: another seed
    assert client.complete("a", "q", seed=1, cache=False).text == "reply 3"
    assert n["calls"] == 3 and len(client.cache) == 2


# ------------------------------------------------------------------------------------------ cache, retry, prices
def test_cache_key_covers_what_changes_the_reply(tmp_path):
    base = BackendRequest(role="r", model="m", messages=(Message("user", "hi"),), temperature=0.5, seed=1)
    key = cache_key("gemini", base)
    variants = [dict(model="m2"), dict(messages=(Message("user", "hi!"),)), dict(temperature=0.7), dict(seed=2),
                dict(schema={"type": "object"}), dict(max_output_tokens=10)]
    for v in variants:
        assert cache_key("gemini", dataclasses.replace(base, **v)) != key, v
    assert cache_key("openai", base) != key
    assert cache_key("gemini", dataclasses.replace(base, timeout_s=1.0)) == key
    cache = ResponseCache(tmp_path)
    cache.put(key, base.key_material("gemini"), BackendResponse(text="t", usage=Usage(1, 2)))
    assert cache.get(key) == BackendResponse(text="t", usage=Usage(1, 2))
    (tmp_path / key[:2] / f"{key}.json").write_text("{torn")
    assert cache.get(key) is None


def test_backoff_grows_caps_jitters_and_honours_retry_after():
    cfg = RetryConfig(initial_delay_s=1.0, max_delay_s=8.0, multiplier=2.0, jitter=0.0)
    rng = random.Random(0)
    assert [backoff_delay(cfg, i, rng) for i in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff_delay(cfg, 0, rng, retry_after_s=5.0) == 5.0
    assert backoff_delay(cfg, 0, rng, retry_after_s=500.0) == 8.0     # a bad header cannot stall a worker
    jittered = RetryConfig(initial_delay_s=1.0, max_delay_s=8.0, jitter=0.5)
    delays = [backoff_delay(jittered, 2, rng) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 100


def test_price_table():
    table = PriceTable({"my-model": (1.0, 3.0)})
    assert table.cost("my-model", Usage(1_000_000, 1_000_000)) == (pytest.approx(4.0), True)
    assert table.price("gemini-2.5-flash-lite-001") == table.price("gemini-2.5-flash-lite")
    assert table.price("models/gemini-2.5-pro") == table.price("gemini-2.5-pro")
    assert table.cost("unknown-model", Usage(10, 10)) == (0.0, False)


def test_unpriced_model_is_flagged():
    client, _ = client_with({"a": lambda r: "x"}, default_model="mystery")
    reply = client.complete("a", "q")
    assert not reply.record.priced and client.summary()["total"]["unpriced_calls"] == 1


# ------------------------------------------------------------------------------------------ config
def test_config_dict_round_trip_and_sentinels():
    c = default_llm_config()
    c.backend = "openai"
    c.models.researcher = "big"      # what --config.llm.models.researcher=big does
    c.temperatures.judge = 0.2
    c.openai.base_url = "http://127.0.0.1:9/v1"
    c.retry.max_attempts = 7
    c.prices = {"big": (1.0, 2.0)}
    cfg = llm_config_from(c)
    assert cfg.backend == "openai" and cfg.model_for("researcher") == "big" and cfg.model_for("judge") == "offline"
    assert cfg.temperature_for("judge") == 0.2 and cfg.temperature_for("researcher") is None
    assert cfg.retry.max_attempts == 7 and cfg.seed is None and cfg.temperature is None
    assert cfg.max_output_tokens is None and cfg.prices == {"big": (1.0, 2.0)}
    assert cfg.openai.base_url.endswith("/v1")


def test_tiered_models_cover_every_role():
    models = tiered_models("strong", "fast")
    assert set(models) == set(AGENT_ROLES) and models["summarizer"] == "fast" and models["researcher"] == "strong"
    assert LLMConfig(models=models).model_for("judge") == "strong"


def test_gemini_native_schema_subset():
    from aira_jax.discovery.llm.backends.gemini import native_schema
    out = native_schema(schemas.CODE_CHECKER)
    assert out["properties"]["verdict"] == {"enum": ["pass", "fixed", "reject"], "type": "string"}
    assert "pattern" not in str(native_schema(schemas.RESEARCHER)) and "minLength" not in str(out)
    assert native_schema(schemas.JUDGE)["properties"]["sub_scores"]["additionalProperties"] is False


@pytest.mark.parametrize("bad, match", [
    (dict(backend="claude"), "llm.backend"), (dict(timeout_s=0), "timeout_s"), (dict(max_reasks=-1), "max_reasks"),
    (dict(prices={"m": (1.0,)}), "prices"), (dict(colour="red"), "unknown llm config fields"),
    (dict(retry={"max_attempts": 0}), "max_attempts"), (dict(retry={"tries": 2}), "unknown llm.retry"),
    (dict(openai={"response_format": "xml"}), "response_format"),
])
def test_config_errors_name_the_field(bad, match):
    with pytest.raises(LLMError, match=match):
        LLMConfig.from_config(bad)


def test_backend_construction_needs_credentials(monkeypatch):
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(LLMError, match="GEMINI_API_KEY"):
        make_backend(LLMConfig(backend="gemini"))
    with pytest.raises(LLMError, match="OPENAI_API_KEY"):
        make_backend(LLMConfig(backend="openai"))
    # Local OpenAI-compatible servers need no key; nothing is contacted at construction.
    local = OpenAIConfig(base_url="http://127.0.0.1:9/v1")
    assert make_backend(LLMConfig(backend="openai", openai=local)).name == "openai"
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    assert make_backend(LLMConfig(backend="gemini", gemini=GeminiConfig(base_url="http://127.0.0.1:9"))).cacheable
    with pytest.raises(LLMError, match="offline handlers"):
        make_backend(LLMConfig(backend="gemini"), offline_handlers={"a": lambda r: "x"})


def test_caller_mistakes_raise():
    client, _ = client_with({"a": lambda r: "x"})
    with pytest.raises(LLMError, match="invalid JSON schema"):
        client.complete("a", "q", schema={"type": "no-such-type"})
    with pytest.raises(LLMError, match="at least one message"):
        client.complete("a", [])
    with pytest.raises(LLMError, match="role"):
        client.complete("", "q")
    with pytest.raises(LLMError, match="unknown keys"):
        client.complete("a", [{"role": "user", "text": "q"}])


# ------------------------------------------------------------------------------------------ pieces
def test_extract_json_variants():
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('Here you go: {"a": {"b": [1, 2]}} hope it helps') == {"a": {"b": [1, 2]}}
    with pytest.raises(OutputError) as e:
        extract_json("{'a': 1}")
    assert e.value.kind == FailureKind.MALFORMED_OUTPUT
    with pytest.raises(LLMError):
        check_schema({"type": 3})


def test_workspace_rules():
    ws = Workspace({"a.py": "x = 1\nx = 1\n"}, read_only=["a.py"], max_file_chars=50)
    for path in ("../etc/passwd", "/abs", "a/../b", "", 3):
        with pytest.raises(ToolError, match="invalid path"):
            ws.read(path)
    with pytest.raises(ToolError, match="read-only"):
        ws.write("a.py", "y")
    with pytest.raises(ToolError, match="limit"):
        ws.write("b.py", "z" * 51)
    ws.write("b.py", "x = 1\nx = 1\n")
    tools = {t.name: t for t in workspace_tools(ws)}
    with pytest.raises(ToolError, match="occurs 2 times"):
        tools["replace_in_file"].fn(path="b.py", old="x = 1", new="y")
    assert ws.writes == ["b.py"]
    assert "write_file" not in {t.name for t in workspace_tools(ws, writable=False)}


GOOD = '''import jax
import jax.numpy as jnp
from flax import nnx
from aira_jax import ops


class Mixer(nnx.Module):
    def __init__(self, d_model, num_heads, *, rngs, **kwargs):
        pass

    def __call__(self, x):
        return x
'''


def test_program_problems():
    assert program_problems(GOOD) == []
    assert "no program" in program_problems("")[0]
    assert "does not parse" in program_problems("def (:")[0]
    assert any("forbidden import `os`" in p for p in program_problems("import os\n" + GOOD))
    assert any("aira_jax import ops" in p for p in program_problems(GOOD.replace("import ops", "import models")))
    assert program_problems(GOOD.replace("class Mixer", "class Other")) == ["no top-level `class Mixer(nnx.Module)`"]
    probs = program_problems(GOOD.replace("d_model, num_heads, *, rngs, **kwargs", "dim, rngs"))
    assert len(probs) == 2 and "must start (self, d_model, num_heads" in probs[0] and "**kwargs" in probs[1]


def test_judge_total_is_weighted_in_code():
    score = schemas.judge_score({"sub_scores": {"performance": 10, "novelty": 5, "efficiency": 5, "soundness": 5},
                                 "rationale": "x" * 30}, judge="m")
    assert isinstance(score, JudgeScore) and score.total == pytest.approx(0.4 * 10 + 0.6 * 5)
    assert sum(schemas.JUDGE_WEIGHTS.values()) == pytest.approx(1.0)
