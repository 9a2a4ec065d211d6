"""Tools the model may call, and the in-memory workspace the Researcher, Checker and Debugger edit.

A tool is a name, a description, a JSON schema of its arguments and a Python function of those arguments that
returns text. The client validates the arguments, runs the function and feeds the text (or the error) back to
the model; a tool can never crash a call. The workspace is a dict of files in memory: agents read the parent
program and write `design.py` without touching the disk.
"""
from __future__ import annotations

import dataclasses
import re
import threading
from typing import Any, Callable, Iterable, Mapping

import jsonschema

from aira_jax.discovery.llm.types import LLMError, ToolCall, ToolSpec

_TOOL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
_PATH_RE = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")
MAX_RESULT_CHARS = 60_000   # what one tool result may feed back to the model


class ToolError(Exception):
    """Raised by a tool for a bad request; its message goes back to the model."""


@dataclasses.dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., str]

    def __post_init__(self):
        if not _TOOL_NAME_RE.match(self.name):
            raise LLMError(f"tool name {self.name!r} must match {_TOOL_NAME_RE.pattern}")
        if self.parameters.get("type") != "object":
            raise LLMError(f"tool {self.name!r} parameters must be a JSON schema of type 'object'")
        jsonschema.Draft202012Validator.check_schema(self.parameters)

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)


def run_tool(tools: Mapping[str, Tool], call: ToolCall) -> tuple[bool, str]:
    """(ok, text to feed back). Unknown tools, bad arguments and exceptions become error texts."""
    tool = tools.get(call.name)
    if tool is None:
        return False, f"error: there is no tool named {call.name!r}; available: {sorted(tools)}"
    if call.raw_arguments is not None:
        return False, f"error: the arguments of {call.name!r} were not valid JSON: {call.raw_arguments[:200]!r}"
    errors = list(jsonschema.Draft202012Validator(tool.parameters).iter_errors(call.arguments))
    if errors:
        msgs = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or 'arguments'}: {e.message[:200]}" for e in errors[:4])
        return False, f"error: bad arguments for {call.name!r}: {msgs}"
    try:
        result = tool.fn(**call.arguments)
    except ToolError as e:
        return False, f"error: {e}"
    except Exception as e:  # noqa: BLE001 - a tool bug must reach the model and the record, not kill the loop
        return False, f"error: {call.name} raised {type(e).__name__}: {e}"
    text = result if isinstance(result, str) else str(result)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"\n... [truncated: {len(text) - MAX_RESULT_CHARS} more characters]"
    return True, text


class Workspace:
    """Files in memory, keyed by relative path; thread-safe; optional read-only paths and a size cap."""

    def __init__(self, files: Mapping[str, str] | None = None, *, read_only: Iterable[str] = (),
                 max_file_chars: int = 200_000, max_files: int = 64):
        self._lock = threading.Lock()
        self._files: dict[str, str] = {}
        self.read_only = frozenset(read_only)
        self.max_file_chars = max_file_chars
        self.max_files = max_files
        self.writes: list[str] = []   # paths written, in order (the loop reads what the agent changed)
        for path, text in (files or {}).items():
            self._files[self._check_path(path)] = text

    @staticmethod
    def _check_path(path: Any) -> str:
        if not isinstance(path, str) or not _PATH_RE.match(path) or any(p in (".", "..") for p in path.split("/")):
            raise ToolError(f"invalid path {path!r}: use a relative path like 'design.py' or 'references/x.py'")
        return path

    def read(self, path: str) -> str:
        path = self._check_path(path)
        with self._lock:
            if path not in self._files:
                raise ToolError(f"no file {path!r}; files: {sorted(self._files)}")
            return self._files[path]

    def write(self, path: str, content: str) -> None:
        path = self._check_path(path)
        if path in self.read_only:
            raise ToolError(f"{path!r} is read-only; write your program to another file (e.g. 'design.py')")
        if not isinstance(content, str):
            raise ToolError("content must be a string")
        if len(content) > self.max_file_chars:
            raise ToolError(f"{path!r} would have {len(content)} characters; the limit is {self.max_file_chars}")
        with self._lock:
            if path not in self._files and len(self._files) >= self.max_files:
                raise ToolError(f"the workspace already holds {self.max_files} files")
            self._files[path] = content
            self.writes.append(path)

    def get(self, path: str, default: str | None = None) -> str | None:
        with self._lock:
            return self._files.get(path, default)

    def files(self) -> dict[str, str]:
        with self._lock:
            return dict(self._files)

    def __contains__(self, path: str) -> bool:
        with self._lock:
            return path in self._files


def workspace_tools(ws: Workspace, *, writable: bool = True) -> list[Tool]:
    """read_file, list_files and (when writable) write_file and replace_in_file over `ws`."""

    def read_file(path: str) -> str:
        return ws.read(path)

    def list_files() -> str:
        return "\n".join(f"{p} ({len(t)} characters)" for p, t in sorted(ws.files().items())) or "(no files)"

    def write_file(path: str, content: str) -> str:
        ws.write(path, content)
        return f"wrote {path} ({len(content)} characters, {content.count(chr(10)) + 1} lines)"

    def replace_in_file(path: str, old: str, new: str) -> str:
        text = ws.read(path)
        n = text.count(old) if old else 0
        if n != 1:
            raise ToolError(f"'old' must occur exactly once in {path!r}; it occurs {n} times "
                            "(quote more surrounding lines to make it unique)")
        ws.write(path, text.replace(old, new, 1))
        return f"replaced 1 occurrence in {path}"

    path_arg = {"type": "string", "description": "relative path, e.g. 'design.py'"}
    tools = [
        Tool("read_file", "Read a file of the workspace.",
             {"type": "object", "properties": {"path": path_arg}, "required": ["path"]}, read_file),
        Tool("list_files", "List the files of the workspace with their sizes.",
             {"type": "object", "properties": {}}, list_files),
    ]
    if writable:
        tools += [
            Tool("write_file", "Create or overwrite a file with the complete new content.",
                 {"type": "object", "properties": {"path": path_arg, "content": {"type": "string"}},
                  "required": ["path", "content"]}, write_file),
            Tool("replace_in_file", "Replace one exact, unique occurrence of 'old' by 'new' in a file.",
                 {"type": "object", "properties": {"path": path_arg, "old": {"type": "string"},
                                                   "new": {"type": "string"}},
                  "required": ["path", "old", "new"]}, replace_in_file),
        ]
    return tools
