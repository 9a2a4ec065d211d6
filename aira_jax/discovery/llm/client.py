"""The one entry point agents use: `LLMClient.complete(role, messages, schema=..., tools=...) -> Reply`.

A call is a conversation loop, bounded in every direction:
  request (cache, else backend with retries) -> tool calls? run them, feed results back, repeat (<= max_tool_turns)
                                             -> refusal?   typed failure
                                             -> final text: parse + validate JSON (schema), run `check`;
                                                on error re-ask with the error (<= max_reasks), then typed failure.
It never raises for what a model or server does: the Reply says `ok` or carries a `Failure`. Every call leaves a
`CallRecord` (attempts, retries, cache hits, tool runs, tokens, cost) in `client.records`, in the JSONL log when
configured, and passes it to `on_record` (the discovery loop stores it).
"""
from __future__ import annotations

import dataclasses
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from absl import logging

from aira_jax.discovery.llm import structured
from aira_jax.discovery.llm.accounting import CostLedger, PriceTable, Tally
from aira_jax.discovery.llm.backends import Backend, Handler, make_backend
from aira_jax.discovery.llm.cache import ResponseCache, cache_key
from aira_jax.discovery.llm.config import LLMConfig, llm_config_from
from aira_jax.discovery.llm.retry import call_with_retries
from aira_jax.discovery.llm.tools import Tool, run_tool
from aira_jax.discovery.llm.types import (AttemptRecord, BackendError, BackendRequest, BackendResponse, CallRecord,
                                          Failure, FailureKind, LLMError, Message, Reply, ToolRunRecord, Usage,
                                          as_messages)

_DEFAULT: Any = object()   # "use the role's configured value" (None is a real value: the server's default)
Check = Callable[[Any], "str | None"]
_PREVIEW_CHARS = 2000


@dataclasses.dataclass
class _CallState:
    """Mutable bookkeeping of one `complete` call."""
    attempts: list[AttemptRecord] = dataclasses.field(default_factory=list)
    tool_runs: list[ToolRunRecord] = dataclasses.field(default_factory=list)
    tally: Tally = dataclasses.field(default_factory=Tally)
    usage: Usage = Usage()
    priced: bool = True
    turns: int = 0
    reasks: int = 0


class LLMClient:
    def __init__(self, config: LLMConfig | Mapping[str, Any] | None = None, *, backend: Backend | None = None,
                 offline_handlers: Mapping[str, Handler] | None = None,
                 on_record: Callable[[CallRecord], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
                 keep_records: int = 10_000):
        self.config = llm_config_from(config if config is not None else LLMConfig())
        self.backend = backend if backend is not None else make_backend(self.config, offline_handlers=offline_handlers)
        self.prices = PriceTable(self.config.prices)
        self.ledger = CostLedger()
        self.cache = (ResponseCache(self.config.cache_dir)
                      if self.config.cache_dir and getattr(self.backend, "cacheable", True) else None)
        self.on_record = on_record
        self.records: list[CallRecord] = []
        self._keep_records = keep_records
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------ public
    def complete(self, role: str, messages: Any, *, schema: dict[str, Any] | None = None,
                 tools: Sequence[Tool] = (), check: Check | None = None, experiment: str | int | None = None,
                 model: str | None = None, temperature: float | None = _DEFAULT, seed: int | None = _DEFAULT,
                 max_output_tokens: int | None = _DEFAULT, max_tool_turns: int | None = None,
                 max_reasks: int | None = None, timeout_s: float | None = None, cache: bool = True) -> Reply:
        """Runs one agent step for `role` and returns a Reply (ok, or a typed failure).

        messages: a user string, a RenderedPrompt, or Message/dict turns. schema: JSON schema the final reply must
        match (`reply.data` holds the parsed object). tools: callable tools (the loop runs them). check: a
        semantic check of the final value (the parsed object, or the text without a schema) returning an error
        message to re-ask with, or None. experiment: the key costs are booked under.
        """
        if not isinstance(role, str) or not role:
            raise LLMError(f"role must be a non-empty string, got {role!r}")
        cfg = self.config
        prompt_version = getattr(messages, "version", "") or ""
        msgs = list(as_messages(messages))
        validator = structured.check_schema(schema) if schema is not None else None
        if schema is not None and cfg.schema_in_prompt:
            msgs = _with_system_note(msgs, structured.schema_instruction(schema))
        tool_map = {t.name: t for t in tools}
        if len(tool_map) != len(tools):
            raise LLMError(f"duplicate tool names in {[t.name for t in tools]}")
        template = BackendRequest(
            role=role, model=model or cfg.model_for(role), messages=(),
            tools=tuple(t.spec for t in tools), schema=schema,
            temperature=cfg.temperature_for(role) if temperature is _DEFAULT else temperature,
            seed=cfg.seed if seed is _DEFAULT else seed,
            max_output_tokens=cfg.max_output_tokens if max_output_tokens is _DEFAULT else max_output_tokens,
            timeout_s=timeout_s or cfg.timeout_s)
        max_tool_turns = cfg.max_tool_turns if max_tool_turns is None else max_tool_turns
        max_reasks = cfg.max_reasks if max_reasks is None else max_reasks
        exp = None if experiment is None else str(experiment)
        st = _CallState()
        started, t0 = time.time(), time.monotonic()

        def finish(failure: Failure | None, text: str = "", data: Any = None) -> Reply:
            return self._finish(role, template.model, exp, st, failure, text, data, msgs, started,
                                time.monotonic() - t0, prompt_version)

        tool_rounds = 0
        while True:
            request = dataclasses.replace(template, messages=tuple(msgs))
            try:
                resp = self._request(request, st, use_cache=cache)
            except BackendError as e:
                return finish(Failure(e.kind, e.message, e.status_code))
            except LLMError:
                raise
            except Exception as e:  # noqa: BLE001 - an SDK or handler bug must not take the loop down
                logging.exception("LLM backend %s raised for role %s", self.backend.name, role)
                st.attempts.append(AttemptRecord(st.turns, 1, FailureKind.BACKEND_ERROR.value, 0.0,
                                                 error=f"{type(e).__name__}: {e}"[:1000]))
                return finish(Failure(FailureKind.BACKEND_ERROR, f"{type(e).__name__}: {e}"))
            st.turns += 1
            assistant = Message("assistant", resp.text, resp.tool_calls, provider_data=resp.provider_data)
            if resp.refusal:
                msgs.append(assistant)
                return finish(Failure(FailureKind.REFUSED, resp.refusal), text=resp.text)
            if resp.tool_calls:
                msgs.append(assistant)
                if tool_rounds >= max_tool_turns:
                    return finish(Failure(FailureKind.TOOL_TURNS_EXHAUSTED,
                                          f"the model still called tools after {max_tool_turns} tool turns"))
                tool_rounds += 1
                for call in resp.tool_calls:
                    ok, result = run_tool(tool_map, call)
                    st.tool_runs.append(ToolRunRecord(st.turns - 1, call.id, call.name, dict(call.arguments), ok,
                                                      result[:300]))
                    msgs.append(Message("tool", result, tool_call_id=call.id, name=call.name))
                continue
            try:
                value = self._final_value(resp, validator, check)
            except structured.OutputError as e:
                if resp.text.strip():
                    msgs.append(assistant)
                if st.reasks < max_reasks:
                    st.reasks += 1
                    msgs.append(Message("user", structured.reask_message(e)))
                    continue
                return finish(Failure(e.kind, e.message), text=resp.text)
            msgs.append(assistant)
            return finish(None, text=resp.text, data=value if validator is not None else None)

    def summary(self) -> dict[str, object]:
        """Token and cost totals by role, model and experiment."""
        return self.ledger.summary()

    # ------------------------------------------------------------------------------------------------ internals
    def _final_value(self, resp: BackendResponse, validator, check: Check | None) -> Any:
        if validator is not None:
            value = structured.parse_structured(resp.text, validator)
        else:
            if not resp.text.strip():
                raise structured.OutputError(
                    FailureKind.EMPTY_REPLY, f"the reply was empty (finish reason {resp.finish_reason or 'none'})")
            value = resp.text
        if check is not None:
            problem = check(value)
            if problem:
                raise structured.OutputError(FailureKind.CHECK_FAILED, str(problem))
        return value

    def _request(self, request: BackendRequest, st: _CallState, *, use_cache: bool) -> BackendResponse:
        key = cache_key(self.backend.name, request)
        if self.cache is not None and use_cache:
            hit = self.cache.get(key)
            if hit is not None:
                st.tally.cache_hits += 1
                st.attempts.append(AttemptRecord(st.turns, 0, "cached", 0.0, cache_key=key, usage=hit.usage))
                return hit

        def on_attempt(attempt: int, duration: float, err: BackendError | None, backoff: float) -> None:
            st.tally.requests += 1
            st.attempts.append(AttemptRecord(
                st.turns, attempt, "ok" if err is None else err.kind.value, duration, cache_key=key,
                error="" if err is None else err.message[:1000], status_code=None if err is None else err.status_code,
                backoff_s=backoff))

        resp = call_with_retries(lambda: self.backend.generate(request), self.config.retry,
                                 on_attempt=on_attempt, sleep=self._sleep, rng=self._rng)
        st.attempts[-1] = dataclasses.replace(st.attempts[-1], usage=resp.usage)
        st.usage = st.usage + resp.usage
        cost, priced = self.prices.cost(request.model, resp.usage)
        st.tally.cost_usd += cost
        st.priced = st.priced and priced
        if self.cache is not None:
            self.cache.put(key, request.key_material(self.backend.name), resp)
        return resp

    def _finish(self, role, model, exp, st: _CallState, failure, text, data, msgs, started, duration,
                prompt_version) -> Reply:
        st.tally.calls = 1
        st.tally.failed_calls = int(failure is not None)
        st.tally.input_tokens = st.usage.input_tokens
        st.tally.output_tokens = st.usage.output_tokens
        st.tally.unpriced_calls = int(not st.priced)
        self.ledger.add(role=role, model=model, experiment=exp, tally=st.tally)
        record = CallRecord(
            call_id=uuid.uuid4().hex, role=role, backend=self.backend.name, model=model, experiment=exp,
            started_at=started, duration_s=duration, ok=failure is None, failure=failure, usage=st.usage,
            cost_usd=st.tally.cost_usd, priced=st.priced, turns=st.turns, reasks=st.reasks,
            cache_hits=st.tally.cache_hits, attempts=tuple(st.attempts), tool_runs=tuple(st.tool_runs),
            prompt_version=prompt_version, output_preview=text[:_PREVIEW_CHARS])
        if failure is not None:
            logging.warning("LLM call for role %s failed after %d turn(s): %s: %s", role, st.turns,
                            failure.kind.value, failure.message[:300])
        self._keep(record)
        return Reply(ok=failure is None, role=role, model=model, text=text,
                     data=data, failure=failure, messages=tuple(msgs), usage=st.usage, cost_usd=st.tally.cost_usd,
                     record=record)

    def _keep(self, record: CallRecord) -> None:
        with self._lock:
            self.records.append(record)
            if len(self.records) > self._keep_records:
                del self.records[: len(self.records) - self._keep_records]
            if self.config.log_path:
                path = Path(self.config.log_path)
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as f:
                    f.write(record.to_json() + "\n")
        if self.on_record is not None:
            try:
                self.on_record(record)
            except Exception:  # noqa: BLE001 - losing one record must not lose the reply
                logging.exception("on_record callback failed for LLM call %s", record.call_id)


def _with_system_note(msgs: list[Message], note: str) -> list[Message]:
    for i, m in enumerate(msgs):
        if m.role == "system":
            return msgs[:i] + [dataclasses.replace(m, content=f"{m.content}\n\n{note}")] + msgs[i + 1:]
    return [Message("system", note)] + msgs


def make_client(config: LLMConfig | Mapping[str, Any] | None = None, **kwargs: Any) -> LLMClient:
    """`LLMClient(llm_config_from(config), **kwargs)`; accepts the `config.llm` ConfigDict of an experiment."""
    return LLMClient(config, **kwargs)

