"""What a backend is: an object with a `name` that turns a BackendRequest into a BackendResponse.

Backends do one request, with no retries of their own (the client retries, so every attempt is recorded), and
raise `BackendError` with a classified `FailureKind` for anything that went wrong on the wire or on the server.
"""
from __future__ import annotations

import email.utils
import time
from typing import Any, Mapping, Protocol, runtime_checkable

from aira_jax.discovery.llm.types import BackendError, BackendRequest, BackendResponse, FailureKind


@runtime_checkable
class Backend(Protocol):
    name: str         # part of the cache key ('gemini', 'openai', 'offline', ...)
    cacheable: bool   # False for backends whose replies are cheap and should follow code changes (offline)

    def generate(self, request: BackendRequest) -> BackendResponse: ...


def status_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> BackendError:
    """Classifies an HTTP error status the same way for every backend."""
    retry_after = parse_retry_after(headers)
    if status == 429:
        kind = FailureKind.RATE_LIMITED
    elif status == 408:
        kind = FailureKind.TIMEOUT
    elif status >= 500:
        kind = FailureKind.SERVER_ERROR
    else:
        kind = FailureKind.REQUEST_REJECTED
    return BackendError(kind, f"HTTP {status}: {message}"[:1000], status_code=status, retry_after_s=retry_after)


def parse_retry_after(headers: Mapping[str, str] | Any | None) -> float | None:
    """Seconds from `retry-after-ms`, or `retry-after` as seconds or an HTTP date; None when absent or bad."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
    except (AttributeError, TypeError, ValueError):
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None
