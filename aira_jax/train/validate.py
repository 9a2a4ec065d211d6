"""Config checks that name the bad field, run before any device or data work."""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from aira_jax.train import schedules


class ConfigError(ValueError):
  """A config field has a value the trainer cannot use."""


def _require(cond: bool, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


def validate_config(config: Any) -> None:
  for section in ('model', 'data', 'train', 'mesh'):
    _require(section in config, f'config has no `{section}` section (start from '
             'aira_jax.train.config.base_config())')
  tc = config.train
  _require(tc.seq_len > 0, f'train.seq_len must be > 0, got {tc.seq_len}')
  _require(tc.global_batch > 0, f'train.global_batch must be > 0, got {tc.global_batch}')
  _require(tc.max_steps > 0 or tc.max_tokens > 0 or tc.max_seconds > 0,
           'set at least one budget: train.max_steps, train.max_tokens or train.max_seconds')
  for name in ('max_steps', 'max_tokens', 'max_seconds', 'warmup_steps', 'eval_every',
               'eval_batches', 'eval_batch_size', 'checkpoint_every', 'keep_checkpoints',
               'progress_every', 'weight_decay', 'clip_norm', 'prefetch'):
    _require(tc[name] >= 0, f'train.{name} must be >= 0, got {tc[name]}')
  for name in ('lr', 'log_every', 'grad_accum', 'estimate_after_steps'):
    _require(tc[name] > 0, f'train.{name} must be > 0, got {tc[name]}')
  _require(tc.schedule in schedules.SCHEDULES,
           f'train.schedule must be one of {schedules.SCHEDULES}, got {tc.schedule!r}')
  _require(tc.decay_shape in schedules.DECAY_SHAPES,
           f'train.decay_shape must be one of {schedules.DECAY_SHAPES}, got {tc.decay_shape!r}')
  _require(0.0 <= tc.decay_fraction <= 1.0,
           f'train.decay_fraction must be in [0, 1], got {tc.decay_fraction}')
  _require(0.0 <= tc.min_lr_ratio <= 1.0,
           f'train.min_lr_ratio must be in [0, 1], got {tc.min_lr_ratio}')
  _require(0.0 <= tc.b1 < 1.0 and 0.0 <= tc.b2 < 1.0, f'train.b1/b2 must be in [0, 1), got '
           f'{tc.b1}, {tc.b2}')
  try:
    dtype = jnp.dtype(tc.compute_dtype)
  except TypeError as e:
    raise ConfigError(f'train.compute_dtype {tc.compute_dtype!r} is not a dtype') from e
  _require(jnp.issubdtype(dtype, jnp.floating),
           f'train.compute_dtype must be a float dtype, got {tc.compute_dtype!r}')
  _require(tc.global_batch % tc.grad_accum == 0,
           f'train.global_batch={tc.global_batch} must divide by train.grad_accum={tc.grad_accum}')
  for name in ('data', 'fsdp', 'tensor'):
    v = config.mesh[name]
    _require(v == -1 or v > 0, f'mesh.{name} must be a positive size or -1, got {v}')
  m = config.model
  for name in ('d_model', 'num_layers', 'num_heads'):
    _require(m[name] > 0, f'model.{name} must be > 0, got {m[name]}')
