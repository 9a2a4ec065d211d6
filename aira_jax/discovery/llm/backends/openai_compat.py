"""Any OpenAI-compatible chat-completions server (OpenAI, vLLM, SGLang, llama.cpp, ...), via the `openai` package.

The SDK's own retries are switched off (`max_retries=0`): the client retries, so that each attempt is recorded.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

import openai

from aira_jax.discovery.llm.backends.base import status_error
from aira_jax.discovery.llm.config import OpenAIConfig
from aira_jax.discovery.llm.types import (BackendError, BackendRequest, BackendResponse, FailureKind, LLMError,
                                          Message, ToolCall, Usage)

_LOCAL_PLACEHOLDER_KEY = "not-needed"   # local servers ignore the key, but the SDK insists on one


class OpenAICompatBackend:
    name = "openai"
    cacheable = True

    def __init__(self, cfg: OpenAIConfig, *, timeout_s: float = 120.0, api_key: str | None = None):
        key = api_key or os.environ.get(cfg.api_key_env, "")
        if not key:
            if not cfg.base_url:
                raise LLMError(f"the openai backend needs an API key in ${cfg.api_key_env} "
                               "(or llm.openai.base_url pointing at a local server)")
            key = _LOCAL_PLACEHOLDER_KEY
        self.cfg = cfg
        self._client = openai.OpenAI(api_key=key, base_url=cfg.base_url or None, max_retries=0, timeout=timeout_s)

    def generate(self, request: BackendRequest) -> BackendResponse:
        params: dict[str, Any] = {"model": request.model, "messages": [_to_openai(m) for m in request.messages],
                                  "timeout": request.timeout_s}
        if request.tools:
            params["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                                  "parameters": t.parameters}}
                               for t in request.tools]
        if request.schema is not None and self.cfg.response_format != "none":
            if self.cfg.response_format == "json_schema":
                params["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": re.sub(r"[^A-Za-z0-9_-]", "_", request.role)[:64] or "reply",
                    "schema": request.schema, "strict": False}}
            else:
                params["response_format"] = {"type": "json_object"}
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.seed is not None:
            params["seed"] = request.seed
        if request.max_output_tokens is not None:
            params["max_completion_tokens"] = request.max_output_tokens
        try:
            resp = self._client.chat.completions.create(**params)
        except openai.APITimeoutError as e:      # a subclass of APIConnectionError: test it first
            raise BackendError(FailureKind.TIMEOUT, f"request timed out after {request.timeout_s}s: {e}") from None
        except openai.APIConnectionError as e:
            raise BackendError(FailureKind.CONNECTION, str(e)) from None
        except openai.APIStatusError as e:
            raise status_error(e.status_code, _error_message(e), e.response.headers) from None
        return _from_openai(resp)


def _error_message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(e.message)


def _to_openai(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.role == "assistant" and m.tool_calls:
        return {"role": "assistant", "content": m.content or None, "tool_calls": [
            {"id": t.id, "type": "function",
             "function": {"name": t.name, "arguments": t.raw_arguments if t.raw_arguments is not None
                          else json.dumps(t.arguments)}} for t in m.tool_calls]}
    return {"role": m.role, "content": m.content}


def _from_openai(resp: Any) -> BackendResponse:
    usage = Usage()
    if getattr(resp, "usage", None) is not None:
        usage = Usage(int(resp.usage.prompt_tokens or 0), int(resp.usage.completion_tokens or 0))
    if not resp.choices:
        return BackendResponse(finish_reason="no_choices", usage=usage)
    choice = resp.choices[0]
    msg = choice.message
    finish = choice.finish_reason or ""
    refusal = getattr(msg, "refusal", None) or None
    if refusal is None and finish == "content_filter":
        refusal = "the server's content filter stopped the reply"
    calls = []
    for i, tc in enumerate(msg.tool_calls or ()):
        fn = getattr(tc, "function", None)
        if fn is None:   # custom (non-function) tools are not used here
            continue
        raw = fn.arguments or "{}"
        try:
            args = json.loads(raw)
            calls.append(ToolCall(id=tc.id or f"call_{i}", name=fn.name,
                                  arguments=args if isinstance(args, dict) else {},
                                  raw_arguments=None if isinstance(args, dict) else raw))
        except json.JSONDecodeError:
            calls.append(ToolCall(id=tc.id or f"call_{i}", name=fn.name, raw_arguments=raw))
    return BackendResponse(text=msg.content or "", tool_calls=tuple(calls), finish_reason=finish, usage=usage,
                           refusal=refusal)

