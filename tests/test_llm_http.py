"""The REAL google-genai and openai clients against scripted local HTTP servers (127.0.0.1, random port).

Every scenario runs for both wire formats: completions, tool calls, malformed JSON, missing fields, missing code,
refusals, timeouts, HTTP 429/5xx/4xx, connection errors, the on-disk cache and cost accounting. Each case must
end in a completed call or a typed failure after bounded retries, recorded, without raising.
"""
import json

import pytest

from aira_jax.discovery.llm import (FailureKind, LLMClient, LLMConfig, RetryConfig, Workspace, render_prompt,
                                    schemas, workspace_program_check, workspace_tools)
from aira_jax.discovery.llm.backends.gemini import GeminiBackend
from aira_jax.discovery.llm.backends.openai_compat import OpenAICompatBackend
from aira_jax.discovery.llm.config import GeminiConfig, OpenAIConfig
from tests.llm_fakes import GeminiDialect, OpenAIDialect, ScriptedServer, closed_port_url

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "minLength": 1},
                                          "score": {"type": "number"}},
          "required": ["answer", "score"]}
PROGRAM = '''import jax
from flax import nnx
from aira_jax import ops


class Mixer(nnx.Module):
    def __init__(self, d_model, num_heads, *, rngs, **kwargs):
        self.proj = nnx.Linear(d_model, d_model, rngs=rngs)

    def __call__(self, x):
        return self.proj(x)
'''
RESEARCHER_JSON = json.dumps({
    "name": "test-design", "summary": "a linear projection mixer",
    "motivation": "A deliberately trivial mixer used to test the tool-calling loop end to end."})


@pytest.fixture(params=["gemini", "openai"])
def dialect(request):
    return {"gemini": GeminiDialect, "openai": OpenAIDialect}[request.param]


def make_client(dialect, url, *, tmp_path=None, timeout_s=5.0, attempts=3, **cfg):
    sleeps = []
    if dialect.name == "gemini":
        backend = GeminiBackend(GeminiConfig(base_url=url), timeout_s=timeout_s, api_key="test-key")
    else:
        backend = OpenAICompatBackend(OpenAIConfig(base_url=url + "/v1"), timeout_s=timeout_s, api_key="test-key")
    config = LLMConfig(backend=dialect.name, default_model="test-model", timeout_s=timeout_s,
                       retry=RetryConfig(max_attempts=attempts, initial_delay_s=0.5, max_delay_s=4.0, jitter=0.0),
                       cache_dir=str(tmp_path / "cache") if tmp_path is not None else "", **cfg)
    client = LLMClient(config, backend=backend, sleep=sleeps.append)
    return client, sleeps


def test_completion_with_schema(dialect):
    with ScriptedServer([dialect.text('{"answer": "yes", "score": 7}', input_tokens=100, output_tokens=20)]) as srv:
        client, _ = make_client(dialect, srv.url, temperature=0.3, seed=11)
        reply = client.complete("judge", [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q?"}],
                                schema=SCHEMA)
    assert reply.ok and reply.failure is None
    assert reply.data == {"answer": "yes", "score": 7}
    assert reply.usage.input_tokens == 100 and reply.usage.output_tokens == 20
    assert len(srv.requests) == 1
    req = srv.requests[0]
    sent = dialect.sent_text(req)
    assert "be brief" in sent and "q?" in sent and '"required"' in sent   # the schema is stated in the prompt
    if dialect.name == "openai":
        assert req.json["model"] == "test-model" and req.json["temperature"] == 0.3 and req.json["seed"] == 11
        assert req.json["response_format"]["type"] == "json_schema"
    else:
        assert "test-model:generateContent" in req.path
        gen = req.json["generationConfig"]
        assert gen["temperature"] == 0.3 and gen["seed"] == 11 and gen["responseMimeType"] == "application/json"
        # Gemini gets the subset of JSON schema it understands; the client validates the full schema.
        assert gen["responseJsonSchema"]["properties"]["answer"] == {"type": "string"}
    rec = reply.record
    assert rec.ok and rec.turns == 1 and [a.outcome for a in rec.attempts] == ["ok"]


def test_tool_calls_edit_workspace(dialect):
    ws = Workspace({"parent.py": "# parent program\n"}, read_only=["parent.py"])
    script = [dialect.tool_calls([("c1", "read_file", {"path": "parent.py"})]),
              dialect.tool_calls([("c2", "write_file", {"path": "design.py", "content": PROGRAM}),
                                  ("c3", "write_file", {"path": "parent.py", "content": "x"})]),
              dialect.text(RESEARCHER_JSON)]
    with ScriptedServer(script) as srv:
        client, _ = make_client(dialect, srv.url)
        prompt = render_prompt("researcher", parent_name="gated_deltanet", parent_summary="the seed",
                               parent_results="val_loss 3.10", parent_analysis="", references="", cognition="",
                               recent_attempts="(none)", budget="20M parameters, 1B tokens", operator="")
        reply = client.complete("researcher", prompt, schema=schemas.RESEARCHER, tools=workspace_tools(ws),
                                check=workspace_program_check(ws))
    assert reply.ok, reply.failure
    assert reply.data["name"] == "test-design" and reply.record.prompt_version == prompt.version
    assert "class Mixer(nnx.Module)" in dialect.sent_text(srv.requests[0])
    assert ws.get("design.py") == PROGRAM and ws.get("parent.py") == "# parent program\n"
    assert len(srv.requests) == 3
    first_results = dialect.tool_results(srv.requests[1])
    assert first_results == [("c1", "# parent program\n")]
    second_results = dict(dialect.tool_results(srv.requests[2]))
    assert second_results["c2"].startswith("wrote design.py") and "read-only" in second_results["c3"]
    if dialect.name == "gemini":
        # The model's turn is replayed verbatim, thought signature included.
        model_turns = [c for c in srv.requests[1].json["contents"] if c["role"] == "model"]
        assert model_turns[0]["parts"][0]["thoughtSignature"] == "c2lnbmF0dXJl"
    else:
        assert srv.requests[1].json["tools"][0]["function"]["name"] == "read_file"
    runs = reply.record.tool_runs
    assert [(r.name, r.ok) for r in runs] == [("read_file", True), ("write_file", True), ("write_file", False)]
    assert reply.record.turns == 3


def test_malformed_json_is_reasked_then_succeeds(dialect):
    script = [dialect.text("Sure! here it is: {answer: yes"), dialect.text('{"answer": "ok", "score": 1}')]
    with ScriptedServer(script) as srv:
        client, _ = make_client(dialect, srv.url)
        reply = client.complete("judge", "q", schema=SCHEMA)
    assert reply.ok and reply.data["answer"] == "ok" and reply.record.reasks == 1
    assert "not valid JSON" in dialect.sent_text(srv.requests[1])


def test_malformed_json_ends_in_typed_failure(dialect):
    with ScriptedServer([dialect.text("no json here")] * 3) as srv:
        client, _ = make_client(dialect, srv.url, max_reasks=2)
        reply = client.complete("judge", "q", schema=SCHEMA)
    assert not reply.ok and reply.failure.kind == FailureKind.MALFORMED_OUTPUT
    assert len(srv.requests) == 3 and reply.record.reasks == 2 and not reply.record.ok
    with pytest.raises(Exception, match="malformed_output"):
        reply.raise_for_failure()


def test_missing_field_is_reasked_with_the_violation(dialect):
    with ScriptedServer([dialect.text('{"answer": "x"}'), dialect.text('{"answer": "x", "score": "high"}'),
                         dialect.text('{"answer": "x", "score": 3}')]) as srv:
        client, _ = make_client(dialect, srv.url, max_reasks=2)
        reply = client.complete("judge", "q", schema=SCHEMA)
    assert reply.ok and reply.data["score"] == 3 and reply.record.reasks == 2
    assert "'score' is a required property" in dialect.sent_text(srv.requests[1])
    assert "is not of type 'number'" in dialect.sent_text(srv.requests[2])


def test_missing_field_ends_in_schema_violation(dialect):
    with ScriptedServer([dialect.text('{"answer": "x"}')] * 2) as srv:
        client, _ = make_client(dialect, srv.url, max_reasks=1)
        reply = client.complete("judge", "q", schema=SCHEMA)
    assert reply.failure.kind == FailureKind.SCHEMA_VIOLATION and len(srv.requests) == 2


def test_missing_code_is_reasked_until_written(dialect):
    ws = Workspace()
    script = [dialect.text(RESEARCHER_JSON),                       # claims a design but wrote no program
              dialect.tool_calls([("w1", "write_file", {"path": "design.py", "content": PROGRAM})]),
              dialect.text(RESEARCHER_JSON)]
    with ScriptedServer(script) as srv:
        client, _ = make_client(dialect, srv.url)
        reply = client.complete("researcher", "propose", schema=schemas.RESEARCHER, tools=workspace_tools(ws),
                                check=workspace_program_check(ws))
    assert reply.ok and ws.get("design.py") == PROGRAM and reply.record.reasks == 1
    assert "no program" in dialect.sent_text(srv.requests[1])


def test_missing_code_ends_in_check_failure(dialect):
    ws = Workspace()
    with ScriptedServer([dialect.text(RESEARCHER_JSON)] * 2) as srv:
        client, _ = make_client(dialect, srv.url, max_reasks=1)
        reply = client.complete("researcher", "propose", schema=schemas.RESEARCHER, tools=workspace_tools(ws),
                                check=workspace_program_check(ws))
    assert reply.failure.kind == FailureKind.CHECK_FAILED and "design.py" in reply.failure.message


def test_refusal_is_a_typed_failure_without_retry(dialect):
    with ScriptedServer([dialect.refusal()]) as srv:
        client, sleeps = make_client(dialect, srv.url)
        reply = client.complete("researcher", "q", schema=SCHEMA)
    assert reply.failure.kind == FailureKind.REFUSED and len(srv.requests) == 1 and sleeps == []


def test_gemini_blocked_prompt_is_a_refusal():
    with ScriptedServer([GeminiDialect.blocked_prompt()]) as srv:
        client, _ = make_client(GeminiDialect, srv.url)
        reply = client.complete("researcher", "q")
    assert reply.failure.kind == FailureKind.REFUSED and "blocked" in reply.failure.message


def test_rate_limit_is_retried_with_backoff_and_retry_after(dialect):
    script = [dialect.error(429, "slow down", {"Retry-After": "3"}), dialect.error(429, "slow down"),
              dialect.text("done")]
    with ScriptedServer(script) as srv:
        client, sleeps = make_client(dialect, srv.url, attempts=3)
        reply = client.complete("summarizer", "q")
    assert reply.ok and reply.text == "done" and len(srv.requests) == 3
    assert sleeps == [3.0, 1.0]   # Retry-After floor for the first, then 0.5 * 2 ** 1 with no jitter
    outcomes = [(a.outcome, a.status_code) for a in reply.record.attempts]
    assert outcomes == [("rate_limited", 429), ("rate_limited", 429), ("ok", None)]
    assert client.summary()["total"]["requests"] == 3


def test_rate_limit_ends_in_typed_failure(dialect):
    with ScriptedServer([dialect.error(429, "quota")] * 3) as srv:
        client, sleeps = make_client(dialect, srv.url, attempts=3)
        reply = client.complete("summarizer", "q")
    assert reply.failure.kind == FailureKind.RATE_LIMITED and reply.failure.status_code == 429
    assert len(srv.requests) == 3 and len(sleeps) == 2 and len(reply.record.attempts) == 3


def test_server_error_retried_and_bad_request_not(dialect):
    script = [dialect.error(503, "overloaded"), dialect.text("fine"), dialect.error(400, "bad model")]
    with ScriptedServer(script) as srv:
        client, _ = make_client(dialect, srv.url)
        ok = client.complete("summarizer", "a")
        bad = client.complete("summarizer", "b")
    assert ok.ok and ok.text == "fine"
    assert bad.failure.kind == FailureKind.REQUEST_REJECTED and bad.failure.status_code == 400
    assert len(srv.requests) == 3 and client.summary()["total"]["failed_calls"] == 1


def test_timeout_then_success_and_timeout_failure(dialect):
    slow = dialect.text("too late")
    slow.delay_s = 1.5
    with ScriptedServer([slow, dialect.text("in time")]) as srv:
        client, _ = make_client(dialect, srv.url, timeout_s=0.3, attempts=2)
        reply = client.complete("summarizer", "q")
    assert reply.ok and reply.text == "in time"
    assert [a.outcome for a in reply.record.attempts] == ["timeout", "ok"]
    with ScriptedServer([slow, slow]) as srv:
        client, _ = make_client(dialect, srv.url, timeout_s=0.3, attempts=2)
        reply = client.complete("summarizer", "q")
    assert reply.failure.kind == FailureKind.TIMEOUT and len(reply.record.attempts) == 2


def test_connection_refused_is_retried_then_typed(dialect):
    client, sleeps = make_client(dialect, closed_port_url(), attempts=2)
    reply = client.complete("summarizer", "q")
    assert reply.failure.kind == FailureKind.CONNECTION and len(sleeps) == 1


def test_cache_hit_makes_no_second_request(dialect, tmp_path):
    script = [dialect.text('{"answer": "cached", "score": 2}', input_tokens=1000, output_tokens=100)]
    with ScriptedServer(script) as srv:
        client, _ = make_client(dialect, srv.url, tmp_path=tmp_path, prices={"test-model": (1.0, 2.0)})
        first = client.complete("judge", "same question", schema=SCHEMA, experiment=1)
        second = client.complete("judge", "same question", schema=SCHEMA, experiment=1)
        # A rerun: a fresh client on the same cache directory.
        rerun_client, _ = make_client(dialect, srv.url, tmp_path=tmp_path, prices={"test-model": (1.0, 2.0)})
        third = rerun_client.complete("judge", "same question", schema=SCHEMA)
    assert len(srv.requests) == 1
    assert first.data == second.data == third.data == {"answer": "cached", "score": 2}
    assert first.cost_usd == pytest.approx((1000 * 1.0 + 100 * 2.0) / 1e6)
    assert second.cost_usd == 0.0 and second.record.cache_hits == 1 and third.record.cache_hits == 1
    assert client.summary()["by_experiment"]["1"]["cache_hits"] == 1


def test_tool_turn_limit_is_a_typed_failure(dialect):
    ws = Workspace({"a.py": "x"})
    call = dialect.tool_calls([("r", "read_file", {"path": "a.py"})])
    with ScriptedServer([call, call, call]) as srv:
        client, _ = make_client(dialect, srv.url, max_tool_turns=2)
        reply = client.complete("researcher", "loop forever", tools=workspace_tools(ws))
    assert reply.failure.kind == FailureKind.TOOL_TURNS_EXHAUSTED and len(srv.requests) == 3
    assert len(reply.record.tool_runs) == 2


def test_cost_accounting_sums_by_role_and_experiment(dialect):
    script = [dialect.text("a", input_tokens=1_000_000, output_tokens=0),
              dialect.text("b", input_tokens=0, output_tokens=500_000),
              dialect.text("c", input_tokens=200_000, output_tokens=100_000)]
    with ScriptedServer(script) as srv:
        client, _ = make_client(dialect, srv.url, prices={"test-model": (2.0, 10.0), "fast-model": (0.5, 1.0)},
                                models={"summarizer": "fast-model"})
        r1 = client.complete("researcher", "1", experiment="e1")
        r2 = client.complete("researcher", "2", experiment="e2")
        r3 = client.complete("summarizer", "3", experiment="e1")
    assert (r1.cost_usd, r2.cost_usd) == (pytest.approx(2.0), pytest.approx(5.0))
    assert r3.model == "fast-model" and r3.cost_usd == pytest.approx(0.2 * 0.5 + 0.1 * 1.0)
    s = client.summary()
    assert s["total"]["cost_usd"] == pytest.approx(7.2)
    assert s["by_role"]["researcher"]["cost_usd"] == pytest.approx(7.0)
    assert s["by_experiment"]["e1"]["cost_usd"] == pytest.approx(2.2)
    assert s["by_experiment"]["e1"]["input_tokens"] == 1_200_000
    assert s["by_model"]["fast-model"]["calls"] == 1


def test_gemini_calls_without_ids_and_thinking_tokens():
    # Gemini often sends function calls without ids: the response must then carry none either.
    script = [GeminiDialect.tool_calls([(None, "list_files", {})]),
              GeminiDialect.text("all done", input_tokens=7, output_tokens=3, thoughts=40)]
    with ScriptedServer(script) as srv:
        client, _ = make_client(GeminiDialect, srv.url)
        reply = client.complete("researcher", "look around", tools=workspace_tools(Workspace({"a.py": "1"})))
    assert reply.ok and reply.text == "all done"
    (call_id, result), = GeminiDialect.tool_results(srv.requests[1])
    assert call_id is None and "a.py" in result
    assert reply.usage.output_tokens == 5 + 3 + 40   # thinking tokens are billed as output


def test_openai_malformed_tool_arguments_are_fed_back():
    ws = Workspace()
    script = [OpenAIDialect.tool_calls([("t1", "write_file", '{"path": "design.py", "content": ')]),
              OpenAIDialect.tool_calls([("t2", "write_file", {"path": "design.py"})]),
              OpenAIDialect.text("gave up")]
    with ScriptedServer(script) as srv:
        client, _ = make_client(OpenAIDialect, srv.url)
        reply = client.complete("debugger", "fix it", tools=workspace_tools(ws))
    assert reply.ok and "design.py" not in ws
    (_, first), = OpenAIDialect.tool_results(srv.requests[1])
    assert "not valid JSON" in first
    # The malformed arguments are replayed as the model sent them.
    sent_call = srv.requests[1].json["messages"][-2]["tool_calls"][0]
    assert sent_call["function"]["arguments"] == '{"path": "design.py", "content": '
    second = dict(OpenAIDialect.tool_results(srv.requests[2]))["t2"]
    assert "'content' is a required property" in second
    assert [r.ok for r in reply.record.tool_runs] == [False, False]
