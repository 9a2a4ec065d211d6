"""The prompt loader and the role prompts in prompts/ (each renders, matches its schema, states the contract)."""
import ast
import re
from pathlib import Path

import pytest

from aira_jax.discovery.llm import AGENT_ROLES, PromptError, available_roles, load_prompt, render_prompt, schemas
from aira_jax.discovery.llm.prompts import PROMPTS_DIR_ENV, parse_template

REPO = Path(__file__).resolve().parents[1]


def test_every_agent_role_has_a_prompt_and_a_schema():
    assert set(AGENT_ROLES) <= set(available_roles())
    assert set(AGENT_ROLES) == set(schemas.SCHEMAS)


@pytest.mark.parametrize("role", AGENT_ROLES)
def test_role_prompt_renders_fully(role):
    template = load_prompt(role)
    values = {name: f"<<{name}>>" for name in template.placeholders if name not in template.defaults}
    prompt = template.render(values)
    for name, marker in values.items():
        assert marker in prompt.system + prompt.user, name
    # No placeholder survives rendering.
    leftovers = [m for m in re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", prompt.system + prompt.user)
                 if m in template.placeholders]
    assert leftovers == []
    assert "=== " not in prompt.system + prompt.user and "Placeholders:" not in prompt.system
    assert prompt.messages()[0].role == "system" and prompt.messages()[1].role == "user"
    # Every required key of the role's schema is described to the model.
    for key in schemas.SCHEMAS[role]["required"]:
        assert f'"{key}"' in prompt.system, (role, key)


def test_programs_travel_through_the_workspace():
    for role in ("researcher", "break_pattern", "code_checker", "debugger"):
        prompt = render_prompt(role, {n: "" for n in load_prompt(role).placeholders - {"design_contract"}})
        assert "design.py" in prompt.system + prompt.user
        assert "class Mixer(nnx.Module)" in prompt.system   # the contract snippet was filled in


def test_contract_lists_every_public_op():
    tree = ast.parse((REPO / "aira_jax/ops/__init__.py").read_text())
    exported = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and any(getattr(t, "id", "") == "__all__" for t in n.targets))
    contract = (REPO / "prompts/_design_contract.md").read_text()
    for op in set(exported) - {"register_kernel", "set_impl", "use_impl"}:
        assert f"ops.{op}(" in contract, op
    for module in ("jax", "flax", "einops", "numpy", "math", "functools", "typing", "dataclasses"):
        assert module in contract


def test_judge_prompt_anchors_and_criteria():
    system = load_prompt("judge").system
    assert "DeltaNet scores 5" in system and "Gated DeltaNet scores 10" in system
    for criterion in schemas.JUDGE_CRITERIA:
        assert f'"{criterion}"' in system


def test_missing_placeholder_names_role_and_file():
    with pytest.raises(PromptError, match=r"judge.*judge\.md.*\['analysis'") as e:
        render_prompt("judge", design_name="d", motivation="m", program="p", results="r", baseline_results="b")
    assert "analysis" in str(e.value)


def test_template_syntax(tmp_path):
    t = parse_template("x", 'comment {ignored}\n=== system ===\nJSON {"a": {"b": 1}} and {{literal}}\n'
                            '=== user ===\nhello {name}, {name}!\n')
    assert t.placeholders == {"name"}
    p = t.render(name="Ada", unused="fine")
    assert p.system == 'JSON {"a": {"b": 1}} and {literal}' and p.user == "hello Ada, Ada!"
    with pytest.raises(PromptError, match="None"):
        t.render(name=None)
    with pytest.raises(PromptError, match="exactly a '=== system ===' then a '=== user ==='"):
        parse_template("x", "=== user ===\na\n=== system ===\nb")


def test_prompt_directory_override_and_snippets(tmp_path, monkeypatch):
    (tmp_path / "_shared.md").write_text("SHARED TEXT")
    (tmp_path / "role_a.md").write_text("=== system ===\n{shared}\n=== user ===\n{q}\n")
    monkeypatch.setenv(PROMPTS_DIR_ENV, str(tmp_path))
    assert available_roles() == ("role_a",)
    p = render_prompt("role_a", q="?")
    assert p.system == "SHARED TEXT" and p.user == "?"
    assert render_prompt("role_a", q="?", shared="override").system == "override"
    v1 = p.version
    (tmp_path / "_shared.md").write_text("CHANGED")
    assert render_prompt("role_a", q="?").version != v1     # snippets are part of the version
    with pytest.raises(PromptError, match="no prompt for role 'judge'"):
        load_prompt("judge")
    with pytest.raises(PromptError, match="invalid prompt role"):
        load_prompt("../secrets")
    with pytest.raises(PromptError, match="does not exist"):
        load_prompt("role_a", tmp_path / "nowhere")
