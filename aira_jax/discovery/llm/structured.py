"""Structured output: find the JSON object in a reply, validate it against a JSON schema, phrase the error.

Models wrap JSON in code fences or add a sentence around it even when asked not to, so the parser tries the
whole text, then fenced blocks, then the outermost braces. The error messages are written to be fed back to the
model in a re-ask, so they name the path and the problem plainly.
"""
from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

from aira_jax.discovery.llm.types import FailureKind, LLMError

_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.DOTALL)
_MAX_ERRORS = 6


class OutputError(Exception):
    """A reply that cannot be used; `kind` is MALFORMED_OUTPUT, SCHEMA_VIOLATION or CHECK_FAILED."""

    def __init__(self, kind: FailureKind, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def check_schema(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """A validator for `schema`; raises LLMError (a caller's bug) when the schema itself is invalid."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise LLMError(f"invalid JSON schema: {e.message} at {'/'.join(map(str, e.path)) or 'top level'}") from None
    return cls(schema)


def extract_json(text: str) -> Any:
    """The JSON value in `text`; raises OutputError(MALFORMED_OUTPUT) saying why none could be read."""
    stripped = text.strip()
    if not stripped:
        raise OutputError(FailureKind.MALFORMED_OUTPUT, "the reply was empty; a JSON object was expected")
    candidates = [stripped] + [m.group(1).strip() for m in _FENCE_RE.finditer(text)]
    first, last = stripped.find("{"), stripped.rfind("}")
    if 0 <= first < last:
        candidates.append(stripped[first:last + 1])
    first_error = None
    for c in candidates:
        try:
            return json.loads(c)
        except json.JSONDecodeError as e:
            first_error = first_error or e
    assert first_error is not None
    raise OutputError(FailureKind.MALFORMED_OUTPUT,
                      f"the reply is not valid JSON ({first_error.msg} at line {first_error.lineno} column "
                      f"{first_error.colno}); reply with one JSON object and nothing else")


def validate(value: Any, validator: jsonschema.protocols.Validator) -> None:
    """Raises OutputError(SCHEMA_VIOLATION) listing the first few violations with their paths."""
    errors = sorted(validator.iter_errors(value), key=lambda e: (len(e.path), list(map(str, e.path))))
    if not errors:
        return
    lines = []
    for e in errors[:_MAX_ERRORS]:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        lines.append(f"- at {where}: {_short(e.message)}")
    more = f"\n- ... and {len(errors) - _MAX_ERRORS} more" if len(errors) > _MAX_ERRORS else ""
    raise OutputError(FailureKind.SCHEMA_VIOLATION,
                      "the JSON does not match the required schema:\n" + "\n".join(lines) + more)


def _short(message: str, limit: int = 300) -> str:
    # jsonschema quotes the whole offending value, which may be a long program.
    return message if len(message) <= limit else message[:limit] + "..."


def parse_structured(text: str, validator: jsonschema.protocols.Validator) -> Any:
    value = extract_json(text)
    validate(value, validator)
    return value


def schema_instruction(schema: dict[str, Any]) -> str:
    """The sentence appended to the system message when a schema is requested."""
    return ("Your final reply must be exactly one JSON object, with no text before or after it, that matches "
            "this JSON schema:\n" + json.dumps(schema, indent=1, sort_keys=True))


def reask_message(error: OutputError) -> str:
    return (f"Your previous reply could not be used: {error.message}\n"
            "Answer again, fixing this. Keep everything that was right.")
