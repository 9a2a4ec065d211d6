"""The LLM layer of the discovery loop: one client, three backends (Gemini, OpenAI-compatible, offline).

    client = make_client(config.llm)                        # or LLMClient(LLMConfig(...), offline_handlers=...)
    prompt = render_prompt("researcher", parent_program=..., ...)
    ws = Workspace({"parent.py": src}, read_only=["parent.py"])
    reply = client.complete("researcher", prompt, schema=schemas.RESEARCHER, tools=workspace_tools(ws),
                            check=workspace_program_check(ws), experiment=exp_id)
    if reply.ok: reply.data, ws.get("design.py")  else: reply.failure.kind
    store the call: reply.record.to_dict()
"""
from aira_jax.discovery.llm import schemas
from aira_jax.discovery.llm.accounting import DEFAULT_PRICES, CostLedger, PriceTable, Tally
from aira_jax.discovery.llm.backends import Backend, OfflineBackend, make_backend
from aira_jax.discovery.llm.cache import ResponseCache, cache_key
from aira_jax.discovery.llm.client import LLMClient, make_client
from aira_jax.discovery.llm.config import (AGENT_ROLES, GeminiConfig, LLMConfig, OpenAIConfig, RetryConfig,
                                           default_llm_config, llm_config_from, tiered_models)
from aira_jax.discovery.llm.contract import DESIGN_FILE, program_problems, workspace_program_check
from aira_jax.discovery.llm.prompts import (PromptError, PromptTemplate, RenderedPrompt, available_roles,
                                            load_prompt, render_prompt)
from aira_jax.discovery.llm.tools import Tool, ToolError, Workspace, run_tool, workspace_tools
from aira_jax.discovery.llm.types import (AttemptRecord, BackendError, BackendRequest, BackendResponse, CallRecord,
                                          Failure, FailureKind, LLMCallFailed, LLMError, Message, Reply, ToolCall,
                                          ToolRunRecord, ToolSpec, Usage)

__all__ = [
    "AGENT_ROLES", "AttemptRecord", "Backend", "BackendError", "BackendRequest", "BackendResponse", "CallRecord",
    "CostLedger", "DEFAULT_PRICES", "DESIGN_FILE", "Failure", "FailureKind", "GeminiConfig", "LLMCallFailed",
    "LLMClient", "LLMConfig", "LLMError", "Message", "OfflineBackend", "OpenAIConfig", "PriceTable", "PromptError",
    "PromptTemplate", "RenderedPrompt", "Reply", "ResponseCache", "RetryConfig", "Tally", "Tool", "ToolCall",
    "ToolError", "ToolRunRecord", "ToolSpec", "Usage", "Workspace", "available_roles", "cache_key",
    "default_llm_config", "llm_config_from", "load_prompt", "make_backend", "make_client", "program_problems",
    "render_prompt", "run_tool", "schemas", "tiered_models", "workspace_program_check", "workspace_tools",
]
