"""The agents of the discovery loop, as in ASI-Arch; each renders its prompt from prompts/ and calls the LLM layer.

- Researcher: parent + references (summaries, results, analyses, cognition) -> motivation + program (tools);
- NoveltyChecker: TF-IDF nearest motivations + an LLM verdict; break-the-pattern rewrite of duplicates;
- CodeChecker: LLM review after the deterministic gates, may fix the code;
- Debugger: error log -> minimal fix, the Engineer's `debugger` hook;
- Analyst: results vs baseline, parent and siblings; its weaknesses are the cognition query;
- Judge: anchored 1-10 sub-scores, total computed in code;
- Summarizer: short summaries for the Researcher's context.
Every request also carries a machine-readable evidence block (`evidence.py`), which the offline agents read.
"""
from aira_jax.discovery.agents.analyst import AnalysisOutcome, Analyst, BaselineBrief, shortcomings_query
from aira_jax.discovery.agents.briefs import AgentProposal, DesignBrief, Feedback, Metrics
from aira_jax.discovery.agents.code_checker import CodeChecker, Review, gate_report
from aira_jax.discovery.agents.debugger import Debugger
from aira_jax.discovery.agents.evidence import program_fingerprint, read_evidence, with_evidence
from aira_jax.discovery.agents.judge import Judge
from aira_jax.discovery.agents.novelty import NoveltyChecker, NoveltyVerdict, most_similar
from aira_jax.discovery.agents.researcher import ResearchContext, Researcher
from aira_jax.discovery.agents.summarizer import Summarizer

__all__ = ["AgentProposal", "AnalysisOutcome", "Analyst", "BaselineBrief", "CodeChecker", "Debugger", "DesignBrief",
           "Feedback", "Judge", "Metrics", "NoveltyChecker", "NoveltyVerdict", "ResearchContext", "Researcher",
           "Review", "Summarizer", "gate_report", "most_similar", "program_fingerprint", "read_evidence",
           "shortcomings_query", "with_evidence"]
