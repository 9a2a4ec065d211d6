"""The offline discovery agents: genome and renderer, transformations, source edits, proposer, heuristics, handlers."""
import ast
import json

import numpy as np
import pytest

from aira_jax.discovery.agents.evidence import program_fingerprint, with_evidence
from aira_jax.discovery.llm import LLMClient, LLMConfig, Message, program_problems, render_prompt
from aira_jax.discovery.offline import heuristics
from aira_jax.discovery.offline.ast_edits import AST_EDITS, applicable_ast_edits, apply_ast_edit
from aira_jax.discovery.offline.genome import CHOICES, GROUPS, GenomeError, MixerGenome, genome_of
from aira_jax.discovery.offline.handlers import offline_handlers
from aira_jax.discovery.offline.proposer import EvolutionaryProposer, ProposerConfig, Seen
from aira_jax.discovery.offline.render import render_program
from aira_jax.discovery.offline.transforms import TRANSFORMS, crossover
from aira_jax.discovery.policy import check_source
from aira_jax.models.loader import baseline_source

FOREIGN = '''"""A hand-written mixer outside the genome family."""
import jax
from flax import nnx
from aira_jax import ops


class Mixer(nnx.Module):
    def __init__(self, d_model, num_heads, *, rngs, conv_size: int = 4, window: int = 16, **kwargs):
        self.h = num_heads
        self.w = conv_size
        self.qkv = nnx.Linear(d_model, 3 * d_model, use_bias=False, rngs=rngs)  # keep this comment
        self.b = nnx.Linear(d_model, num_heads, use_bias=False, rngs=rngs)
        self.conv = nnx.Param(jax.numpy.ones((conv_size, d_model)) / conv_size)

    def __call__(self, x):
        q = ops.short_conv(x, self.conv[...], activation='silu')
        beta = jax.nn.sigmoid(self.b(x))
        return q * beta.mean(-1, keepdims=True)
'''


def _random_genomes(n, seed=0):
    rng = np.random.default_rng(seed)
    return [MixerGenome(**{k: v[int(rng.integers(len(v)))] for k, v in CHOICES.items()}) for _ in range(n)]


# ------------------------------------------------------------------------------------------------ genome
def test_genome_validates_and_round_trips_through_the_program():
    with pytest.raises(GenomeError, match="decay"):
        MixerGenome(decay="sometimes")
    with pytest.raises(GenomeError, match="unknown genome fields"):
        MixerGenome.from_dict({"colour": "blue"})
    for g in [MixerGenome()] + _random_genomes(12):
        src = render_program(g, title="t")
        assert genome_of(src) == g
        assert not check_source(src), check_source(src)        # the static policy gate
        assert not program_problems(src), program_problems(src)
        ast.parse(src)


def test_baselines_map_onto_genomes_and_foreign_programs_do_not():
    assert genome_of(baseline_source("deltanet")) == MixerGenome()
    assert genome_of(baseline_source("gated_deltanet")).decay == "data"
    assert genome_of(baseline_source("attention")) is None
    assert genome_of(FOREIGN) is None


def test_key_ignores_genes_without_effect_and_fingerprint_agrees():
    a = MixerGenome(decay="none", decay_span="short")
    b = MixerGenome(decay="none", decay_span="long")
    assert a.key() == b.key() and a != b
    assert program_fingerprint(render_program(a, title="x")) == program_fingerprint(render_program(b, title="y"))
    c = MixerGenome(decay="data")
    assert a.key() != c.key() and a.distance(c) == 1
    assert program_fingerprint(render_program(a)) != program_fingerprint(render_program(c))


def test_rendered_programs_run_causally_and_the_default_is_deltanet():
    import jax.numpy as jnp
    import ml_collections
    from flax import nnx
    from aira_jax.models import build_model

    def model(src):
        cfg = ml_collections.ConfigDict(dict(vocab_size=64, d_model=32, num_layers=1, num_heads=2, mlp_hidden=0,
                                             design="deltanet", program_source=src, pattern="", mixer_kwargs={},
                                             tie_embeddings=False, norm_eps=1e-6, init_std=0.02))
        return build_model(cfg, rngs=nnx.Rngs(0))

    tokens = jnp.arange(2 * 20).reshape(2, 20) % 64
    genomes = [MixerGenome(local_path="swa", local_window=8, fusion="gate", long_path="slow_linear"),
               MixerGenome(update="additive", decay="fixed", local_path="conv", local_window=8, fusion="static",
                           qk_shared=True, feature_map="elu1", out_gate="sigmoid", heads="double"),
               MixerGenome(decay="data", decay_param="logsigmoid", conv_size=0, beta="sigmoid2", out_norm="none")]
    for g in genomes:
        m = model(render_program(g))
        out = m(tokens)
        assert out.shape == (2, 20, 64) and bool(jnp.isfinite(out).all())
        changed = tokens.at[:, 12].set((tokens[:, 12] + 7) % 64)   # a later token must not move earlier logits
        np.testing.assert_allclose(np.asarray(m(changed)[:, :12]), np.asarray(out[:, :12]), atol=1e-5)
    ref = model(baseline_source("deltanet"))(tokens)
    assert float(jnp.abs(model(render_program(MixerGenome()))(tokens) - ref).max()) == 0.0


# ------------------------------------------------------------------------------------------------ transforms
def test_every_transformation_applies_somewhere_and_changes_the_design():
    rng = np.random.default_rng(1)
    pool = [MixerGenome(), MixerGenome(decay="data", local_path="swa", long_path="slow_linear")] + _random_genomes(20)
    for t in TRANSFORMS:
        applied = [out for g in pool if (out := t.apply(g, rng)) is not None]
        assert applied, f"{t.name} never applies"
        for new, edit in applied:
            assert edit.transform == t.name and edit.changes and edit.rationale and edit.tag
            assert all(getattr(new, k) == v for k, (_, v) in edit.changes.items())
    assert all(t.apply(MixerGenome(decay="data"), rng) is None for t in TRANSFORMS if t.name == "add_forget_gate")


def test_crossover_takes_groups_from_both_parents():
    a = MixerGenome()
    b = MixerGenome(decay="data", decay_span="long", conv_size=8, out_gate="sigmoid", local_path="swa")
    rng = np.random.default_rng(0)
    for _ in range(10):
        child, edit = crossover(a, b, rng, a_name="a", b_name="b")
        assert child.key() not in (a.key(), b.key())
        from_b = {g for g, genes in GROUPS.items() if all(getattr(child, f) == getattr(b, f) for f in genes)}
        assert from_b and edit.transform == "crossover"
    assert crossover(a, a, rng) is None


# ------------------------------------------------------------------------------------------------ source edits
def test_source_edits_change_only_their_site():
    assert set(applicable_ast_edits(FOREIGN)) == set(AST_EDITS)
    rng = np.random.default_rng(0)
    for name in AST_EDITS:
        text, edit = apply_ast_edit(name, FOREIGN, rng)
        assert text != FOREIGN and ast.parse(text) and "# keep this comment" in text
        changed = [i for i, (x, y) in enumerate(zip(FOREIGN.splitlines(), text.splitlines())) if x != y]
        assert len(changed) == 1, (name, changed)
        assert edit.category == "source"
    assert "2.0 * jax.nn.sigmoid(self.b(x))" in apply_ast_edit("ast_beta_range", FOREIGN, rng)[0]
    assert "activation=None" in apply_ast_edit("ast_conv_activation", FOREIGN, rng)[0]
    assert apply_ast_edit("ast_local_window", baseline_source("attention"), rng) is None   # no int default


# ------------------------------------------------------------------------------------------------ proposer
def test_proposer_avoids_known_designs_and_follows_evidence():
    p = EvolutionaryProposer(ProposerConfig(noise=0.0, compound_rate=0.0, crossover_rate=0.0))
    src = baseline_source("deltanet")
    first = p.propose("deltanet", src, evidence={"suggestions": ["add_local_attention"]})
    assert first.edit_names == ["add_local_attention"] and first.genome.local_path == "swa"
    assert "sliding-window" in first.motivation and "offline evolutionary proposer" in first.motivation
    # The same evidence with that design known: another design.
    known = [program_fingerprint(first.source)]
    second = p.propose("deltanet", src, evidence={"suggestions": ["add_local_attention"], "known_fingerprints": known})
    assert second is not None and program_fingerprint(second.source) not in known
    # History: a transformation that worked elsewhere (+2.5 noise floors) beats the untried ones.
    hist = [{"name": "x", "parent": "y", "edits": ["add_forget_gate"], "status": "analysed", "z_vs_parent": 2.5}]
    third = p.propose("deltanet", src, evidence={"history": hist})
    assert third.edit_names == ["add_forget_gate"] and "+2.5 noise floors" in third.motivation
    # Rejected children count against their transformation.
    bad = [{"name": "x", "parent": "deltanet", "edits": ["add_forget_gate"], "status": "rejected"}] * 3
    assert p.propose("deltanet", src, evidence={"history": bad}).edit_names != ["add_forget_gate"]
    assert p.propose("deltanet", src, evidence={"avoid": ["add_forget_gate"], "history": hist}).edit_names != \
        ["add_forget_gate"]


def test_proposer_is_deterministic_and_edits_foreign_programs_at_source_level():
    p = EvolutionaryProposer(ProposerConfig(seed=3))
    src = baseline_source("deltanet")
    a = p.propose("deltanet", src, evidence={"draw": 5})
    b = p.propose("deltanet", src, evidence={"draw": 5})
    assert a.source == b.source and a.name == b.name
    f = p.propose("mine", FOREIGN, evidence={"draw": 1})
    assert f.operator == "source_edit" and f.genome is None and f.source != FOREIGN
    assert Seen([MixerGenome().key()]).__contains__(MixerGenome())


def test_break_pattern_changes_other_categories():
    p = EvolutionaryProposer(ProposerConfig(noise=0.0))
    src = render_program(MixerGenome(decay="data"))
    out = p.break_pattern("gated", src, pattern_edits=["add_forget_gate", "lengthen_decay"])
    assert out is not None and len(out.edits) == 2
    assert not {e.category for e in out.edits} & {"gating", "decay"}


# ------------------------------------------------------------------------------------------------ heuristics
def _evidence(loss, parent_loss=1.20, std=0.01, program=None):
    return {"program": program or render_program(MixerGenome(decay="data")),
            "design": {"name": "kid", "parent": "dad", "edits": ["add_forget_gate"]},
            "result": {"val_loss": loss, "throughput": 1000.0, "params": 100},
            "parent": {"name": "dad", "val_loss": parent_loss, "throughput": 1000.0, "params": 100},
            "siblings": [{"name": "sis", "val_loss": 1.15, "edits": ["add_local_attention"]}],
            "baseline": {"name": "dad", "loss_mean": parent_loss, "loss_std": std, "num_seeds": 3,
                         "throughput": 1000.0, "params": 100},
            "anchors": {"deltanet": parent_loss, "gated_deltanet": None}}


def test_heuristic_analyst_attributes_the_change_in_noise_units():
    a = heuristics.analyse(_evidence(1.17))
    assert "+3.00 noise floors" in a["analysis"] and "clearly better" in a["analysis"]
    assert a["analysis"].startswith(heuristics.LABEL)
    assert any("add_forget_gate" in s for s in a["strengths"])
    assert "try add_local_attention" in a["next_ideas"]   # the better sibling's edit
    worse = heuristics.analyse(_evidence(1.25))
    assert "revert add_forget_gate" in worse["next_ideas"] and worse["weaknesses"]
    noisy = heuristics.analyse(_evidence(1.205))
    assert "inconclusive" in noisy["analysis"]
    seed = heuristics.analyse({**_evidence(1.2, program=baseline_source("deltanet")), "parent": None})
    assert "add_forget_gate" in seed["next_ideas"] and any("forgetting" in w for w in seed["weaknesses"])


def test_heuristic_judge_is_anchored():
    assert heuristics.judge(_evidence(1.20))["sub_scores"]["performance"] == 5.0
    better = heuristics.judge({**_evidence(1.10), "anchors": {"deltanet": 1.2, "gated_deltanet": 1.1}})
    assert better["sub_scores"]["performance"] == 10.0
    mid = heuristics.judge({**_evidence(1.15), "anchors": {"deltanet": 1.2, "gated_deltanet": 1.1}})
    assert mid["sub_scores"]["performance"] == pytest.approx(7.5)
    assert heuristics.judge(_evidence(None))["sub_scores"]["performance"] == 1.0
    assert all(1 <= v <= 10 for v in better["sub_scores"].values())


def test_heuristic_novelty_and_summary():
    src = render_program(MixerGenome(decay="data"))
    same = {"program": src, "similar": [{"name": "old", "genome_key": MixerGenome(decay="data").key(),
                                         "text_similarity": 0.3}]}
    assert heuristics.novelty(same)["is_novel"] is False
    other = {"program": src, "similar": [{"name": "old", "text_similarity": 0.4, "program_hash": "zzz"}]}
    v = heuristics.novelty(other)
    assert v["is_novel"] and v["most_similar"] == "old" and v["similarity"] == 0.4
    s = heuristics.summarize(_evidence(1.17))
    assert "1.1700" in s["summary"] and "add_forget_gate" in s["key_idea"]


# ------------------------------------------------------------------------------------------------ handlers
def _client():
    return LLMClient(LLMConfig(), offline_handlers=offline_handlers(seed=0))


def test_offline_researcher_works_through_the_tools():
    from aira_jax.discovery.llm import Workspace, workspace_tools
    from aira_jax.discovery.llm import schemas
    ws = Workspace({"parent.py": baseline_source("deltanet"), "design.py": baseline_source("deltanet")},
                   read_only=["parent.py"])
    prompt = render_prompt("researcher", parent_name="deltanet", parent_summary="", parent_results="loss 1.2",
                           parent_analysis="", references="", cognition="", recent_attempts="", budget="",
                           operator="")
    msgs = with_evidence(prompt, {"draw": 0, "parent": {"name": "deltanet", "val_loss": 1.2}})
    reply = _client().complete("researcher", msgs, schema=schemas.RESEARCHER, tools=workspace_tools(ws))
    assert reply.ok, reply.failure
    calls = [c.name for m in reply.messages if m.role == "assistant" for c in m.tool_calls]
    assert calls == ["read_file", "write_file"]
    assert genome_of(ws.get("design.py")) is not None and ws.get("design.py") != baseline_source("deltanet")
    assert reply.data["agent"] == "offline" and reply.data["edits"]
    assert reply.data["name"].startswith("deltanet.")


def test_offline_code_checker_and_debugger_handlers():
    from aira_jax.discovery.llm import BackendRequest, ToolCall
    handlers = offline_handlers()
    bad = FOREIGN.replace("return q * beta", "q = q[:, ::-1]\n        return q * beta")
    req = BackendRequest(role="code_checker", model="offline", messages=(
        Message("user", "review"), Message("assistant", "", (ToolCall("1", "read_file", {"path": "design.py"}),)),
        Message("tool", bad, tool_call_id="1", name="read_file")))
    out = handlers["code_checker"](req)
    assert out["verdict"] == "pass" and any(i["category"] == "causality" for i in out["issues"])
    unstable = render_program(MixerGenome(out_norm="none"))
    ev = with_evidence(render_prompt("summarizer", design_name="d", motivation="m", program="p", results="r",
                                     analysis="a"), {"error_log": "FloatingPointError: loss is nan", "design": "d"})
    msgs = tuple(ev.messages()) + (Message("assistant", "", (ToolCall("1", "read_file", {"path": "design.py"}),)),
                                   Message("tool", unstable, tool_call_id="1", name="read_file"))
    call = handlers["debugger"](BackendRequest(role="debugger", model="offline", messages=msgs))
    assert isinstance(call, ToolCall) and call.name == "write_file"
    assert genome_of(call.arguments["content"]).out_norm == "rms"
    msgs += (Message("assistant", "", (call,)), Message("tool", "wrote", tool_call_id=call.id, name="write_file"))
    final = handlers["debugger"](BackendRequest(role="debugger", model="offline", messages=msgs))
    assert final["fixed"] is True and "RMSNorm" in final["fix_summary"]
    assert json.dumps(final)
