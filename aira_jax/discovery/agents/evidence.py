"""The machine-readable evidence block every agent request carries after its prompt.

The prompts in prompts/ present the evidence as prose for a model to read; the same facts also travel as one JSON
object between `<evidence>` tags at the end of the user message. A model may use it (exact numbers, lists of
edits); the offline agents (aira_jax.discovery.offline) read only it, so the loop code is identical with and
without an LLM: both receive the same request.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import math
import re
from typing import Any, Mapping, Sequence

from aira_jax.discovery.llm import Message

_OPEN, _CLOSE = "<evidence>", "</evidence>"
_BLOCK_RE = re.compile(re.escape(_OPEN) + r"\s*(\{.*?\})\s*" + re.escape(_CLOSE), re.DOTALL)
_INTRO = "The same evidence as JSON (exact values):"


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become None, tuples lists, dataclasses dicts."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _clean(dataclasses.asdict(value))
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _clean(value.item())
    return value


def evidence_text(data: Mapping[str, Any]) -> str:
    return f"{_INTRO}\n{_OPEN}\n{json.dumps(_clean(data), sort_keys=True, allow_nan=False)}\n{_CLOSE}"


@dataclasses.dataclass(frozen=True)
class PromptWithEvidence:
    """A rendered prompt plus the evidence block; keeps the template's version for the call record."""
    base: tuple[Message, ...]
    version: str = ""

    def messages(self) -> tuple[Message, ...]:
        return self.base


def with_evidence(prompt: Any, data: Mapping[str, Any], *, extra: str = "") -> PromptWithEvidence:
    """The prompt's messages with `extra` (e.g. gate feedback) and the evidence block appended to the last user
    message."""
    msgs = list(prompt.messages()) if hasattr(prompt, "messages") else [Message("user", str(prompt))]
    last = max(i for i, m in enumerate(msgs) if m.role == "user")
    tail = "\n\n".join(t for t in (extra.strip(), evidence_text(data)) if t)
    msgs[last] = dataclasses.replace(msgs[last], content=f"{msgs[last].content}\n\n{tail}")
    return PromptWithEvidence(tuple(msgs), getattr(prompt, "version", "") or "")


def read_evidence(messages: Sequence[Message]) -> dict[str, Any]:
    """The evidence of a request: the last block found in its user messages ({} when there is none)."""
    for m in reversed(list(messages)):
        if m.role != "user":
            continue
        found = _BLOCK_RE.findall(m.content)
        if found:
            try:
                value = json.loads(found[-1])
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


def program_fingerprint(source: str) -> str:
    """Identity of what a program computes, up to comments, docstrings and formatting (sha256 of its AST);
    the raw text's hash when it does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return "text:" + hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode("utf-8")).hexdigest()[:16]
