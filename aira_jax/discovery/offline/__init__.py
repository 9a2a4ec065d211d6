"""The offline discovery agents: with no LLM configured the loop still discovers.

- `genome`, `render`: a typed genome of the delta-rule mixer family and its renderer into real design programs;
- `transforms`, `ast_edits`: the library of typed, named code transformations (and source-level edits for
  programs outside the family);
- `proposer`: the evolutionary proposer (mutation, crossover, break-the-pattern) guided by outcomes so far;
- `heuristics`: rule-based Analyst, Judge, Summarizer and Novelty checker, labelled as such;
- `handlers`: all of them as OfflineBackend handlers per role (`offline_handlers()`).
"""
from aira_jax.discovery.offline.genome import MixerGenome, genome_of
from aira_jax.discovery.offline.handlers import LABEL, offline_handlers
from aira_jax.discovery.offline.proposer import EvolutionaryProposer, Proposal, ProposerConfig
from aira_jax.discovery.offline.render import render_program
from aira_jax.discovery.offline.transforms import TRANSFORMS, Edit, Transformation, crossover

__all__ = ["Edit", "EvolutionaryProposer", "LABEL", "MixerGenome", "Proposal", "ProposerConfig", "TRANSFORMS",
           "Transformation", "crossover", "genome_of", "offline_handlers", "render_program"]
