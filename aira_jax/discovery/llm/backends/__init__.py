"""LLM backends: Gemini (google-genai), any OpenAI-compatible server, and the offline (no-network) backend."""
from __future__ import annotations

from typing import Mapping

from aira_jax.discovery.llm.backends.base import Backend, parse_retry_after, status_error
from aira_jax.discovery.llm.backends.offline import Handler, OfflineBackend
from aira_jax.discovery.llm.config import LLMConfig
from aira_jax.discovery.llm.types import LLMError


def make_backend(cfg: LLMConfig, *, offline_handlers: Mapping[str, Handler] | None = None,
                 api_key: str | None = None) -> Backend:
    """The backend `cfg.backend` names. SDK modules are imported only when their backend is used."""
    if cfg.backend == "offline":
        return OfflineBackend(offline_handlers)
    if offline_handlers:
        raise LLMError(f"offline handlers were given but llm.backend is {cfg.backend!r}")
    if cfg.backend == "gemini":
        from aira_jax.discovery.llm.backends.gemini import GeminiBackend
        return GeminiBackend(cfg.gemini, timeout_s=cfg.timeout_s, api_key=api_key)
    if cfg.backend == "openai":
        from aira_jax.discovery.llm.backends.openai_compat import OpenAICompatBackend
        return OpenAICompatBackend(cfg.openai, timeout_s=cfg.timeout_s, api_key=api_key)
    raise LLMError(f"unknown llm backend {cfg.backend!r}")


__all__ = ["Backend", "Handler", "OfflineBackend", "make_backend", "parse_retry_after", "status_error"]
