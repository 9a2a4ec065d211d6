"""Compose search at AIRA-Compose's proxy scale, on one GPU (or more with --workers=N, one per device).

    python -m aira_jax.compose --config=configs/compose_proxy.py --workdir=runs/compose_proxy
    python -m aira_jax.compose --config=configs/compose_proxy.py --workdir=runs/c --llm=gemini

The proxy is a narrowed model: 16 sublayers at d_model 256 (8 heads), T 512, batch 32, on the OpenStax textbook
corpus with byte tokens (no tokenizer training, no network), each composition trained for a fixed wall-clock
budget (`train.max_seconds`) so the search has a fixed cost: 24 compositions + aggregates in about 30 minutes on
an H100/H200. The best are extrapolated to 32 sublayers and verified on a 3-rung ladder with Chinchilla-like
tokens (20 per parameter, capped), the top rung over 3 seeds.
"""
import ml_collections

from aira_jax.discovery.llm.config import default_llm_config
from aira_jax.train.config import baseline_config


def proxy_trainer_config() -> ml_collections.ConfigDict:
  c = baseline_config('explore', 'attention', 'configs/compose_proxy.py')
  c.model.d_model = 256
  c.model.num_heads = 8
  c.model.primitive_kwargs = {'swa': {'sliding_window': 128}}
  c.data.source = 'openstax'
  c.data.tokenizer = 'byte'
  c.train.seq_len = 512
  c.train.global_batch = 32
  c.train.max_steps = 100000
  c.train.max_seconds = 60.0   # the fixed budget per composition (steps end first only on a very fast chip)
  c.train.lr = 1e-3
  c.train.schedule = 'cosine'
  c.train.warmup_steps = 100
  c.train.eval_every = 0
  c.train.eval_batches = 16
  c.train.checkpoint_every = 0
  c.train.compute_dtype = 'bfloat16'
  return c


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.compose = ml_collections.ConfigDict({
      'primitives': ('attention', 'swa', 'mlp', 'mamba2', 'deltanet', 'gated_deltanet'),
      'proxy_sublayers': 16, 'min_mixers': 1, 'min_mlps': 1,
      'num_patterns': 24, 'batch_size': 4, 'max_seconds': 1800.0, 'proxy_scale': 'proxy',
      'seed': 0, 'init_random': 8, 'use_references': True, 'tournament': 3, 'crossover_rate': 0.4,
      'top_k': 8, 'n_clusters': 2, 'aggregate': True,
      'target_sublayers': 32, 'strategies': ('stack', 'stretch'), 'extrapolate_top': 2,
      'baseline': 'attention,mlp', 'run_ladder': True, 'export_top': 2, 'workers': 1,
  })
  c.engineer = ml_collections.ConfigDict({
      'train': proxy_trainer_config(),
      'seeds': (0,),
      'eval_tasks': (),
      'timeout_s': 900.0,
      'memory_mb': 0,
      'lease_s': 600.0,
      'heartbeat_s': 30.0,
      'debug_attempts': 0,
      'kernel_retry': True,  # a run failing after Pallas kernels ran is retried with them set aside
      'first_step_timeout_s': 900.0,  # a first step that never finishes (a hang) ends the run early
      'workdir_root': 'engineer',
      'platform': '',
      'poll_s': 2.0,
  })
  # Compositions arrive already extrapolated to the target depth, so the rungs grow width and tokens only.
  c.ladder = ml_collections.ConfigDict({
      'stack_compositions': False,
      'rungs': [
          {'name': 'rung-d256', 'model': {'d_model': 256, 'num_heads': 8}, 'tokens_per_param': 20.0,
           'min_steps': 200, 'max_steps': 3000, 'max_designs': 5, 'seeds': (0,), 'promote': 3},
          {'name': 'rung-d384', 'model': {'d_model': 384, 'num_heads': 8}, 'tokens_per_param': 20.0,
           'min_steps': 200, 'max_steps': 3000, 'max_designs': 3, 'seeds': (0,), 'promote': 2},
          {'name': 'rung-d512', 'model': {'d_model': 512, 'num_heads': 8}, 'tokens_per_param': 20.0,
           'min_steps': 200, 'max_steps': 3000, 'max_designs': 2, 'seeds': (0, 1, 2), 'promote': 2},
      ],
  })
  c.llm = default_llm_config()
  return c
