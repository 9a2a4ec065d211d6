"""Retries of one backend request: exponential backoff with jitter, honouring a server's Retry-After.

Only transient kinds are retried (429, 5xx, timeouts, connection errors; see `types.RETRYABLE_KINDS`); a bad
request or a refusal is final at once. Each attempt is reported to `on_attempt`, so the call record shows them.
"""
from __future__ import annotations

import random
import time
from typing import Callable, TypeVar

from absl import logging

from aira_jax.discovery.llm.config import RetryConfig
from aira_jax.discovery.llm.types import BackendError

T = TypeVar("T")


def backoff_delay(cfg: RetryConfig, retry_index: int, rng: random.Random, retry_after_s: float | None = None) -> float:
    """Seconds to wait before retry number `retry_index` (0 = the first retry).

    The random part takes up to `jitter` of the delay away (never adds), so the cap holds; a Retry-After from the
    server is a floor, itself capped by `max_delay_s` so that a bad header cannot stall a worker.
    """
    base = min(cfg.max_delay_s, cfg.initial_delay_s * cfg.multiplier ** retry_index)
    delay = base * (1.0 - cfg.jitter * rng.random())
    if retry_after_s is not None and retry_after_s > 0:
        delay = max(delay, min(retry_after_s, cfg.max_delay_s))
    return delay


def call_with_retries(fn: Callable[[], T], cfg: RetryConfig, *,
                      on_attempt: Callable[[int, float, BackendError | None, float], None],
                      sleep: Callable[[float], None] = time.sleep,
                      rng: random.Random | None = None,
                      clock: Callable[[], float] = time.monotonic) -> T:
    """Runs `fn` until it returns or raises a final BackendError (re-raised after the last attempt).

    `on_attempt(attempt, duration_s, error_or_None, backoff_s)` is called once per attempt, before sleeping.
    Exceptions other than BackendError propagate unchanged (the caller classifies them).
    """
    rng = rng or random.Random()
    for attempt in range(1, cfg.max_attempts + 1):
        start = clock()
        try:
            out = fn()
        except BackendError as e:
            duration = clock() - start
            last = attempt == cfg.max_attempts or not e.retryable
            delay = 0.0 if last else backoff_delay(cfg, attempt - 1, rng, e.retry_after_s)
            on_attempt(attempt, duration, e, delay)
            if last:
                raise
            logging.warning("LLM request failed (%s), attempt %d/%d; retrying in %.2fs",
                            e, attempt, cfg.max_attempts, delay)
            sleep(delay)
            continue
        on_attempt(attempt, clock() - start, None, 0.0)
        return out
    raise AssertionError("unreachable: the loop returns or raises")
