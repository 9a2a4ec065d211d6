"""Source-level transformations for design programs that have no genome (written by an LLM or a person).

Each edit finds a precise syntactic site with `ast` and replaces only that span of the text, so the rest of the
program (comments, formatting) is untouched and the diff is one readable change. They apply where their site
exists: a numeric keyword default of `Mixer.__init__` (convolution width, window), the activation of an
`ops.short_conv` call, or the sigmoid that computes a delta-rule write strength `beta`.
"""
from __future__ import annotations

import ast
import dataclasses
from typing import Callable

import numpy as np

from aira_jax.discovery.offline.transforms import Edit

_CONV_NAMES = ("conv_size", "conv_width", "kernel_size", "short_conv_size", "d_conv")
_WINDOW_NAMES = ("sliding_window", "window", "local_window", "window_size")


@dataclasses.dataclass(frozen=True)
class _Site:
    lineno: int
    col: int
    end_lineno: int
    end_col: int

    @classmethod
    def of(cls, node: ast.AST) -> "_Site":
        return cls(node.lineno, node.col_offset, node.end_lineno, node.end_col_offset)


def _replace(source: str, site: _Site, text: str) -> str:
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def pos(lineno, col):  # ast columns are UTF-8 byte offsets
        line = lines[lineno - 1]
        return offsets[lineno - 1] + len(line.encode("utf-8")[:col].decode("utf-8", "replace"))

    return source[:pos(site.lineno, site.col)] + text + source[pos(site.end_lineno, site.end_col):]


def _mixer_init(tree: ast.Module) -> ast.FunctionDef | None:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Mixer":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    return item
    return None


def _int_default(tree: ast.Module, names: tuple[str, ...]) -> tuple[str, int, ast.Constant] | None:
    init = _mixer_init(tree)
    if init is None:
        return None
    a = init.args
    pos = a.posonlyargs + a.args
    pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults)) + [
        (arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
    for arg, default in pairs:
        if arg.arg in names and isinstance(default, ast.Constant) and type(default.value) is int:
            return arg.arg, default.value, default
    return None


def _conv_width(source, tree, rng):
    found = _int_default(tree, _CONV_NAMES)
    if found is None:
        return None
    name, value, node = found
    options = [w for w in (2, 3, 4, 6, 8) if w != value]
    new = options[int(rng.integers(len(options)))]
    why = "longer local patterns" if new > value else "sharper, cheaper local features"
    return (_replace(source, _Site.of(node), str(new)), f"Change the default `{name}` of the short convolution "
            f"{value} -> {new}, for {why}.", {name: (value, new)}, f"conv{new}")


def _window(source, tree, rng):
    found = _int_default(tree, _WINDOW_NAMES)
    if found is None:
        return None
    name, value, node = found
    new = value * 2 if rng.random() < 0.5 or value <= 4 else value // 2
    return (_replace(source, _Site.of(node), str(new)), f"Change the local window `{name}` {value} -> {new}, "
            "trading exact local context against cost.", {name: (value, new)}, f"win{new}")


def _short_conv_calls(tree: ast.Module) -> list[ast.keyword]:
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "short_conv"):
            for kw in node.keywords:
                if kw.arg == "activation" and isinstance(kw.value, ast.Constant):
                    out.append(kw)
    return out


def _conv_activation(source, tree, rng):
    kws = _short_conv_calls(tree)
    if not kws:
        return None
    current = kws[0].value.value
    new = None if current == "silu" else "silu"
    text = source
    for kw in sorted(kws, key=lambda k: (k.value.lineno, k.value.col_offset), reverse=True):
        if kw.value.value == current:   # later sites first, so earlier offsets stay valid
            text = _replace(text, _Site.of(kw.value), repr(new))
    why = ("a linear convolution keeps the sign of the features the memory sees" if new is None else
           "a SiLU after the convolution adds a cheap nonlinearity to the keys and values")
    return text, f"Change the short convolutions' activation {current!r} -> {new!r}: {why}.", \
        {"conv_activation": (current, new)}, "convlin" if new is None else "convsilu"


def _beta_range(source, tree, rng):
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "beta" and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Attribute) and node.value.func.attr == "sigmoid"):
            call = ast.get_source_segment(source, node.value)
            if call is None:
                return None
            return (_replace(source, _Site.of(node.value), f"2.0 * {call}"), "Scale the delta rule's write "
                    "strength to (0, 2): the transition I - beta k k^T can then have negative eigenvalues, which "
                    "lets the memory flip and track state (Grazzi et al. 2024).", {"beta": ("(0,1)", "(0,2)")},
                    "negeig")
    return None


AST_EDITS: dict[str, Callable] = {
    "ast_conv_width": _conv_width, "ast_local_window": _window, "ast_conv_activation": _conv_activation,
    "ast_beta_range": _beta_range,
}


def applicable_ast_edits(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    rng = np.random.default_rng(0)
    return [name for name, fn in AST_EDITS.items() if fn(source, tree, rng) is not None]


def apply_ast_edit(name: str, source: str, rng: np.random.Generator) -> tuple[str, Edit] | None:
    """The edited program and its Edit, or None when the edit's site is absent (or the result would not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    out = AST_EDITS[name](source, tree, rng)
    if out is None:
        return None
    text, rationale, changes, tag = out
    try:
        if ast.dump(ast.parse(text)) == ast.dump(tree):
            return None
    except SyntaxError:
        return None
    return text, Edit(name, "source", changes, rationale, tag)
