"""Compose mode (AIRA-Compose, Composer): search layer compositions of primitives on a narrowed proxy, aggregate
the best, extrapolate them to depth and verify them up the ladder of scales.

- `space`: the search space (primitives, proxy depth, constraints), pattern strings and design names
- `operators`: structural operators (Genesys unit mutation and crossover, interleaving swaps, reference designs)
- `proposers`: the offline evolutionary composer and the LLM composer (draft / improve / debug / analyze)
- `aggregate`: per-sublayer majority vote and clustered votes over the top-k
- `extrapolate`: stacking and stretching to the target depth
- `search`: the stages over the experiment store; `report`: compose.md / compose.json and gallery export
"""
from aira_jax.discovery.compose.aggregate import cluster_vote, majority_vote
from aira_jax.discovery.compose.extrapolate import extrapolate, stack, stretch
from aira_jax.discovery.compose.proposers import Candidate, EvolutionaryComposer, EvolutionConfig, Evaluated, \
    LLMComposer
from aira_jax.discovery.compose.settings import ComposeConfigError, ComposeSettings, compose_settings
from aira_jax.discovery.compose.space import ComposeSpace, CompositionError, composition_name, from_pattern, \
    to_pattern

__all__ = ['Candidate', 'ComposeConfigError', 'ComposeSettings', 'ComposeSpace', 'CompositionError', 'Evaluated',
           'EvolutionConfig', 'EvolutionaryComposer', 'LLMComposer', 'cluster_vote', 'compose_settings',
           'composition_name', 'extrapolate', 'from_pattern', 'majority_vote', 'stack', 'stretch', 'to_pattern']
