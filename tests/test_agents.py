"""The agents against scripted offline handlers: what they send, what they refuse, how they fail."""
import json

import pytest

from aira_jax.discovery.agents import (Analyst, BaselineBrief, CodeChecker, Debugger, DesignBrief, Feedback, Judge,
                                       Metrics, NoveltyChecker, ResearchContext, Researcher, Summarizer, most_similar,
                                       program_fingerprint, read_evidence, with_evidence)
from aira_jax.discovery.agents.briefs import AgentProposal
from aira_jax.discovery.cognition import CognitionBase
from aira_jax.discovery.llm import (BackendError, FailureKind, LLMClient, LLMConfig, Message, RetryConfig, ToolCall,
                                    render_prompt, schemas)
from aira_jax.discovery.offline.genome import MixerGenome
from aira_jax.discovery.offline.render import render_program
from aira_jax.models.loader import baseline_source

PARENT = baseline_source("deltanet")
CHILD = render_program(MixerGenome(decay="data"))


def _client(**handlers):
    return LLMClient(LLMConfig(max_reasks=2, retry=RetryConfig(max_attempts=2, initial_delay_s=0.0)),
                     offline_handlers=handlers, sleep=lambda s: None)


def _user_text(request):
    return "\n".join(m.content for m in request.messages if m.role == "user")


def _tool_results(request):
    return [m.content for m in request.messages if m.role == "tool"]


def _ctx(**kw):
    parent = DesignBrief(name="deltanet", source=PARENT, metrics=Metrics(val_loss=1.23, params=480704),
                         analysis="the memory never forgets", meta={"weaknesses": ["no forgetting"],
                                                                    "next_ideas": ["add_forget_gate"]})
    return ResearchContext(parent=parent, cognition="[gated-delta-rule] Gating", cognition_ids=("gated-delta-rule",),
                           recent_attempts="- a [x]: loss 1.3", budget="150 steps", evidence={"draw": 1}, **kw)


def _baseline():
    return BaselineBrief(name="deltanet", loss_mean=1.23, loss_std=0.01, num_seeds=3, params=480704,
                         throughput=9000.0, anchors={"deltanet": 1.23, "gated_deltanet": None})


class Scripted:
    """A handler that replays a list of replies and keeps every request it saw."""

    def __init__(self, *replies):
        self.replies, self.requests = list(replies), []

    def __call__(self, request):
        self.requests.append(request)
        out = self.replies.pop(0)
        return out(request) if callable(out) else out


RESEARCH_JSON = {"name": "gated-dn", "motivation": "Add a forget gate so that stale associations decay away over "
                 "time.", "summary": "DeltaNet with a data-dependent decay", "cognition_used": ["gated-delta-rule"]}


# ------------------------------------------------------------------------------------------------ evidence
def test_evidence_round_trip_and_fingerprint():
    prompt = render_prompt("summarizer", design_name="d", motivation="m", program="p", results="r", analysis="a")
    msgs = with_evidence(prompt, {"x": [1, 2], "nan": float("nan")}, extra="FEEDBACK HERE")
    assert msgs.version == prompt.version
    assert read_evidence(msgs.messages()) == {"x": [1, 2], "nan": None}
    assert "FEEDBACK HERE" in msgs.messages()[-1].content
    assert read_evidence([Message("user", "no block")]) == {}
    assert program_fingerprint(PARENT) == program_fingerprint("# a comment\n" + PARENT.replace('"""', '"""X', 1))
    assert program_fingerprint(PARENT) != program_fingerprint(CHILD)


# ------------------------------------------------------------------------------------------------ researcher
def test_researcher_reads_writes_and_is_reasked_when_unchanged():
    script = Scripted(
        [ToolCall("r1", "read_file", {"path": "parent.py"})],
        RESEARCH_JSON,                                               # design.py still equals the parent
        [ToolCall("w1", "write_file", {"path": "design.py", "content": CHILD})],
        RESEARCH_JSON)
    proposal, reply = Researcher(_client(researcher=script)).propose(_ctx(), experiment="iter-1")
    assert reply.ok and proposal.source == CHILD and proposal.name == "gated-dn"
    assert reply.record.reasks == 1 and reply.record.experiment == "iter-1"
    assert "unchanged from the parent" in _user_text(script.requests[2])
    first = _user_text(script.requests[0])
    assert "the memory never forgets" in first and "[gated-delta-rule]" in first and "150 steps" in first
    ev = read_evidence(script.requests[0].messages)
    assert ev["parent"]["val_loss"] == 1.23 and ev["suggestions"] == ["add_forget_gate"] and ev["draw"] == 1
    assert _tool_results(script.requests[1])[0] == PARENT
    assert proposal.meta["agent"] == "llm" and proposal.cognition_used == ("gated-delta-rule",)


def test_researcher_rewrite_carries_the_feedback_and_refuses_the_rejected_program():
    fb = Feedback("gates", "gate causality: output at t depends on t+1", "leaky", CHILD, 1, 2, gate="causality")
    script = Scripted(RESEARCH_JSON, RESEARCH_JSON, RESEARCH_JSON)   # never changes design.py (= the rejected one)
    proposal, reply = Researcher(_client(researcher=script)).propose(_ctx(), feedback=fb)
    assert proposal is None and reply.failure.kind == FailureKind.CHECK_FAILED
    text = _user_text(script.requests[0])
    assert "REWRITE REQUEST" in text and "output at t depends on t+1" in text and "'causality' gate" in text
    assert "unchanged from the rejected proposal 'leaky'" in _user_text(script.requests[1])
    assert read_evidence(script.requests[0].messages)["feedback"]["gate"] == "causality"


def test_researcher_failure_is_a_typed_reply():
    def rate_limited(request):
        raise BackendError(FailureKind.RATE_LIMITED, "slow down", status_code=429)
    proposal, reply = Researcher(_client(researcher=rate_limited)).propose(_ctx())
    assert proposal is None and reply.failure.kind == FailureKind.RATE_LIMITED
    assert [a.outcome for a in reply.record.attempts] == ["rate_limited", "rate_limited"]


# ------------------------------------------------------------------------------------------------ novelty
def _brief(name, motivation, source=""):
    return DesignBrief(name=name, source=source, motivation=motivation)


def test_most_similar_ranks_by_motivation():
    hist = [_brief("conv", "a wider short convolution for local context"),
            _brief("gate", "a forget gate lets the memory decay stale associations"),
            _brief("heads", "more heads of smaller size")]
    sims = most_similar("decay stale associations with a forget gate", hist, k=2)
    assert [s.name for s in sims][0] == "gate" and len(sims) == 2 and sims[0].score > sims[1].score


def test_novelty_exact_duplicate_needs_no_call_and_failed_calls_pass():
    checker = NoveltyChecker(_client())   # no novelty handler: any call would fail
    p = AgentProposal("x", "a forget gate for the memory", "s", CHILD)
    v = checker.check(p, [_brief("old", "whatever", source=CHILD + "\n# comment")])
    assert not v.is_novel and v.by == "exact-duplicate" and v.most_similar == "old"
    v = checker.check(p, [_brief("old", "a forget gate for memory", source=PARENT)])
    assert v.is_novel and v.by == "failed-call" and v.reply.failure.kind == FailureKind.NO_HANDLER


def test_novelty_verdict_and_break_the_pattern_rewrite():
    verdict = Scripted({"is_novel": False, "most_similar": "old", "similarity": 0.9,
                        "reason": "the same forget gate as old, renamed"})
    other = render_program(MixerGenome(local_path="swa"))
    rewrite = Scripted([ToolCall("w", "write_file", {"path": "design.py", "content": other})],
                       {"name": "swa-dn", "motivation": "Exact local attention instead of yet another decay tweak.",
                        "summary": "DeltaNet with a sliding window", "broken_pattern": "decay tuning -> hybrid"})
    checker = NoveltyChecker(_client(novelty_check=verdict, break_pattern=rewrite))
    p = AgentProposal("x", "a forget gate for the memory", "s", CHILD)
    v = checker.check(p, [_brief("old", "a forget gate for the memory", source=PARENT)])
    assert not v.is_novel and v.similarity == 0.9 and v.by == "llm"
    ev = read_evidence(verdict.requests[0].messages)
    assert ev["similar"][0]["name"] == "old" and ev["program"] == CHILD
    new, reply = checker.break_pattern(p, v, "notes")
    assert reply.ok and new.source == other and new.meta["rewrite_of"] == "x"
    assert "renamed" in _user_text(rewrite.requests[0])


# ------------------------------------------------------------------------------------------------ checker
def test_code_checker_fix_pass_and_skip():
    fixed = CHILD.replace("eps=self.norm_eps", "eps=1e-5")
    fixing = Scripted([ToolCall("w", "write_file", {"path": "design.py", "content": fixed})],
                      {"verdict": "fixed", "issues": [{"category": "numerics", "description": "eps"}]})
    r = CodeChecker(_client(code_checker=fixing)).review("d", "m", CHILD)
    assert r.verdict == "fixed" and r.source == fixed and r.changed
    noop = Scripted({"verdict": "fixed", "issues": []})
    assert CodeChecker(_client(code_checker=noop)).review("d", "m", CHILD).verdict == "pass"
    r = CodeChecker(_client()).review("d", "m", CHILD)
    assert r.verdict == "skipped" and r.source == CHILD
    reject = Scripted({"verdict": "reject", "issues": [{"category": "causality", "description": "reads t+1"}]})
    r = CodeChecker(_client(code_checker=reject)).review("d", "m", CHILD)
    assert r.verdict == "reject" and "reads t+1" in r.reason()


# ------------------------------------------------------------------------------------------------ debugger
def test_debugger_plugs_into_the_engineer_hook():
    from aira_jax.discovery.engineer import DebugRequest
    fixed = CHILD.replace("jax.nn.sigmoid(self.b_proj(x))", "jax.nn.sigmoid(self.b_proj(x).astype(jnp.float32))")
    script = Scripted([ToolCall("w", "write_file", {"path": "design.py", "content": fixed})],
                      {"diagnosis": "dtype mismatch in beta", "fix_summary": "cast", "fixed": True},
                      {"diagnosis": "cannot be fixed without changing the idea", "fix_summary": "", "fixed": False})
    dbg = Debugger(_client(debugger=script), max_attempts=2)
    req = DebugRequest(design="d", source=CHILD, error_log="Traceback ...\nTypeError: dtype", attempt=1,
                       max_attempts=2, kind="crash", experiment_id=7, motivation="gate")
    assert dbg(req) == fixed
    assert "TypeError: dtype" in _user_text(script.requests[0])
    assert dbg(DebugRequest(design="d", source=CHILD, error_log="x", attempt=2)) is None
    assert dbg(DebugRequest(design="d", source=CHILD, error_log="x", attempt=3)) is None   # beyond max: no call
    assert len(script.requests) == 3 and [h["outcome"] for h in dbg.history] == ["fixed", "gave up", "refused"]


# ------------------------------------------------------------------------------------------------ analyst etc.
def _design():
    return DesignBrief(name="gated-dn", source=CHILD, parent="deltanet", motivation="forget gate",
                       meta={"edits": ["add_forget_gate"]})


def test_analyst_stores_shortcomings_and_their_cognition():
    script = Scripted({"analysis": "The gate lowers the loss by 5 noise floors against the parent deltanet.",
                       "compared_with": ["deltanet", "deltanet"],
                       "strengths": ["lower loss"], "weaknesses": ["recall of facts defined long ago still fails"],
                       "insights": ["gating helps"], "next_ideas": ["longer decay"]})
    out = Analyst(_client(analyst=script), CognitionBase.starter(), k=3).analyse(
        _design(), Metrics(val_loss=1.18), parent=DesignBrief(name="deltanet", metrics=Metrics(val_loss=1.23)),
        siblings=[DesignBrief(name="sib", metrics=Metrics(val_loss=1.25))], baseline=_baseline(), experiment_id=4)
    assert out.analysis.compared_with == ("deltanet",) and out.analysis.experiment_id == 4
    assert out.analysis.meta["weaknesses"] == ["recall of facts defined long ago still fails"]
    assert out.retrieval.stage == "analysis" and 1 <= len(out.retrieval.entries) <= 3
    assert out.retrieval.query == "recall of facts defined long ago still fails"
    text = _user_text(script.requests[0])
    assert "sib" in text and "noise floor" in text and "1.2300" in text


def test_analyst_and_judge_fall_back_to_heuristics_when_the_call_fails():
    client = _client()   # no handlers: every call fails with NO_HANDLER
    out = Analyst(client, None).analyse(_design(), Metrics(val_loss=1.18), parent=None, siblings=[],
                                        baseline=_baseline())
    assert out.fallback and out.analysis.meta["agent"] == "offline-heuristic" and "no_handler" in out.analysis.text
    v = Judge(client).score(_design(), Metrics(val_loss=1.18), baseline=_baseline(), analysis="")
    assert v.fallback and v.score.judge == "offline-heuristic (fallback)" and 1 <= v.score.total <= 10
    s = Summarizer(client).summarize(_design(), Metrics(val_loss=1.18), analysis="", parent=None,
                                     baseline=_baseline())
    assert s["fallback"] == "no_handler" and "1.1800" in s["summary"]


def test_judge_total_is_the_weighted_mean_computed_in_code():
    subs = {"performance": 9.0, "novelty": 3.0, "efficiency": 5.0, "soundness": 7.0}
    script = Scripted({"sub_scores": subs, "rationale": "anchored on DeltaNet = 5 and Gated DeltaNet = 10.",
                       "total": 10.0})   # a total from the model is ignored
    v = Judge(_client(judge=script)).score(_design(), Metrics(val_loss=1.18), baseline=_baseline(), analysis="a")
    w = schemas.JUDGE_WEIGHTS
    assert v.score.total == pytest.approx(sum(w[k] * subs[k] for k in subs) / sum(w.values()))
    assert not v.fallback and v.score.judge == "offline:offline"
    assert "DeltaNet is the 5 anchor" in _user_text(script.requests[0])
    assert json.loads(v.score.to_json())["sub_scores"] == subs


def test_researcher_genesys_operators_reach_the_prompt_and_the_offline_proposer():
    from aira_jax.discovery.agents.researcher import operator_instructions
    from aira_jax.discovery.offline import offline_handlers
    mate_src = render_program(MixerGenome(feature_map="elu1", decay="data"))
    mate = DesignBrief(name="elu-dn", source=mate_src, metrics=Metrics(val_loss=1.2))
    ctx = _ctx(references=(mate,), operator="crossover", mate="elu-dn")
    assert "CROSSOVER" in operator_instructions(ctx) and "references/elu-dn.py" in operator_instructions(ctx)
    assert "ONE UNIT" in operator_instructions(_ctx(operator="mutate_unit"))
    assert operator_instructions(_ctx()) == ""
    handlers = offline_handlers(seed=0)
    seen = []

    def spy(request):
        seen.append(request)
        return handlers["researcher"](request)

    proposal, reply = Researcher(_client(researcher=spy)).propose(ctx)
    assert reply.ok, reply.failure
    assert "CROSSOVER" in _user_text(seen[0]) and proposal.meta["operator"] == "crossover"
    proposal, reply = Researcher(_client(researcher=handlers["researcher"])).propose(_ctx(operator="mutate_unit"))
    assert reply.ok and proposal.meta["operator"] == "mutation" and len(proposal.meta["edits"]) == 1
