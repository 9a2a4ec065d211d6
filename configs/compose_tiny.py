"""Compose search at tiny scale, offline on CPU (AIRA-Compose / Composer, with Genesys' ladder).

    python -m aira_jax.compose --config=configs/compose_tiny.py --workdir=/tmp/compose

About 15 minutes on 2 CPU cores: 12 compositions of 8 sublayers searched on a narrowed proxy (d_model 64) by the
offline evolutionary composer (known hybrids first, then random drafts, then crossover and unit mutation), the top
6 aggregated by majority vote and by 2 clusters, the best extrapolated to 16 sublayers by stacking and by
stretching, then a 3-rung ladder (d_model 32 -> 64 -> 96, tokens proportional to parameters, the top rung over
2 seeds; tokens = parameters / 2) against a Transformer stack of the same depth, with scaling-law fits, the "scales X% faster" table and a
plot. With an LLM: --llm=gemini or --llm=openai (the draft / improve / debug / analyze operators).
"""
import importlib.util
import os

import ml_collections

from aira_jax.discovery.llm.config import default_llm_config


def trainer_config() -> ml_collections.ConfigDict:
  """configs/discover_tiny.py's trainer config, loaded by path so this file works from any working directory."""
  spec = importlib.util.spec_from_file_location(
      'aira_configs_discover_tiny', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'discover_tiny.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.trainer_config()


def proxy_trainer_config() -> ml_collections.ConfigDict:
  """The narrowed proxy: d_model 64, 4 heads, T 64, 150 steps of the synthetic language (byte tokens)."""
  c = trainer_config()
  c.model.d_model = 64
  c.model.num_heads = 4
  c.model.primitive_kwargs = {'swa': {'sliding_window': 16}}
  c.train.seq_len = 64
  c.train.global_batch = 8
  c.train.max_steps = 150
  c.train.max_seconds = 180.0
  c.train.warmup_steps = 15
  c.train.log_every = 50
  c.train.eval_batches = 4
  return c


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.compose = ml_collections.ConfigDict({
      'primitives': ('attention', 'swa', 'mlp', 'mamba2', 'deltanet', 'gated_deltanet'),
      'proxy_sublayers': 8, 'min_mixers': 1, 'min_mlps': 1,
      'num_patterns': 12, 'batch_size': 4, 'max_seconds': 480.0, 'proxy_scale': 'proxy',
      'seed': 0, 'init_random': 6, 'use_references': True, 'tournament': 3, 'crossover_rate': 0.4,
      'top_k': 6, 'n_clusters': 2, 'aggregate': True,
      'target_sublayers': 16, 'strategies': ('stack', 'stretch'), 'extrapolate_top': 1,
      'baseline': 'attention,mlp', 'run_ladder': True, 'export_top': 1, 'workers': 2,
  })
  c.engineer = ml_collections.ConfigDict({
      'train': proxy_trainer_config(),
      'seeds': (0,),
      'eval_tasks': (),
      'timeout_s': 300.0,
      'memory_mb': 4096,
      'lease_s': 120.0,
      'heartbeat_s': 20.0,
      'debug_attempts': 0,
      'kernel_retry': True,  # a run failing after Pallas kernels ran is retried with them set aside
      'first_step_timeout_s': 900.0,  # a first step that never finishes (a hang) ends the run early
      'workdir_root': 'engineer',
      'platform': 'cpu',
      'poll_s': 1.0,
  })
  # Genesys' ladder: width grows, tokens proportional to parameters, more seeds at the top.
  # Compositions arrive already extrapolated to the target depth, so the rungs grow width and tokens only.
  c.ladder = ml_collections.ConfigDict({
      'stack_compositions': False,
      'rungs': [
          {'name': 'rung-d32', 'model': {'d_model': 32, 'num_heads': 2}, 'train': {'global_batch': 16, 'max_seconds': 900.0},
           'tokens_per_param': 0.5, 'min_steps': 40, 'max_steps': 600, 'max_designs': 4, 'seeds': (0,),
           'promote': 2},
          {'name': 'rung-d64', 'model': {'d_model': 64, 'num_heads': 4}, 'train': {'global_batch': 16, 'max_seconds': 900.0},
           'tokens_per_param': 0.5, 'min_steps': 40, 'max_steps': 600, 'max_designs': 2, 'seeds': (0,),
           'promote': 1},
          {'name': 'rung-d96', 'model': {'d_model': 96, 'num_heads': 4}, 'train': {'global_batch': 16, 'max_seconds': 900.0},
           'tokens_per_param': 0.5, 'min_steps': 40, 'max_steps': 600, 'max_designs': 1, 'seeds': (0, 1),
           'promote': 1},
      ],
  })
  c.llm = default_llm_config()
  return c
