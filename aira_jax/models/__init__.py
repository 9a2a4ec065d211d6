"""Models: the standard LM, its block, compositions, and the baseline design programs."""
from aira_jax.models.block import Block, Residual
from aira_jax.models.build import ModelSpec, auto_mlp_hidden, build_model, count_params, sublayer_specs
from aira_jax.models.compose import PRIMITIVES, parse_pattern
from aira_jax.models.lm import LanguageModel, SublayerSpec
from aira_jax.models.loader import BASELINES, ProgramError, baseline_source, load_program
from aira_jax.models.scales import SCALES, get_scale

__all__ = [
    'BASELINES', 'Block', 'LanguageModel', 'ModelSpec', 'PRIMITIVES', 'ProgramError', 'Residual', 'SCALES',
    'SublayerSpec', 'auto_mlp_hidden', 'baseline_source', 'build_model', 'count_params', 'get_scale',
    'load_program', 'parse_pattern', 'sublayer_specs',
]
