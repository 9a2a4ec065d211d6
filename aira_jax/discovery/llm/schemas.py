"""JSON schemas of what each agent role replies, matching the prompts in prompts/ (change them together).

The Judge gives sub-scores only; the total is a weighted mean computed in code (`judge_score`), never by the
model. Programs are not carried in JSON (escaping code in JSON is where models fail most): agents write them
to the workspace file `design.py` with tools, and the JSON carries names and reasons.
"""
from __future__ import annotations

from typing import Any, Mapping

from aira_jax.discovery.records import JudgeScore

_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$",
         "description": "short identifier, letters/digits/_.- only, e.g. 'gated-delta-multiscale'"}
_STR_LIST = {"type": "array", "items": {"type": "string"}}

RESEARCHER = {
    "type": "object",
    "properties": {
        "name": _NAME,
        "motivation": {"type": "string", "minLength": 40},
        "summary": {"type": "string", "minLength": 10},
        "cognition_used": _STR_LIST,
    },
    "required": ["name", "motivation", "summary"],
}

BREAK_PATTERN = {
    "type": "object",
    "properties": {
        "name": _NAME,
        "motivation": {"type": "string", "minLength": 40},
        "summary": {"type": "string", "minLength": 10},
        "broken_pattern": {"type": "string", "minLength": 10},
    },
    "required": ["name", "motivation", "summary", "broken_pattern"],
}

NOVELTY_CHECK = {
    "type": "object",
    "properties": {
        "is_novel": {"type": "boolean"},
        "most_similar": {"type": "string"},
        "similarity": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string", "minLength": 10},
    },
    "required": ["is_novel", "most_similar", "similarity", "reason"],
}

ISSUE_CATEGORIES = ("causality", "complexity", "shape", "contract", "numerics", "efficiency", "other")
CODE_CHECKER = {
    "type": "object",
    "properties": {
        "verdict": {"enum": ["pass", "fixed", "reject"]},
        "issues": {"type": "array", "items": {
            "type": "object",
            "properties": {"category": {"enum": list(ISSUE_CATEGORIES)}, "description": {"type": "string"}},
            "required": ["category", "description"]}},
        "notes": {"type": "string"},
    },
    "required": ["verdict", "issues"],
}

DEBUGGER = {
    "type": "object",
    "properties": {
        "diagnosis": {"type": "string", "minLength": 10},
        "fix_summary": {"type": "string"},
        "fixed": {"type": "boolean"},
    },
    "required": ["diagnosis", "fix_summary", "fixed"],
}

ANALYST = {
    "type": "object",
    "properties": {
        "analysis": {"type": "string", "minLength": 40},
        "compared_with": {"type": "array", "items": _NAME},
        "strengths": _STR_LIST,
        "weaknesses": _STR_LIST,
        "insights": _STR_LIST,
        "next_ideas": _STR_LIST,
    },
    "required": ["analysis", "strengths", "weaknesses", "insights", "next_ideas"],
}

JUDGE_CRITERIA = ("performance", "novelty", "efficiency", "soundness")
# Performance dominates as in ASI-Arch; the weights live here, in code, not in the model's answer.
JUDGE_WEIGHTS: dict[str, float] = {"performance": 0.4, "novelty": 0.25, "efficiency": 0.2, "soundness": 0.15}
_SCORE = {"type": "number", "minimum": 1, "maximum": 10}
JUDGE = {
    "type": "object",
    "properties": {
        "sub_scores": {"type": "object", "properties": {c: _SCORE for c in JUDGE_CRITERIA},
                       "required": list(JUDGE_CRITERIA), "additionalProperties": False},
        "rationale": {"type": "string", "minLength": 20},
    },
    "required": ["sub_scores", "rationale"],
}

SUMMARIZER = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "minLength": 20, "maxLength": 1200},
        "key_idea": {"type": "string", "minLength": 5, "maxLength": 200},
        "tags": _STR_LIST,
    },
    "required": ["summary", "key_idea"],
}

_TEXT = {"type": "string", "minLength": 10}
COGNITION_EXTRACTION = {
    "type": "object",
    "properties": {
        "entries": {"type": "array", "maxItems": 20, "items": {
            "type": "object",
            "properties": {"title": {"type": "string", "minLength": 3, "maxLength": 120},
                           "trigger": _TEXT, "algorithm": _TEXT, "background": _TEXT, "guidance": _TEXT},
            "required": ["title", "trigger", "algorithm", "background", "guidance"]}},
    },
    "required": ["entries"],
}

# Compose mode (AIRA-Compose operators draft / improve / debug; analyze has its own role).
COMPOSER = {
    "type": "object",
    "properties": {
        "compositions": {"type": "array", "minItems": 1, "maxItems": 16, "items": {
            "type": "object",
            "properties": {"layers": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                           "motivation": {"type": "string", "minLength": 10}},
            "required": ["layers", "motivation"]}},
    },
    "required": ["compositions"],
}

COMPOSE_ANALYST = {
    "type": "object",
    "properties": {
        "analysis": {"type": "string", "minLength": 20},
        "promising": _STR_LIST,
        "avoid": _STR_LIST,
    },
    "required": ["analysis"],
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "researcher": RESEARCHER, "break_pattern": BREAK_PATTERN, "novelty_check": NOVELTY_CHECK,
    "code_checker": CODE_CHECKER, "debugger": DEBUGGER, "analyst": ANALYST, "judge": JUDGE,
    "summarizer": SUMMARIZER, "cognition_extraction": COGNITION_EXTRACTION, "composer": COMPOSER,
    "compose_analyst": COMPOSE_ANALYST,
}


def judge_score(data: Mapping[str, Any], *, judge: str = "",
                weights: Mapping[str, float] | None = None) -> JudgeScore:
    """The record of a validated Judge reply; `JudgeScore.total` is the weighted mean of the sub-scores."""
    subs = {c: float(data["sub_scores"][c]) for c in JUDGE_CRITERIA}
    return JudgeScore(sub_scores=subs, weights=dict(weights or JUDGE_WEIGHTS), rationale=str(data["rationale"]),
                      judge=judge)
