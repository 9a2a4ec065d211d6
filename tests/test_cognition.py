"""The cognition base: starter entries, TF-IDF retrieval, user JSONL files, store records and LLM extraction."""
import hashlib
import json

import pytest

from aira_jax.discovery.cognition import (Cognition, CognitionBase, CognitionError, extract_cognition,
                                          format_hits)
from aira_jax.discovery.llm import BackendError, FailureKind, LLMClient, LLMConfig, RetryConfig
from aira_jax.discovery.records import CognitionRetrieval


def entry(i, trigger="some trigger text", **kw):
    return Cognition(id=f"e{i}", title=f"title {i}", trigger=trigger, algorithm="algorithm text",
                     background="background text", guidance="guidance text", **kw)


@pytest.fixture(scope="module")
def starter():
    return CognitionBase.starter()


def test_starter_base_is_substantial_and_well_formed(starter):
    assert len(starter) >= 25
    tags = {t for e in starter for t in e.tags}
    for topic in ("delta-rule", "decay", "convolution", "feature-map", "normalisation", "chunking", "hybrid",
                  "sliding-window", "multi-scale", "state-size", "gating"):
        assert topic in tags, topic
    for e in starter:
        assert e.source and len(e.trigger) > 40 and len(e.guidance) > 40, e.id


@pytest.mark.parametrize("query, expected", [
    ("the model fails associative recall; new keys overwrite old associations in memory", "delta-rule-update"),
    ("training diverges, loss spikes, state norm grows with unnormalised keys", "qk-l2norm"),
    ("poor on parity and other state tracking tasks", "negative-eigenvalue-beta"),
    ("weak at exact copying of recent tokens; add local sliding window attention", "swa-hybrid-layer"),
    ("throughput is low because the recurrence is a python loop or scan over time steps", "chunkwise-parallel"),
    ("all heads forget at the same rate, one time scale only", "multi-scale-decay"),
])
def test_retrieval_finds_the_relevant_entry(starter, query, expected):
    hits = starter.retrieve(query)
    assert len(hits) == 3 and expected in [h.entry.id for h in hits]
    assert hits[0].score >= hits[1].score >= hits[2].score > 0


def test_retrieval_edge_cases(starter):
    assert starter.retrieve("zzqx vvwk") == []                    # nothing shared: nothing returned
    assert len(starter.retrieve("decay", k=5)) == 5
    assert starter.retrieve("decay", k=3, min_score=0.99) == []
    with pytest.raises(CognitionError, match="non-empty"):
        starter.retrieve("  ")
    with pytest.raises(CognitionError, match="positive integer"):
        starter.retrieve("decay", k=0)
    assert CognitionBase().retrieve("anything") == []


def test_user_jsonl_entries_are_added_and_retrieved(tmp_path, starter):
    path = tmp_path / "mine.jsonl"
    path.write_text("# my notes\n\n" + json.dumps(entry(1, trigger="quaternion rotations of the hidden state "
                                                               "help periodic signals").to_dict()) + "\n")
    base = CognitionBase(list(starter))
    assert base.load_jsonl(path) == 1
    assert base.retrieve("periodic signals with quaternion rotations")[0].entry.id == "e1"
    out = tmp_path / "all.jsonl"
    base.save_jsonl(out)
    again = CognitionBase()
    again.load_jsonl(out)
    assert [e.to_dict() for e in again] == [e.to_dict() for e in base]


@pytest.mark.parametrize("line, match", [
    ('{"id": "x"', "mine.jsonl:2"),
    ('{"id": "x", "title": "t"}', "lacks fields"),
    (json.dumps({**entry(1).to_dict(), "colour": "red"}), "unknown fields"),
    (json.dumps({**entry(1).to_dict(), "id": "Bad Id"}), "must be 1-96 characters"),
    (json.dumps({**entry(1).to_dict(), "guidance": " "}), "guidance must be a non-empty string"),
])
def test_bad_jsonl_names_file_and_line(tmp_path, line, match):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(entry(0).to_dict()) + "\n" + line + "\n")
    with pytest.raises(CognitionError, match=match):
        CognitionBase().load_jsonl(path)


def test_duplicate_ids_rejected(tmp_path, starter):
    with pytest.raises(CognitionError, match="duplicate"):
        CognitionBase([entry(1), entry(1)])
    path = tmp_path / "dup.jsonl"
    path.write_text(json.dumps({**entry(1).to_dict(), "id": "delta-rule-update"}) + "\n")
    base = CognitionBase(list(starter))
    with pytest.raises(CognitionError, match="delta-rule-update"):
        base.load_jsonl(path)
    assert len(base) == len(starter)   # nothing half-added


def test_retrieval_record_for_the_store(starter):
    hits, record = starter.retrieval_record("memory overwritten, recall fails", k=2, stage="analysis",
                                            experiment_id=4)
    assert isinstance(record, CognitionRetrieval) and record.stage == "analysis" and record.experiment_id == 4
    assert [e.entry_id for e in record.entries] == [h.entry.id for h in hits]
    assert record.entries[0].score == pytest.approx(hits[0].score) and "When:" in record.entries[0].text
    assert CognitionRetrieval.from_json(record.to_json()) == record
    text = format_hits(hits)
    assert hits[0].entry.title in text and format_hits([]) == "(no relevant notes found)"


# ------------------------------------------------------------------------------------------ extraction
ITEM = {"title": "Decay the memory", "trigger": "stale context hurts long documents",
        "algorithm": "multiply the state by a learned decay", "background": "old items interfere with new ones",
        "guidance": "keep log decays in float32 and <= 0"}


def test_extraction_from_paper_text():
    seen = []

    def extractor(req):
        seen.append(req)
        return {"entries": [ITEM, dict(ITEM), {**ITEM, "title": "Second idea"}]}

    client = LLMClient(LLMConfig(), offline_handlers={"cognition_extraction": extractor})
    tag = hashlib.sha256(b"Doe 2025").hexdigest()[:6]
    existing = CognitionBase([Cognition(id=f"decay-the-memory-{tag}", **ITEM)])   # the id the first entry wants
    result = extract_cognition(client, "A paper about decays.\n\nMore text.", source="Doe 2025",
                               existing=existing, experiment="papers")
    assert result.ok and len(result.entries) == 2                     # the repeated title is dropped
    assert {e.source for e in result.entries} == {"Doe 2025"}
    assert [e.id for e in result.entries] == [f"decay-the-memory-{tag}-2", f"second-idea-{tag}"]
    assert "A paper about decays." in seen[0].messages[-1].content
    assert seen[0].schema["required"] == ["entries"]
    assert client.summary()["by_experiment"]["papers"]["calls"] == 1
    CognitionBase(result.entries)    # the entries are valid and distinct


def test_extraction_chunks_long_text_and_reports_failed_chunks():
    calls = {"n": 0}

    def extractor(req):
        calls["n"] += 1
        if calls["n"] == 2:
            raise BackendError(FailureKind.REQUEST_REJECTED, "too long", status_code=400)
        return {"entries": [{**ITEM, "title": f"Idea {calls['n']}"}]}

    client = LLMClient(LLMConfig(retry=RetryConfig(max_attempts=1)),
                       offline_handlers={"cognition_extraction": extractor})
    text = "\n\n".join(f"Paragraph {i}. " + "word " * 50 for i in range(30))
    result = extract_cognition(client, text, source="Long 2025", chunk_chars=3000)
    assert calls["n"] == len(result.replies) >= 3
    assert not result.ok and len(result.failures) == 1 and "request_rejected" in result.failures[0]
    assert len(result.entries) == calls["n"] - 1


def test_extraction_input_errors():
    client = LLMClient(LLMConfig(), offline_handlers={})
    with pytest.raises(CognitionError, match="paper_text"):
        extract_cognition(client, " ", source="x")
    with pytest.raises(CognitionError, match="source"):
        extract_cognition(client, "text", source="")
