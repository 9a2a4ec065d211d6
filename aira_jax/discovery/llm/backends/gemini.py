"""Gemini through google-genai: the Gemini API with an API key, or Vertex AI (project/location + ADC).

The SDK's retries stay off (no `retry_options`): the client retries and records every attempt. Assistant turns
keep Gemini's own content (`provider_data['gemini_content']`) so that function calls are replayed with their
thought signatures, which Gemini requires in multi-turn tool use.
"""
from __future__ import annotations

import os
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gt

from aira_jax.discovery.llm.backends.base import status_error
from aira_jax.discovery.llm.config import GeminiConfig
from aira_jax.discovery.llm.types import (BackendError, BackendRequest, BackendResponse, FailureKind, LLMError,
                                          Message, ToolCall, Usage)

try:  # google-genai 2+/3+ speak httpx2; older releases used httpx
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - depends on the installed google-genai
    import httpx as _httpx  # type: ignore[no-redef]

_REFUSAL_FINISH = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                   "IMAGE_PROHIBITED_CONTENT", "MODEL_ARMOR"}
_SYNTH_ID = "_gemini_call_"   # ids we make up for calls Gemini sent without one; never sent back to Gemini


class GeminiBackend:
    name = "gemini"
    cacheable = True

    def __init__(self, cfg: GeminiConfig, *, timeout_s: float = 120.0, api_key: str | None = None):
        http = gt.HttpOptions(timeout=int(timeout_s * 1000), base_url=cfg.base_url or None,
                              api_version=cfg.api_version or None)
        key = api_key or os.environ.get(cfg.api_key_env) or os.environ.get("GOOGLE_API_KEY")
        try:
            if cfg.vertexai:
                # Vertex AI: an API key (express mode) or project + location with application-default credentials.
                kwargs: dict[str, Any] = {"api_key": key} if key and not cfg.project else {
                    "project": cfg.project or None, "location": cfg.location or None}
                self._client = genai.Client(vertexai=True, http_options=http, **kwargs)
            else:
                if not key:
                    raise LLMError(f"the gemini backend needs an API key in ${cfg.api_key_env} (or $GOOGLE_API_KEY), "
                                   "or llm.gemini.vertexai=True with a project and location")
                self._client = genai.Client(api_key=key, http_options=http)
        except LLMError:
            raise
        except Exception as e:  # noqa: BLE001 - the SDK raises several types for missing credentials
            raise LLMError(f"cannot create the google-genai client: {type(e).__name__}: {e}") from None

    def generate(self, request: BackendRequest) -> BackendResponse:
        system, contents = _to_contents(request.messages)
        config = gt.GenerateContentConfig(
            system_instruction=system or None, temperature=request.temperature, seed=request.seed,
            max_output_tokens=request.max_output_tokens,
            http_options=gt.HttpOptions(timeout=max(1, int(request.timeout_s * 1000))),
            automatic_function_calling=gt.AutomaticFunctionCallingConfig(disable=True))
        if request.tools:
            config.tools = [gt.Tool(function_declarations=[
                gt.FunctionDeclaration(name=t.name, description=t.description, parameters_json_schema=t.parameters)
                for t in request.tools])]
        elif request.schema is not None:
            # Native JSON mode; left off with tools, which some Gemini models do not combine with it.
            config.response_mime_type = "application/json"
            config.response_json_schema = native_schema(request.schema)
        try:
            resp = self._client.models.generate_content(model=request.model, contents=contents, config=config)
        except genai_errors.APIError as e:
            headers = getattr(getattr(e, "response", None), "headers", None)
            raise status_error(int(e.code or 0), str(e.message or e.status or e), headers) from None
        except _httpx.TimeoutException as e:
            raise BackendError(FailureKind.TIMEOUT, f"request timed out after {request.timeout_s}s: {e!r}") from None
        except _httpx.TransportError as e:
            raise BackendError(FailureKind.CONNECTION, f"{type(e).__name__}: {e}") from None
        return _from_gemini(resp)


# Keywords Gemini's structured output understands; the others (pattern, minLength, ...) are dropped from what is
# sent, while the client still validates the reply against the full schema and re-asks on a violation.
_NATIVE_KEYS = {"type", "properties", "required", "items", "enum", "description", "title", "format", "minimum",
                "maximum", "minItems", "maxItems", "anyOf", "additionalProperties", "nullable", "$defs", "$ref"}


def native_schema(schema: Any) -> Any:
    if isinstance(schema, list):
        return [native_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for k, v in schema.items():
        if k not in _NATIVE_KEYS:
            continue
        if k in ("properties", "$defs"):
            out[k] = {name: native_schema(s) for name, s in v.items()}
        elif k in ("items", "anyOf", "additionalProperties"):
            out[k] = native_schema(v)
        else:
            out[k] = v
    if "enum" in out and "type" not in out and all(isinstance(e, str) for e in out["enum"]):
        out["type"] = "string"   # Gemini wants a type beside enum
    return out


def _to_contents(messages: tuple[Message, ...]) -> tuple[str, list[gt.Content]]:
    system_parts, contents = [], []
    pending_responses: list[gt.Part] = []

    def flush():
        if pending_responses:   # parallel calls are answered together, in one user turn
            contents.append(gt.Content(role="user", parts=list(pending_responses)))
            pending_responses.clear()

    for m in messages:
        if m.role == "tool":
            part = gt.Part.from_function_response(name=m.name or "tool", response={"result": m.content})
            if not m.tool_call_id.startswith(_SYNTH_ID):
                part.function_response.id = m.tool_call_id
            pending_responses.append(part)
            continue
        flush()
        if m.role == "system":
            system_parts.append(m.content)
        elif m.role == "user":
            contents.append(gt.Content(role="user", parts=[gt.Part(text=m.content)]))
        elif m.provider_data and "gemini_content" in m.provider_data:
            contents.append(gt.Content.model_validate(m.provider_data["gemini_content"]))
        else:
            parts = [gt.Part(text=m.content)] if m.content else []
            parts += [gt.Part(function_call=gt.FunctionCall(id=None if t.id.startswith(_SYNTH_ID) else t.id,
                                                            name=t.name, args=t.arguments))
                      for t in m.tool_calls]
            contents.append(gt.Content(role="model", parts=parts or [gt.Part(text="")]))
    flush()
    return "\n\n".join(system_parts), contents


def _enum_name(v: Any) -> str:
    return "" if v is None else str(getattr(v, "value", v))


def _from_gemini(resp: gt.GenerateContentResponse) -> BackendResponse:
    meta = resp.usage_metadata
    usage = Usage()
    if meta is not None:
        usage = Usage(int(meta.prompt_token_count or 0),
                      int(meta.candidates_token_count or 0) + int(meta.thoughts_token_count or 0))
    block = resp.prompt_feedback.block_reason if resp.prompt_feedback else None
    if block is not None:
        return BackendResponse(finish_reason="blocked", usage=usage,
                               refusal=f"the prompt was blocked ({_enum_name(block)})")
    if not resp.candidates:
        return BackendResponse(finish_reason="no_candidates", usage=usage)
    cand = resp.candidates[0]
    finish = _enum_name(cand.finish_reason)
    parts = cand.content.parts if cand.content and cand.content.parts else []
    text = "".join(p.text for p in parts if p.text and not p.thought)
    calls = tuple(ToolCall(id=p.function_call.id or f"{_SYNTH_ID}{i}", name=p.function_call.name or "",
                           arguments=dict(p.function_call.args or {}))
                  for i, p in enumerate(parts) if p.function_call is not None)
    refusal = None
    if finish in _REFUSAL_FINISH and not text and not calls:
        refusal = f"Gemini stopped the reply ({finish})"
    provider = {"gemini_content": cand.content.model_dump(mode="json", exclude_none=True)} if cand.content else None
    return BackendResponse(text=text, tool_calls=calls, finish_reason=finish, usage=usage, refusal=refusal,
                           provider_data=provider)
