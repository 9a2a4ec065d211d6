"""The base training config: every field the trainer reads, with defaults.

Experiment configs (configs/*.py) start from `base_config()` and override only what differs, so a
command-line override of a field that does not exist (`--config.train.lrr=1e-3`) fails loudly
instead of being silently ignored.
"""
from __future__ import annotations

import ml_collections


def default_model_config() -> ml_collections.ConfigDict:
  """Model fields of the agreed interface (aira_jax.models.build_model reads these)."""
  c = ml_collections.ConfigDict()
  c.vocab_size = 0  # 0 = take the tokenizer's vocabulary size.
  c.d_model = 256
  c.num_layers = 8
  c.num_heads = 8
  c.mlp_hidden = 0  # 0 = the model's own default (SwiGLU ~8/3 d_model).
  c.design = 'attention'  # baseline name or path to a design program (.py).
  c.program_source = ''  # source text of a design program; overrides `design` when set.
  c.pattern = ''  # composition string, e.g. 'mamba2,mlp,attention,mlp'; overrides `design`.
  c.mixer_kwargs = ml_collections.ConfigDict()  # kwargs for the design's Mixer
  c.primitive_kwargs = ml_collections.ConfigDict()  # {primitive: kwargs} for pattern primitives
  c.programs = ml_collections.ConfigDict()  # {name: source} for 'design:<name>' primitives
  c.tie_embeddings = False
  c.norm_eps = 1e-6
  c.init_std = 0.02
  c.remat = False  # rematerialise blocks in the backward pass (memory for compute)
  return c


def _default_data_config() -> ml_collections.ConfigDict:
  # The data package owns its fields; fall back to the agreed-interface subset when it is absent
  # (e.g. a trimmed install) so that this module stays importable on its own.
  try:
    from aira_jax.data.config import default_data_config  # pylint: disable=g-import-not-at-top
  except ImportError:
    c = ml_collections.ConfigDict()
    c.source = 'synthetic'
    c.paths = ''
    c.text_key = 'text'
    c.hf_name = ''
    c.hf_config = ''
    c.hf_split = 'train'
    c.tokenizer = 'byte'
    c.spm_model_path = ''
    c.spm_vocab_size = 4096
    c.val_docs = 256
    c.seed = 0
    return c
  return default_data_config()


def default_train_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seq_len = 2048
  c.global_batch = 256  # sequences per optimizer step, summed over all hosts and microbatches.
  # Budgets: 0 = unset; training stops at whichever set budget is reached first (at least one
  # must be set). The schedule length comes from max_steps / max_tokens; with only max_seconds it
  # is estimated from the measured step time after `estimate_after_steps` steps (see trainer.py).
  c.max_steps = 2000
  c.max_tokens = 0
  c.max_seconds = 0.0
  c.estimate_after_steps = 5
  # Optimizer: AdamW with decoupled weight decay (masked off norms, biases and 1-D params).
  c.lr = 3e-4
  c.min_lr_ratio = 0.1  # final lr = lr * min_lr_ratio
  c.warmup_steps = 100
  c.schedule = 'wsd'  # 'wsd' | 'cosine'
  c.decay_fraction = 0.2  # WSD: fraction of the steps spent decaying
  c.decay_shape = 'linear'  # WSD decay: 'linear' | '1-sqrt'
  c.weight_decay = 0.1
  c.b1 = 0.9
  c.b2 = 0.95
  c.eps = 1e-8
  c.clip_norm = 1.0  # global-norm clipping; 0 = off
  c.compute_dtype = 'bfloat16'  # forward/backward dtype; master weights stay float32
  c.grad_accum = 1  # microbatches per step (global_batch must divide by it)
  c.prefetch = 2  # batches read and placed ahead by a background thread; 0 = inline
  # Before training, one forward+backward with the backend's Pallas kernels is compared with the XLA ops on the
  # same weights and tokens; a mismatch sets the kernels aside for the run (two extra compiles; single host).
  c.check_kernels = False
  # After compiling, each Pallas kernel call of the step (op, shapes, options) is run once per process on random
  # inputs through the kernel and the XLA op; a kernel whose outputs or gradients disagree is set aside
  # (aira_jax.ops.selftest; seconds per call signature; single host).
  c.check_kernel_ops = True
  # Evaluation and logging.
  c.eval_every = 500  # steps; 0 = only at the end
  c.eval_batches = 8
  c.eval_batch_size = 0  # 0 = global_batch
  c.log_every = 50
  c.progress_every = 0  # 0 = same as log_every
  c.tensorboard = True
  # Checkpoints (Orbax): 0 = only at the end.
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  return c


def default_mesh_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.data = -1  # -1 = all devices not used by the other axes
  c.fsdp = 1
  c.tensor = 1
  return c


def base_config() -> ml_collections.ConfigDict:
  """The full config with defaults; experiments override fields of this."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = default_model_config()
  c.data = _default_data_config()
  c.train = default_train_config()
  c.mesh = default_mesh_config()
  c.multihost = False  # call jax.distributed.initialize() before touching devices
  return c


def get_config() -> ml_collections.ConfigDict:
  """Lets this file itself serve as `--config=aira_jax/train/config.py`."""
  return base_config()


BASELINE_DESIGNS = ('deltanet', 'gated_deltanet', 'mamba2', 'attention')


def baseline_config(scale: str, design: str, config_name: str) -> ml_collections.ConfigDict:
  """base_config() at a named model scale with a baseline design; `design` is the config file's :variant."""
  from aira_jax.models.scales import get_scale  # pylint: disable=g-import-not-at-top
  design = design or 'deltanet'
  if design not in BASELINE_DESIGNS:
    raise ValueError(f'{config_name}: variant must be one of {BASELINE_DESIGNS}, got {design!r}')
  c = base_config()
  c.model.update(get_scale(scale))
  c.model.design = design
  return c
