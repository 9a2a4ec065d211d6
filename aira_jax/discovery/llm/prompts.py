"""Loads the per-role prompt templates of prompts/ and fills their {placeholders}.

A template file has two sections, each opened by a marker line:

    === system ===
    ...instructions...
    === user ===
    ...the task, with {placeholders}...

A placeholder is `{identifier}`; any other brace (JSON examples, Python dicts) is left alone, and `{{name}}` writes
a literal `{name}`. A missing value is an error naming the role, the placeholder and the file. Text before the
system marker is a comment for maintainers and is not sent.

Shared snippets: a file `_<name>.md` in the same directory (e.g. `_design_contract.md`) is the default value of the
placeholder `{<name>}` in every template, so the design-program contract is written once. The version of a prompt
is the hash of its file and of the snippets it uses, recorded with every call that used it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Mapping

from aira_jax.discovery.llm.types import LLMError, Message

PROMPTS_DIR_ENV = "AIRA_PROMPTS_DIR"
_REPO_PROMPTS = Path(__file__).resolve().parents[3] / "prompts"
_SECTION_RE = re.compile(r"^=== (system|user) ===[ \t]*$", re.MULTILINE)
_PLACEHOLDER_RE = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ROLE_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class PromptError(LLMError):
    """A prompt file that is missing or malformed, or a placeholder without a value."""


@dataclasses.dataclass(frozen=True)
class RenderedPrompt:
    role: str
    system: str
    user: str
    version: str    # sha256 of the template file, first 12 hex digits
    path: str

    def messages(self) -> tuple[Message, ...]:
        return (Message("system", self.system), Message("user", self.user))


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    role: str
    system: str
    user: str
    version: str
    path: str
    defaults: Mapping[str, str] = dataclasses.field(default_factory=dict)   # shared snippets

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(m.group(2) for m in _PLACEHOLDER_RE.finditer(self.system + "\n" + self.user)
                         if m.group(2))

    def render(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> RenderedPrompt:
        """Fills every placeholder. Extra values are ignored, so one context can serve several roles."""
        values = {**self.defaults, **(values or {}), **kwargs}
        missing = sorted(self.placeholders - set(values))
        if missing:
            raise PromptError(f"prompt {self.role!r} ({self.path}) needs values for {missing}; "
                              f"got {sorted(values)}")
        nones = sorted(k for k in self.placeholders if values[k] is None)
        if nones:
            raise PromptError(f"prompt {self.role!r}: placeholders {nones} are None (pass '' for an empty value)")

        def sub(m: re.Match) -> str:
            if m.group(1):
                return "{" + m.group(1) + "}"
            return str(values[m.group(2)])

        return RenderedPrompt(self.role, _PLACEHOLDER_RE.sub(sub, self.system).strip(),
                              _PLACEHOLDER_RE.sub(sub, self.user).strip(), self.version, self.path)


def prompts_dir(directory: str | os.PathLike | None = None) -> Path:
    d = Path(directory or os.environ.get(PROMPTS_DIR_ENV) or _REPO_PROMPTS)
    if not d.is_dir():
        raise PromptError(f"prompt directory {d} does not exist (set ${PROMPTS_DIR_ENV} or pass prompts_dir)")
    return d


def load_prompt(role: str, directory: str | os.PathLike | None = None) -> PromptTemplate:
    if not isinstance(role, str) or not _ROLE_RE.match(role):
        raise PromptError(f"invalid prompt role {role!r}: use lower-case letters, digits and '_'")
    d = prompts_dir(directory)
    candidates = [d / f"{role}.md", d / f"{role}.txt"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise PromptError(f"no prompt for role {role!r} in {d} (have: {list(available_roles(d))})")
    raw = path.read_text(encoding="utf-8")
    template = parse_template(role, raw, str(path))
    snippets = {name: (d / f"_{name}.md").read_text(encoding="utf-8").strip()
                for name in sorted(template.placeholders) if (d / f"_{name}.md").is_file()}
    if not snippets:
        return template
    digest = hashlib.sha256(raw.encode("utf-8"))
    for name, text in snippets.items():
        digest.update(f"\0{name}\0{text}".encode("utf-8"))
    return dataclasses.replace(template, defaults=snippets, version=digest.hexdigest()[:12])


def parse_template(role: str, raw: str, path: str = "<string>") -> PromptTemplate:
    marks = list(_SECTION_RE.finditer(raw))
    names = [m.group(1) for m in marks]
    if names != ["system", "user"]:
        raise PromptError(f"prompt {path} must have exactly a '=== system ===' then a '=== user ===' section "
                          f"line, found {names}")
    system = raw[marks[0].end():marks[1].start()]
    user = raw[marks[1].end():]
    version = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:12]
    return PromptTemplate(role, system, user, version, path)


def render_prompt(role: str, values: Mapping[str, Any] | None = None, *,
                  directory: str | os.PathLike | None = None, **kwargs: Any) -> RenderedPrompt:
    """`load_prompt(role).render(values, **kwargs)`."""
    return load_prompt(role, directory).render(values, **kwargs)


def available_roles(directory: str | os.PathLike | None = None) -> tuple[str, ...]:
    d = prompts_dir(directory)
    return tuple(sorted(p.stem for p in list(d.glob("*.md")) + list(d.glob("*.txt"))
                        if p.stem.lower() != "readme" and not p.stem.startswith("_")))
