"""Configuration of the LLM layer: backend, a model per role, retries, timeouts, cache, prices.

`default_llm_config()` returns the ml_collections block that experiment configs embed as `config.llm`, so every
field is overridable on the command line (`--config.llm.backend=openai --config.llm.openai.base_url=...`).
`LLMConfig.from_config` turns it into the typed, validated form the client uses.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import ml_collections

from aira_jax.discovery.llm.types import LLMError

BACKENDS = ("gemini", "openai", "offline")

# The roles whose prompts live in prompts/; other role names are allowed (they use the default model).
AGENT_ROLES = ("researcher", "novelty_check", "break_pattern", "code_checker", "debugger", "analyst", "judge",
               "summarizer", "cognition_extraction", "composer", "compose_analyst")


@dataclasses.dataclass(frozen=True)
class RetryConfig:
    """Exponential backoff with jitter: delay_n = min(max_delay, initial * multiplier**n) * (1 - jitter*U[0,1))."""
    max_attempts: int = 5          # per backend request, the first try included
    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.5            # fraction of the delay drawn at random, so that workers do not retry in step

    def __post_init__(self):
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise LLMError(f"retry.max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        for name in ("initial_delay_s", "max_delay_s", "multiplier", "jitter"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise LLMError(f"retry.{name} must be a finite number >= 0, got {v!r}")
        if self.multiplier < 1 or self.jitter > 1:
            raise LLMError(f"retry.multiplier must be >= 1 and retry.jitter in [0, 1], got "
                           f"{self.multiplier}, {self.jitter}")


@dataclasses.dataclass(frozen=True)
class GeminiConfig:
    api_key_env: str = "GEMINI_API_KEY"   # also falls back to GOOGLE_API_KEY, as google-genai does
    vertexai: bool = False                # Vertex AI: project/location with application-default credentials
    project: str = ""
    location: str = ""
    base_url: str = ""                    # empty = the SDK's default endpoint
    api_version: str = ""


@dataclasses.dataclass(frozen=True)
class OpenAIConfig:
    base_url: str = ""                    # e.g. http://localhost:8000/v1 for vLLM / llama.cpp / SGLang
    api_key_env: str = "OPENAI_API_KEY"   # local servers accept any key; a placeholder is used when unset
    response_format: str = "json_schema"  # 'json_schema' | 'json_object' | 'none' (what the server supports)

    def __post_init__(self):
        if self.response_format not in ("json_schema", "json_object", "none"):
            raise LLMError(f"openai.response_format must be 'json_schema', 'json_object' or 'none', "
                           f"got {self.response_format!r}")


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    backend: str = "offline"
    default_model: str = "offline"
    models: Mapping[str, str] = dataclasses.field(default_factory=dict)          # role -> model
    temperatures: Mapping[str, float] = dataclasses.field(default_factory=dict)  # role -> temperature
    temperature: float | None = None      # default for roles not in `temperatures` (None = the server's default)
    seed: int | None = None               # passed to backends that take one; part of the cache key
    max_output_tokens: int | None = None
    timeout_s: float = 120.0              # per request
    retry: RetryConfig = RetryConfig()
    max_reasks: int = 2                   # re-asks after malformed JSON / schema violation / failed check
    max_tool_turns: int = 12              # backend round trips that may end in tool calls, per call
    cache_dir: str = ""                   # empty = no on-disk cache
    log_path: str = ""                    # JSONL file of call records (empty = in memory only)
    prices: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)  # model -> USD/1M in, out
    schema_in_prompt: bool = True         # also state the JSON schema in the system message (not all servers
                                          # enforce native structured output)
    gemini: GeminiConfig = GeminiConfig()
    openai: OpenAIConfig = OpenAIConfig()

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise LLMError(f"llm.backend must be one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(self.default_model, str) or not self.default_model:
            raise LLMError("llm.default_model must be a non-empty model name")
        for role, model in self.models.items():
            if not isinstance(model, str) or not model:
                raise LLMError(f"llm.models[{role!r}] must be a non-empty model name, got {model!r}")
        if not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise LLMError(f"llm.timeout_s must be > 0, got {self.timeout_s!r}")
        for name in ("max_reasks", "max_tool_turns"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise LLMError(f"llm.{name} must be an integer >= 0, got {v!r}")
        for model, price in self.prices.items():
            if (not isinstance(price, (tuple, list)) or len(price) != 2
                    or not all(isinstance(p, (int, float)) and p >= 0 for p in price)):
                raise LLMError(f"llm.prices[{model!r}] must be (USD per 1M input tokens, USD per 1M output tokens), "
                               f"got {price!r}")

    def model_for(self, role: str) -> str:
        return self.models.get(role, self.default_model)

    def temperature_for(self, role: str) -> float | None:
        return self.temperatures.get(role, self.temperature)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | ml_collections.ConfigDict) -> "LLMConfig":
        """From `default_llm_config()` (possibly overridden) or a plain mapping with the same fields."""
        d = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise LLMError(f"unknown llm config fields {sorted(unknown)}; known: {sorted(known)}")
        nested = {"retry": RetryConfig, "gemini": GeminiConfig, "openai": OpenAIConfig}
        for name, sub in nested.items():
            if name in d and not isinstance(d[name], sub):
                sub_d = dict(d[name] or {})
                bad = set(sub_d) - {f.name for f in dataclasses.fields(sub)}
                if bad:
                    raise LLMError(f"unknown llm.{name} fields {sorted(bad)}")
                d[name] = sub(**sub_d)
        for name in ("models", "temperatures", "prices"):
            if name in d:
                d[name] = dict(d[name] or {})
        # Unset per-role slots ('' model, negative temperature) fall back to the defaults.
        d["models"] = {r: m for r, m in d.get("models", {}).items() if m != ""}
        d["temperatures"] = {r: t for r, t in d.get("temperatures", {}).items()
                             if not (isinstance(t, (int, float)) and t < 0)}
        if "prices" in d:
            d["prices"] = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in d["prices"].items()}
        # A ConfigDict field keeps its type when overridden, so 'unset' is spelled -1 (or any negative temperature).
        if isinstance(d.get("temperature"), (int, float)) and d["temperature"] < 0:
            d["temperature"] = None
        for name in ("seed", "max_output_tokens"):
            if d.get(name) == -1:
                d[name] = None
        return cls(**d)


# Which roles need the strong model and which a fast one (ASI-Arch planned and analysed with a strong model and
# summarised with a fast one).
STRONG_ROLES = ("researcher", "break_pattern", "code_checker", "debugger", "analyst", "judge", "novelty_check",
                "composer", "compose_analyst")
FAST_ROLES = ("summarizer", "cognition_extraction")


def tiered_models(strong: str, fast: str) -> dict[str, str]:
    """A role -> model map: `strong` for planning, checking and judging, `fast` for summaries and extraction."""
    return {**{r: strong for r in STRONG_ROLES}, **{r: fast for r in FAST_ROLES}}


def default_llm_config() -> ml_collections.ConfigDict:
    """The `config.llm` block. A ConfigDict field keeps its type when overridden from the command line, so unset
    values are spelled: '' for a role's model (= default_model), -1 for seed and max_output_tokens, and a negative
    temperature (= the server's default). Every agent role has a slot, so `--config.llm.models.judge=...` works."""
    c = ml_collections.ConfigDict()
    c.backend = "offline"
    c.default_model = "offline"
    # A strong model plans and judges, a fast one summarises (as ASI-Arch did); override per deployment.
    c.models = ml_collections.ConfigDict({r: "" for r in AGENT_ROLES})
    c.temperatures = ml_collections.ConfigDict({r: -1.0 for r in AGENT_ROLES})
    c.temperature = -1.0
    c.seed = -1
    c.max_output_tokens = -1
    c.timeout_s = 120.0
    c.retry = ml_collections.ConfigDict(dataclasses.asdict(RetryConfig()))
    c.max_reasks = 2
    c.max_tool_turns = 12
    c.cache_dir = ""
    c.log_path = ""
    c.prices = ml_collections.ConfigDict({})
    c.schema_in_prompt = True
    c.gemini = ml_collections.ConfigDict(dataclasses.asdict(GeminiConfig()))
    c.openai = ml_collections.ConfigDict(dataclasses.asdict(OpenAIConfig()))
    return c


def llm_config_from(cfg: Mapping[str, Any] | ml_collections.ConfigDict | LLMConfig) -> LLMConfig:
    """Accepts an LLMConfig as is, or a ConfigDict/mapping in `default_llm_config()`'s form."""
    return cfg if isinstance(cfg, LLMConfig) else LLMConfig.from_config(cfg)
