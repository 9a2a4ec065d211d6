"""Discovery at ASI-Arch's exploration scale, for GPU/TPU hosts with an LLM.

    python -m aira_jax.discover --config=configs/discover_explore.py --workdir=runs/explore --llm=gemini \
        --workers=8 --config.llm.default_model=gemini-2.5-pro

Each design: 8 layers, d_model 256, 8 heads (~20M parameters), T=2048, batch 256, AdamW 3e-4 WSD for 2,000 steps
(~1B tokens) on FineWeb-edu, evaluated on the lm-eval-style harness; the seed (DeltaNet) is trained over 3 seeds
for the noise floor. Pool and fitness as ASI-Arch: cold start 200 proposals, pool rebuilt every 50 results, parents
from the top 10, 4 references from ranks 11-50, fitness = mean of the loss, benchmark and judge terms with 10%
leakage detection. Offline corpora: --config.engineer.train.data.source=openstax (see configs/explore.py).
"""
import importlib.util
import os

import ml_collections

from aira_jax.discovery.gates.config import get_config as gates_config
from aira_jax.discovery.llm.config import default_llm_config, tiered_models


def explore_trainer_config(design: str = 'deltanet') -> ml_collections.ConfigDict:
  """configs/explore.py's trainer config, loaded by path so this file works from any working directory."""
  spec = importlib.util.spec_from_file_location('aira_configs_explore',
                                                os.path.join(os.path.dirname(os.path.abspath(__file__)), 'explore.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(design)

FITNESS_TASKS = ('arc_easy', 'arc_challenge', 'boolq', 'hellaswag', 'lambada_openai', 'piqa', 'social_iqa',
                 'winogrande')


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = ml_collections.ConfigDict({'design': 'deltanet', 'name': '', 'baseline_seeds': (0, 1, 2)})
  c.loop = ml_collections.ConfigDict({
      'scale': 'explore',
      'max_iterations': 2000,  # ASI-Arch ran 1,773 explorations
      'max_seconds': 0.0,
      'max_rewrites': 3,
      'novelty': True,
      'break_pattern': True,
      'novelty_top_k': 5,
      'code_checker': True,
      'recent_attempts': 10,
      'evidence_history': 100,
      'max_consecutive_failures': 10,
      'poll_s': 10.0,
      'worker_id': 'loop-0',
      # Genesys' operators alongside ASI-Arch's free evolution: crossover of two parents, one-unit mutation.
      'crossover_rate': 0.2,
      'unit_mutation_rate': 0.3,
  })
  c.pool = ml_collections.ConfigDict({
      'size': 50, 'parent_top': 10, 'num_references': 4, 'cold_start': 200, 'update_every': 50,
      'policy': 'asi_arch', 'policy_kwargs': {}, 'seed': 0})
  c.fitness = ml_collections.ConfigDict({
      'terms': ('loss', 'benchmark', 'judge'), 'combine': 'mean', 'steepness': 6.0, 'relative_band': 0.1,
      'leakage_fraction': 0.1, 'detect_leakage': True})
  c.engineer = ml_collections.ConfigDict({
      'train': explore_trainer_config('deltanet'),
      'seeds': (0,),
      'eval_tasks': FITNESS_TASKS,
      'eval_limit': 500,
      'held_out_tasks': ('wikitext', 'openbookqa'),
      'timeout_s': 6 * 3600.0,
      'memory_mb': 0,
      'lease_s': 900.0,
      'heartbeat_s': 60.0,
      'debug_attempts': 3,
      'kernel_retry': True,  # a run failing after Pallas kernels ran is retried with them set aside
      'first_step_timeout_s': 900.0,  # a first step that never finishes (a hang) ends the run early
      'workdir_root': 'engineer',
      'platform': '',
  })
  # The gates at the exploration scale: the budget is the DeltaNet seed's parameter count at that size.
  c.check = gates_config()
  c.check.d_model, c.check.num_heads, c.check.num_layers = 256, 8, 8
  c.check.vocab_size = 32000
  c.check.platform = ''
  c.check.memory_limit_mb = 16384
  c.llm = default_llm_config()
  c.llm.backend = 'gemini'
  c.llm.default_model = 'gemini-2.5-pro'
  c.llm.models.update(tiered_models('gemini-2.5-pro', 'gemini-2.5-flash'))
  c.llm.cache_dir = ''
  c.offline = ml_collections.ConfigDict({
      'seed': 0, 'exploration': 1.0, 'suggestion_bonus': 0.8, 'cognition_bonus': 0.4, 'failure_penalty': 1.0,
      'compound_rate': 0.25, 'crossover_rate': 0.25, 'noise': 0.15, 'max_name_chars': 48})
  c.cognition = ml_collections.ConfigDict({'starter': True, 'paths': (), 'k': 3})
  return c
