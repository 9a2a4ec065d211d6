"""A quick static reading of a design program, used to re-ask an agent at once when its code is missing or off
contract (no `Mixer`, wrong constructor, forbidden import). The Checker's gates do the full job (loading,
causality, cost, gradients); this only catches what needs no execution, so a re-ask costs one round trip.
"""
from __future__ import annotations

import ast

ALLOWED_IMPORT_ROOTS = frozenset({"jax", "flax", "einops", "numpy", "math", "functools", "typing", "dataclasses",
                                  "__future__"})
ALLOWED_PROJECT_IMPORTS = frozenset({"aira_jax.ops"})   # `from aira_jax import ops` or `import aira_jax.ops`
DESIGN_FILE = "design.py"


def program_problems(source: str | None) -> list[str]:
    """Problems a reader can see without running the code; empty when none."""
    if source is None or not source.strip():
        return [f"no program: write the complete design program to '{DESIGN_FILE}' with write_file"]
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return [f"the program does not parse: {e.msg} at line {e.lineno}"]
    problems = _import_problems(tree)
    mixer = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Mixer"), None)
    if mixer is None:
        problems.append("no top-level `class Mixer(nnx.Module)`")
        return problems
    methods = {n.name: n for n in mixer.body if isinstance(n, ast.FunctionDef)}
    init, call = methods.get("__init__"), methods.get("__call__")
    if init is None:
        problems.append("Mixer has no __init__(self, d_model, num_heads, *, rngs, **kwargs)")
    else:
        pos = [a.arg for a in init.args.posonlyargs + init.args.args]
        kwonly = [a.arg for a in init.args.kwonlyargs]
        if pos[:3] != ["self", "d_model", "num_heads"]:
            problems.append(f"Mixer.__init__ must start (self, d_model, num_heads, ...), got ({', '.join(pos)})")
        if "rngs" not in kwonly and "rngs" not in pos:
            problems.append("Mixer.__init__ must take the keyword argument `rngs`")
        if init.args.kwarg is None:
            problems.append("Mixer.__init__ must accept **kwargs (the Engineer passes extra settings)")
    if call is None:
        problems.append("Mixer has no __call__(self, x) mapping [batch, time, d_model] to the same shape")
    return problems


def _import_problems(tree: ast.Module) -> list[str]:
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _allowed(alias.name):
                    problems.append(f"forbidden import `{alias.name}` (line {node.lineno})")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                problems.append(f"relative import at line {node.lineno} is not allowed")
                continue
            mod = node.module or ""
            if mod == "aira_jax":
                bad = [a.name for a in node.names if a.name != "ops"]
                if bad:
                    problems.append(f"only `from aira_jax import ops` is allowed, not {bad} (line {node.lineno})")
            elif not _allowed(mod):
                problems.append(f"forbidden import from `{mod}` (line {node.lineno})")
    return problems


def _allowed(module: str) -> bool:
    if module.split(".")[0] in ALLOWED_IMPORT_ROOTS:
        return True
    return any(module == p or module.startswith(p + ".") for p in ALLOWED_PROJECT_IMPORTS)


def workspace_program_check(workspace, path: str = DESIGN_FILE):
    """A `check` for `LLMClient.complete`: re-asks while the workspace's program is missing or off contract."""

    def check(_value) -> str | None:
        problems = program_problems(workspace.get(path))
        if not problems:
            return None
        return f"the program in '{path}' is not acceptable yet:\n" + "\n".join(f"- {p}" for p in problems)

    return check
