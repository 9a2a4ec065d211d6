"""The cognition base: design knowledge the agents retrieve (ASI-Arch's 'cognition').

Each entry says WHEN it applies (`trigger`: the situation an analyst would describe), WHAT to do (`algorithm`),
WHY it works (`background`) and HOW to build it in a causal JAX mixer (`guidance`), with its `source`. A starter
base for linear attention, SSMs and hybrids ships in cognition_data/starter.jsonl; users add their own JSONL
files, or extract entries from a paper's text with the LLM layer (`extract_cognition`).

Retrieval is TF-IDF with cosine similarity (scikit-learn) over the entries' text, the trigger counted twice
because queries describe situations. `retrieval_record` turns hits into the store's CognitionRetrieval record.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import linear_kernel

from aira_jax.discovery.records import CognitionEntry, CognitionRetrieval

STARTER_PATH = Path(__file__).resolve().parent / "cognition_data" / "starter.jsonl"
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,95}$")
TEXT_FIELDS = ("title", "trigger", "algorithm", "background", "guidance")


class CognitionError(ValueError):
    """A malformed entry or file, a duplicate id, or a bad query."""


@dataclasses.dataclass(frozen=True)
class Cognition:
    id: str
    title: str
    trigger: str      # the situation in which the entry applies (what retrieval matches against)
    algorithm: str    # what to compute
    background: str   # why it works
    guidance: str     # how to implement it here, pitfalls
    source: str = ""  # paper(s) or 'user'
    tags: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.id, str) or not _ID_RE.match(self.id):
            raise CognitionError(f"cognition id {self.id!r} must be 1-96 characters of [a-z0-9_.-]")
        for name in TEXT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise CognitionError(f"cognition entry {self.id!r}: {name} must be a non-empty string")
        if not isinstance(self.source, str):
            raise CognitionError(f"cognition entry {self.id!r}: source must be a string")
        if isinstance(self.tags, str) or not all(isinstance(t, str) for t in self.tags):
            raise CognitionError(f"cognition entry {self.id!r}: tags must be a list of strings")
        object.__setattr__(self, "tags", tuple(self.tags))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Cognition":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise CognitionError(f"cognition entry has unknown fields {sorted(unknown)}; known: {sorted(names)}")
        missing = {"id", *TEXT_FIELDS} - set(d)
        if missing:
            raise CognitionError(f"cognition entry {d.get('id', '?')!r} lacks fields {sorted(missing)}")
        return cls(**{**d, "tags": tuple(d.get("tags") or ())})

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "tags": list(self.tags)}

    def index_text(self) -> str:
        return " ".join([self.title, self.trigger, self.trigger, self.algorithm, self.background, self.guidance,
                         " ".join(self.tags)])

    def render(self) -> str:
        """The entry as shown to an agent (the `{cognition}` placeholder of the prompts)."""
        text = (f"[{self.id}] {self.title}\n  When: {self.trigger}\n  Idea: {self.algorithm}\n"
                f"  Why: {self.background}\n  How: {self.guidance}")
        return text + (f"\n  Source: {self.source}" if self.source else "")


@dataclasses.dataclass(frozen=True)
class Hit:
    entry: Cognition
    score: float   # cosine similarity in [0, 1]


class CognitionBase:
    """An in-memory set of entries with TF-IDF retrieval; the index is rebuilt lazily after changes."""

    def __init__(self, entries: Iterable[Cognition] = ()):
        self._entries: dict[str, Cognition] = {}
        self._index = None
        self.extend(entries)

    @classmethod
    def starter(cls) -> "CognitionBase":
        base = cls()
        base.load_jsonl(STARTER_PATH)
        return base

    # ------------------------------------------------------------------------------------------ contents
    def add(self, entry: Cognition) -> None:
        if not isinstance(entry, Cognition):
            raise CognitionError(f"expected a Cognition entry, got {type(entry).__name__}")
        if entry.id in self._entries:
            raise CognitionError(f"duplicate cognition id {entry.id!r}")
        self._entries[entry.id] = entry
        self._index = None

    def extend(self, entries: Iterable[Cognition]) -> None:
        for e in entries:
            self.add(e)

    def load_jsonl(self, path: str | os.PathLike) -> int:
        """Adds the entries of a JSONL file (one object per line; blank lines and '#' lines skipped)."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise CognitionError(f"cannot read cognition file {path}: {e}") from None
        new = []
        for i, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                new.append(Cognition.from_dict(json.loads(line)))
            except (json.JSONDecodeError, CognitionError, TypeError) as e:
                raise CognitionError(f"{path}:{i}: {e}") from None
        ids = [e.id for e in new]
        clash = sorted({i for i in ids if ids.count(i) > 1} | (set(ids) & set(self._entries)))
        if clash:
            raise CognitionError(f"{path}: duplicate cognition ids {clash}")
        self.extend(new)
        return len(new)

    def save_jsonl(self, path: str | os.PathLike) -> None:
        Path(path).write_text("".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in self),
                              encoding="utf-8")

    def get(self, entry_id: str) -> Cognition:
        try:
            return self._entries[entry_id]
        except KeyError:
            raise CognitionError(f"no cognition entry {entry_id!r}") from None

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Cognition]:
        return iter(self._entries.values())

    def __contains__(self, entry_id: str) -> bool:
        return entry_id in self._entries

    # ------------------------------------------------------------------------------------------ retrieval
    def _fitted(self):
        if self._index is None:
            entries = list(self._entries.values())
            vectorizer = TfidfVectorizer(stop_words="english", ngram_range=(1, 2), sublinear_tf=True,
                                         token_pattern=r"(?u)\b[\w\-]{2,}\b")
            matrix = vectorizer.fit_transform([e.index_text() for e in entries])
            self._index = (vectorizer, matrix, entries)
        return self._index

    def retrieve(self, query: str, k: int = 3, *, min_score: float = 0.0) -> list[Hit]:
        """The k entries most similar to `query` (cosine over TF-IDF), best first; entries with no shared term
        (score 0) or below `min_score` are left out, so fewer than k may come back."""
        if not isinstance(query, str) or not query.strip():
            raise CognitionError("cognition query must be a non-empty string")
        if not isinstance(k, int) or k < 1:
            raise CognitionError(f"k must be a positive integer, got {k!r}")
        if not self._entries:
            return []
        vectorizer, matrix, entries = self._fitted()
        scores = linear_kernel(vectorizer.transform([query]), matrix).ravel()   # rows are L2-normalised
        order = sorted(range(len(entries)), key=lambda i: (-scores[i], entries[i].id))
        return [Hit(entries[i], float(scores[i])) for i in order[:k] if scores[i] > max(min_score, 0.0)]

    def retrieval_record(self, query: str, k: int = 3, *, stage: str = "proposal",
                         experiment_id: int | None = None) -> tuple[list[Hit], CognitionRetrieval]:
        """Hits plus the record the store keeps (`ExperimentStore.add_cognition`)."""
        hits = self.retrieve(query, k)
        record = CognitionRetrieval(
            entries=tuple(CognitionEntry(entry_id=h.entry.id, text=h.entry.render(), score=h.score) for h in hits),
            stage=stage, query=query, experiment_id=experiment_id)
        return hits, record


def format_hits(hits: Sequence[Hit]) -> str:
    """Text for a prompt's `{cognition}` placeholder."""
    if not hits:
        return "(no relevant notes found)"
    return "\n\n".join(h.entry.render() for h in hits)


# ---------------------------------------------------------------------------------------------- extraction
@dataclasses.dataclass(frozen=True)
class ExtractionResult:
    entries: tuple[Cognition, ...]
    replies: tuple[Any, ...]          # the LLM Replies, one per chunk of the paper (records for the store)
    failures: tuple[str, ...]         # a message per chunk that failed; the other chunks' entries are kept

    @property
    def ok(self) -> bool:
        return not self.failures


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:60].rstrip("-") or "entry"


def _chunks(text: str, size: int) -> list[str]:
    """Splits at paragraph breaks where possible, so an idea is rarely cut in half."""
    if len(text) <= size:
        return [text]
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind("\n\n", start + size // 2, end)
            end = cut if cut > start else end
        out.append(text[start:end])
        start = end
    return out


def extract_cognition(client, paper_text: str, *, source: str, max_entries: int = 8,
                      chunk_chars: int = 40_000, experiment: str | int | None = None,
                      existing: CognitionBase | None = None) -> ExtractionResult:
    """Turns a paper's text into entries with the `cognition_extraction` prompt and its JSON schema.

    Long texts are split into chunks of `chunk_chars`, one LLM call each; entries with a title seen before are
    dropped. Ids are '<slug of title>-<hash of source>' and never clash with `existing`. A failed chunk is
    reported in `failures` (the call's typed failure), never raised.
    """
    from aira_jax.discovery.llm import render_prompt, schemas   # the LLM layer is only needed here

    if not isinstance(paper_text, str) or not paper_text.strip():
        raise CognitionError("paper_text must be a non-empty string")
    if not isinstance(source, str) or not source.strip():
        raise CognitionError("source must name the paper (e.g. 'Yang et al. 2024, Gated Delta Networks')")
    taken = set() if existing is None else {e.id for e in existing}
    tag = hashlib.sha256(source.encode("utf-8")).hexdigest()[:6]
    entries, replies, failures, titles = [], [], [], set()
    for n, chunk in enumerate(_chunks(paper_text, chunk_chars)):
        prompt = render_prompt("cognition_extraction", source=source, max_entries=max_entries, paper_text=chunk)
        reply = client.complete("cognition_extraction", prompt, schema=schemas.COGNITION_EXTRACTION,
                                experiment=experiment)
        replies.append(reply)
        if not reply.ok:
            failures.append(f"chunk {n}: {reply.failure.kind.value}: {reply.failure.message}")
            continue
        for item in reply.data["entries"][:max_entries]:
            key = item["title"].strip().lower()
            if key in titles:
                continue
            titles.add(key)
            base_id = f"{_slug(item['title'])}-{tag}"
            entry_id, i = base_id, 2
            while entry_id in taken:
                entry_id, i = f"{base_id}-{i}", i + 1
            taken.add(entry_id)
            entries.append(Cognition(id=entry_id, title=item["title"].strip(), trigger=item["trigger"].strip(),
                                     algorithm=item["algorithm"].strip(), background=item["background"].strip(),
                                     guidance=item["guidance"].strip(), source=source))
    return ExtractionResult(tuple(entries), tuple(replies), tuple(failures))
