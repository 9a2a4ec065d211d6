"""Training engine: schedules, mesh/sharding, train state, steps, checkpoints and the loop.

Entry points: `train(config, workdir)` (returns the summary dict) and the CLI
`python -m aira_jax.train --config=configs/x.py --workdir=DIR`.
"""
from aira_jax.train.config import base_config
from aira_jax.train.sharding import LOGICAL_AXIS_RULES, make_mesh
from aira_jax.train.trainer import Builders, default_builders, train
from aira_jax.train.validate import ConfigError, validate_config

__all__ = [
    'Builders', 'ConfigError', 'LOGICAL_AXIS_RULES', 'base_config', 'default_builders',
    'make_mesh', 'train', 'validate_config',
]
