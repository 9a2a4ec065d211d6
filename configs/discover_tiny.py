"""Discovery at tiny scale, offline on CPU: the README's main command.

    python -m aira_jax.discover --config=configs/discover_tiny.py --workdir=/tmp/discover

About 15 minutes on 2 CPU cores: the DeltaNet seed trained over 3 seeds (the baseline and its noise floor), then
8 iterations of propose -> gates -> train -> analyse -> judge with the offline agents (no LLM, no network), each
design trained for ~0.4M tokens of the synthetic language (which rewards in-context recall). With an LLM:
--llm=gemini or --llm=openai (plus --config.llm.default_model=... and the provider's API key).
"""
import ml_collections

from aira_jax.discovery.gates.config import get_config as gates_config
from aira_jax.discovery.llm.config import default_llm_config
from aira_jax.models.scales import get_scale
from aira_jax.train.config import base_config


def trainer_config() -> ml_collections.ConfigDict:
  """The scale every design is trained at: 2 layers, d_model 128, T 128, byte tokens, synthetic data."""
  c = base_config()
  c.model.update(get_scale('tiny'))
  c.model.d_model = 128
  c.model.num_heads = 4
  c.model.num_layers = 2
  c.data.source = 'synthetic'
  c.data.tokenizer = 'byte'
  c.data.val_docs = 64
  c.train.seq_len = 128
  c.train.global_batch = 16
  c.train.max_steps = 150  # ~0.3M tokens: enough to separate designs by more than the seed-to-seed noise
  c.train.max_seconds = 240.0  # a safety cap on an overloaded machine (the step budget normally ends first)
  c.train.lr = 3e-3
  c.train.warmup_steps = 20
  c.train.compute_dtype = 'float32'  # CPUs have no fast bf16 matmul
  c.train.eval_every = 0  # evaluate once, at the end
  c.train.eval_batches = 4
  c.train.log_every = 25
  c.train.checkpoint_every = 0  # only at the end (a design trains in well under a minute)
  c.train.tensorboard = False
  c.train.prefetch = 1
  return c


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # The seed design and its baseline runs (their spread is the noise floor every delta is measured in).
  c.seed = ml_collections.ConfigDict({'design': 'deltanet', 'name': '', 'baseline_seeds': (0, 1, 2)})
  c.loop = ml_collections.ConfigDict({
      'scale': 'tiny',
      'max_iterations': 8,
      'max_seconds': 660.0,  # no new iteration after 11 minutes: the last ones finish within ~15 minutes
      'max_rewrites': 2,
      'novelty': True,
      'break_pattern': True,
      'novelty_top_k': 5,
      'code_checker': True,
      'recent_attempts': 8,
      'evidence_history': 100,
      'max_consecutive_failures': 4,
      'poll_s': 1.0,
      'worker_id': 'loop-0',
  })
  # UCT over the whole pool from the second proposal on: a short search must exploit what works early.
  c.pool = ml_collections.ConfigDict({
      'size': 50, 'parent_top': 10, 'num_references': 3, 'cold_start': 2, 'update_every': 1,
      'policy': 'uct', 'policy_kwargs': {'c': 0.25}, 'seed': 0})
  # No benchmark term at this scale (the harness tasks are beyond a 0.5M-parameter byte model). The synthetic
  # language's in-context facts make gains of ~10% from a forget gate real at this budget, so the loss term
  # saturates at 25% (ASI-Arch: 10%, where it could not tell good designs apart) and so does leakage detection.
  c.fitness = ml_collections.ConfigDict({
      'terms': ('loss', 'judge'), 'combine': 'mean', 'steepness': 6.0, 'relative_band': 0.25,
      'leakage_fraction': 0.25, 'detect_leakage': True})
  c.engineer = ml_collections.ConfigDict({
      'train': trainer_config(),
      'seeds': (0,),
      'eval_tasks': (),
      'timeout_s': 300.0,
      'memory_mb': 6144,
      'lease_s': 120.0,
      'heartbeat_s': 20.0,
      'debug_attempts': 2,
      'kernel_retry': True,  # a run failing after Pallas kernels ran is retried with them set aside
      'first_step_timeout_s': 900.0,  # a first step that never finishes (a hang) ends the run early
      'workdir_root': 'engineer',  # relative: under --workdir
      'platform': 'cpu',
      'poll_s': 1.0,
  })
  # The gates at the tiny check scale, lightened where the tiny search does not need the default's margin.
  c.check = gates_config()
  c.check.cost_seq_lens = (512, 2048)
  c.check.train_steps = 15
  c.check.timeout_s = 240.0
  c.check.gate_timeout_s = 120.0
  c.check.memory_limit_mb = 3072
  c.llm = default_llm_config()  # backend 'offline': the offline agents; --llm=gemini|openai for a model
  c.offline = ml_collections.ConfigDict({
      'seed': 0, 'exploration': 1.0, 'suggestion_bonus': 0.8, 'cognition_bonus': 0.4, 'failure_penalty': 1.0,
      'compound_rate': 0.25, 'crossover_rate': 0.25, 'noise': 0.15, 'max_name_chars': 48})
  c.cognition = ml_collections.ConfigDict({'starter': True, 'paths': (), 'k': 3})
  return c
