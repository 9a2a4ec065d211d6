"""The offline backend: no network, ever. Replies come from Python callables registered per role.

This is where the offline agents plug in (scripted or template-based Researchers, rule-based judges, test
doubles): `backend.register('researcher', fn)`. A handler receives the whole BackendRequest (messages, tool
specs, schema) and returns one of:
  - a str                         -> the reply text
  - a dict or list                -> serialised to JSON as the reply text (structured roles)
  - a ToolCall or list of them    -> the model asks for tool calls (the client runs them and calls again)
  - a BackendResponse             -> used as is (to set usage, finish reason or a refusal)
It may raise BackendError to simulate a server failure (a 429 is retried like a real one).
"""
from __future__ import annotations

import json
from typing import Callable, Mapping, Sequence, Union

from aira_jax.discovery.llm.types import (BackendError, BackendRequest, BackendResponse, FailureKind, LLMError,
                                          ToolCall, Usage)

HandlerResult = Union[str, dict, list, ToolCall, Sequence[ToolCall], BackendResponse]
Handler = Callable[[BackendRequest], HandlerResult]


def _estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4   # about 4 characters per token for English and code; good enough for budgets


class OfflineBackend:
    name = "offline"
    cacheable = False

    def __init__(self, handlers: Mapping[str, Handler] | None = None, *, default: Handler | None = None):
        self._handlers: dict[str, Handler] = {}
        self._default = default
        for role, fn in (handlers or {}).items():
            self.register(role, fn)

    def register(self, role: str, fn: Handler) -> None:
        if not callable(fn):
            raise LLMError(f"offline handler for role {role!r} must be callable, got {fn!r}")
        self._handlers[role] = fn

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    def generate(self, request: BackendRequest) -> BackendResponse:
        fn = self._handlers.get(request.role, self._default)
        if fn is None:
            raise BackendError(FailureKind.NO_HANDLER,
                               f"the offline backend has no handler for role {request.role!r} "
                               f"(registered: {list(self.roles)})")
        out = fn(request)
        prompt_tokens = sum(_estimate_tokens(m.content) for m in request.messages)
        if isinstance(out, BackendResponse):
            return out
        if isinstance(out, ToolCall) or (isinstance(out, (list, tuple)) and out
                                         and all(isinstance(t, ToolCall) for t in out)):
            calls = (out,) if isinstance(out, ToolCall) else tuple(out)
            text_len = sum(len(json.dumps(c.arguments)) for c in calls)
            return BackendResponse(tool_calls=calls, finish_reason="tool_calls",
                                   usage=Usage(prompt_tokens, (text_len + 3) // 4))
        if isinstance(out, (dict, list)):
            out = json.dumps(out)
        if not isinstance(out, str):
            raise LLMError(f"offline handler for role {request.role!r} returned {type(out).__name__}; "
                           "expected str, dict, list, ToolCall(s) or BackendResponse")
        return BackendResponse(text=out, finish_reason="stop", usage=Usage(prompt_tokens, _estimate_tokens(out)))
