"""Typed values of the LLM layer: messages, tool calls, backend requests and replies, failures and call records.

Everything here is a plain dataclass with `to_dict`/`from_dict`, so that replies can be cached on disk and call
records stored by the discovery loop as JSON. Backends translate between these and their SDK's types; the
client never sees an SDK object.
"""
from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any, Mapping, Sequence

ROLES = ("system", "user", "assistant", "tool")


class LLMError(Exception):
    """Misuse of the LLM layer (bad config, bad arguments); never raised for a model's or server's behaviour."""


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """A function call requested by the model. `arguments` is the parsed object; `raw_arguments` keeps the
    model's text when it was not valid JSON (the tool then gets an error instead of running)."""
    id: str
    name: str
    arguments: dict[str, Any] = dataclasses.field(default_factory=dict)
    raw_arguments: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ToolCall":
        return cls(id=str(d["id"]), name=str(d["name"]), arguments=dict(d.get("arguments") or {}),
                   raw_arguments=d.get("raw_arguments"))


@dataclasses.dataclass(frozen=True)
class Message:
    """One conversation turn. `provider_data` carries a backend's own form of an assistant turn (e.g. Gemini's
    parts with thought signatures) so that it can be replayed verbatim to the same backend."""
    role: str
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None   # for role 'tool': which call this answers
    name: str | None = None           # for role 'tool': the tool's name
    provider_data: dict[str, Any] | None = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise LLMError(f"message role must be one of {ROLES}, got {self.role!r}")
        if not isinstance(self.content, str):
            raise LLMError(f"message content must be a string, got {type(self.content).__name__}")
        object.__setattr__(self, "tool_calls", tuple(
            t if isinstance(t, ToolCall) else ToolCall.from_dict(t) for t in self.tool_calls))
        if self.role == "tool" and not self.tool_call_id:
            raise LLMError("a 'tool' message needs the tool_call_id it answers")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            d["tool_calls"] = [t.to_dict() for t in self.tool_calls]
        for k in ("tool_call_id", "name", "provider_data"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Message":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise LLMError(f"message has unknown keys {sorted(unknown)}")
        if "role" not in d:
            raise LLMError(f"message needs a 'role': {dict(d)!r}")
        return cls(role=d["role"], content=d.get("content") or "",
                   tool_calls=tuple(ToolCall.from_dict(t) for t in d.get("tool_calls") or ()),
                   tool_call_id=d.get("tool_call_id"), name=d.get("name"), provider_data=d.get("provider_data"))


def as_messages(messages: str | Message | Mapping | Sequence[Message | Mapping]) -> tuple[Message, ...]:
    """Accepts a user string, a rendered prompt (anything with `.messages()`), a Message, a dict or a list."""
    if hasattr(messages, "messages") and callable(messages.messages):
        messages = messages.messages()
    if isinstance(messages, str):
        return (Message("user", messages),)
    if isinstance(messages, (Message, Mapping)):
        messages = [messages]
    out = tuple(m if isinstance(m, Message) else Message.from_dict(m) for m in messages)
    if not out:
        raise LLMError("a completion needs at least one message")
    return out


@dataclasses.dataclass(frozen=True)
class ToolSpec:
    """What the model sees of a tool: a name, a description and a JSON schema of its arguments."""
    name: str
    description: str
    parameters: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0   # includes reasoning / thinking tokens (they are billed as output)

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class BackendRequest:
    """One request to a backend: everything that determines the reply (and so the cache key)."""
    role: str
    model: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    schema: dict[str, Any] | None = None
    temperature: float | None = None
    seed: int | None = None
    max_output_tokens: int | None = None
    timeout_s: float = 120.0

    def key_material(self, backend: str) -> dict[str, Any]:
        """The fields that identify a reply; the timeout is left out (it does not change what is said)."""
        return {"backend": backend, "model": self.model, "messages": [m.to_dict() for m in self.messages],
                "tools": [t.to_dict() for t in self.tools], "schema": self.schema, "temperature": self.temperature,
                "seed": self.seed, "max_output_tokens": self.max_output_tokens}


@dataclasses.dataclass(frozen=True)
class BackendResponse:
    """A backend's reply, normalised. `refusal` is set when the model or its safety filter declined."""
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = ""
    usage: Usage = Usage()
    refusal: str | None = None
    provider_data: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "tool_calls": [t.to_dict() for t in self.tool_calls],
                "finish_reason": self.finish_reason, "usage": self.usage.to_dict(), "refusal": self.refusal,
                "provider_data": self.provider_data}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BackendResponse":
        return cls(text=d.get("text") or "", tool_calls=tuple(ToolCall.from_dict(t) for t in d.get("tool_calls") or ()),
                   finish_reason=d.get("finish_reason") or "", usage=Usage(**(d.get("usage") or {})),
                   refusal=d.get("refusal"), provider_data=d.get("provider_data"))


class FailureKind(str, enum.Enum):
    RATE_LIMITED = "rate_limited"              # HTTP 429 after all retries
    TIMEOUT = "timeout"                        # per-request timeout after all retries
    CONNECTION = "connection"                  # could not connect / connection dropped, after all retries
    SERVER_ERROR = "server_error"              # HTTP 5xx after all retries
    REQUEST_REJECTED = "request_rejected"      # other HTTP 4xx (bad request, auth, unknown model): not retried
    REFUSED = "refused"                        # the model declined (refusal text, safety block)
    MALFORMED_OUTPUT = "malformed_output"      # no parsable JSON after the re-asks
    SCHEMA_VIOLATION = "schema_violation"      # JSON that does not match the schema after the re-asks
    CHECK_FAILED = "check_failed"              # the caller's semantic check kept failing after the re-asks
    EMPTY_REPLY = "empty_reply"                # no text and no tool call
    TOOL_TURNS_EXHAUSTED = "tool_turns_exhausted"
    NO_HANDLER = "no_handler"                  # offline backend has nothing registered for the role
    BACKEND_ERROR = "backend_error"            # anything else a backend raised (logged with its traceback)


RETRYABLE_KINDS = frozenset({FailureKind.RATE_LIMITED, FailureKind.TIMEOUT, FailureKind.CONNECTION,
                             FailureKind.SERVER_ERROR})


class BackendError(Exception):
    """Raised by backends with a classified kind; the client retries the retryable kinds."""

    def __init__(self, kind: FailureKind, message: str, *, status_code: int | None = None,
                 retry_after_s: float | None = None):
        super().__init__(f"{kind.value}: {message}")
        self.kind = FailureKind(kind)
        self.message = message
        self.status_code = status_code
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


@dataclasses.dataclass(frozen=True)
class Failure:
    kind: FailureKind
    message: str
    status_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "message": self.message, "status_code": self.status_code}


@dataclasses.dataclass(frozen=True)
class AttemptRecord:
    """One backend request (or cache hit) inside a call."""
    turn: int                  # index of the backend round trip within the call (tool turns and re-asks count)
    attempt: int               # 1-based retry attempt for this turn
    outcome: str               # 'ok' | 'cached' | a FailureKind value
    duration_s: float
    cache_key: str = ""
    error: str = ""
    status_code: int | None = None
    backoff_s: float = 0.0     # sleep before the next attempt (0 when none followed)
    usage: Usage = Usage()


@dataclasses.dataclass(frozen=True)
class ToolRunRecord:
    turn: int
    call_id: str
    name: str
    arguments: dict[str, Any]
    ok: bool
    result_preview: str        # first characters of what was fed back to the model


@dataclasses.dataclass(frozen=True)
class CallRecord:
    """Everything about one `complete` call, for the store: the loop persists `to_dict()` (JSON-safe)."""
    call_id: str
    role: str
    backend: str
    model: str
    experiment: str | None
    started_at: float
    duration_s: float
    ok: bool
    failure: Failure | None
    usage: Usage
    cost_usd: float
    priced: bool               # False when the model has no price-table entry (cost counted as 0)
    turns: int
    reasks: int
    cache_hits: int
    attempts: tuple[AttemptRecord, ...]
    tool_runs: tuple[ToolRunRecord, ...]
    prompt_version: str = ""   # hash of the prompt template, when the messages came from one
    output_preview: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["failure"] = self.failure.to_dict() if self.failure else None
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)


@dataclasses.dataclass(frozen=True)
class Reply:
    """The outcome of `LLMClient.complete`: check `ok`; on failure `failure` says why (never an exception)."""
    ok: bool
    role: str
    model: str
    text: str                          # the final assistant text ('' when the call failed before one)
    data: Any                          # the validated JSON object when a schema was given, else None
    failure: Failure | None
    messages: tuple[Message, ...]      # the whole conversation, tool turns and re-asks included
    usage: Usage
    cost_usd: float
    record: CallRecord

    def raise_for_failure(self) -> "Reply":
        if not self.ok:
            raise LLMCallFailed(self)
        return self


class LLMCallFailed(Exception):
    """Raised only by `Reply.raise_for_failure`, for callers that prefer exceptions."""

    def __init__(self, reply: Reply):
        f = reply.failure
        super().__init__(f"LLM call for role {reply.role!r} failed ({f.kind.value if f else '?'}): "
                         f"{f.message if f else ''}")
        self.reply = reply
