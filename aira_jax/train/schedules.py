"""Learning-rate schedules and the AdamW optimizer.

Convention: `schedule(s)` is the learning rate used by update number s (0-based), and equals the
textbook piecewise curve g evaluated at s + 1. So warmup never spends an update at lr = 0, the
update at s = warmup_steps - 1 is the first at peak, and the last update (s = total - 1) uses the
final rate.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

SCHEDULES = ('wsd', 'cosine')
DECAY_SHAPES = ('linear', '1-sqrt')
# Parameter path components (lower-cased substrings) that never get weight decay.
NO_DECAY_NAMES = ('norm', 'bias')

def _shifted(g: optax.Schedule) -> optax.Schedule:
  return lambda count: g(count + 1)

def warmup_stable_decay(peak_lr: float, total_steps: int, warmup_steps: int, decay_fraction: float,
                        min_lr_ratio: float, decay_shape: str = 'linear') -> optax.Schedule:
  """Linear warmup to `peak_lr`, constant, then decay over the last `decay_fraction` of the steps.

  The decay ends at `peak_lr * min_lr_ratio`; '1-sqrt' decays as r + (1 - r)(1 - sqrt(p)), which
  keeps the rate high longer and then drops fast (Hägele et al., 2024).
  """
  if decay_shape not in DECAY_SHAPES:
    raise ValueError(f'decay_shape must be one of {DECAY_SHAPES}, got {decay_shape!r}')
  if not 0.0 <= decay_fraction <= 1.0:
    raise ValueError(f'decay_fraction must be in [0, 1], got {decay_fraction}')
  total_steps = max(int(total_steps), 1)
  warmup = min(max(int(warmup_steps), 0), total_steps)
  decay_start = max(warmup, total_steps - int(round(decay_fraction * total_steps)))
  decay_len = total_steps - decay_start
  final = peak_lr * min_lr_ratio

  if decay_shape == 'linear' or decay_len == 0:
    decay = optax.linear_schedule(peak_lr, final, max(decay_len, 1))
  else:
    def decay(count):
      p = jnp.clip(count / decay_len, 0.0, 1.0)
      return final + (peak_lr - final) * (1.0 - jnp.sqrt(p))

  g = optax.join_schedules(
      [optax.linear_schedule(0.0, peak_lr, max(warmup, 1)), optax.constant_schedule(peak_lr), decay],
      boundaries=[warmup, decay_start])
  return _shifted(g)

def warmup_cosine(peak_lr: float, total_steps: int, warmup_steps: int,
                  min_lr_ratio: float) -> optax.Schedule:
  """Linear warmup to `peak_lr`, then cosine decay to `peak_lr * min_lr_ratio` at the last step."""
  total_steps = max(int(total_steps), 1)
  warmup = min(max(int(warmup_steps), 0), total_steps)
  g = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak_lr, warmup_steps=warmup, decay_steps=total_steps,
      end_value=peak_lr * min_lr_ratio)
  return _shifted(g)

def make_schedule(train_cfg: Any, total_steps: int) -> optax.Schedule:
  """The schedule named by `train_cfg.schedule` over `total_steps` updates."""
  if train_cfg.schedule == 'wsd':
    return warmup_stable_decay(train_cfg.lr, total_steps, train_cfg.warmup_steps,
                               train_cfg.decay_fraction, train_cfg.min_lr_ratio,
                               train_cfg.decay_shape)
  if train_cfg.schedule == 'cosine':
    return warmup_cosine(train_cfg.lr, total_steps, train_cfg.warmup_steps, train_cfg.min_lr_ratio)
  raise ValueError(f'train.schedule must be one of {SCHEDULES}, got {train_cfg.schedule!r}')

def lr_table(schedule: optax.Schedule, num_steps: int) -> np.ndarray:
  """Rates of updates 0..num_steps-1 (float32) so the host loop indexes instead of dispatching.

  Evaluated eagerly over a power-of-two length of at least 4096: the per-op executables are
  cached by shape, so rebuilding the table for a new schedule length (time budgets) reuses them.
  """
  n = max(int(num_steps), 1)
  steps = jnp.arange(max(1 << (n - 1).bit_length(), 4096), dtype=jnp.int32)
  return np.asarray(jax.vmap(schedule)(steps), dtype=np.float32)[:n]

def _path_names(path) -> list[str]:
  names = []
  for k in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        names.append(str(getattr(k, attr)).lower())
        break
  return names

def weight_decay_mask(params: Any) -> Any:
  """True where AdamW decays: matrices and higher, except anything named like a norm or a bias."""
  def decays(path, x) -> bool:
    if jnp.ndim(x) < 2:
      return False
    return not any(bad in name for name in _path_names(path) for bad in NO_DECAY_NAMES)
  return jax.tree_util.tree_map_with_path(decays, params)

def make_optimizer(train_cfg: Any) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW whose learning rate the trainer sets each step.

  The rate is an injected hyperparameter (see `set_learning_rate`) rather than a schedule inside
  the optimizer, so the schedule length can be fixed after training starts (time budgets).
  """
  adamw = optax.inject_hyperparams(optax.adamw, static_args=('mask',))(
      learning_rate=float(train_cfg.lr), b1=float(train_cfg.b1), b2=float(train_cfg.b2),
      eps=float(train_cfg.eps), weight_decay=float(train_cfg.weight_decay),
      mask=weight_decay_mask)
  clip = (optax.clip_by_global_norm(float(train_cfg.clip_norm)) if train_cfg.clip_norm > 0
          else optax.identity())
  return optax.chain(clip, adamw)

def set_learning_rate(opt_state: Any, lr: jax.Array) -> Any:
  """Returns `opt_state` (from `make_optimizer`) with the AdamW learning rate replaced."""
  clip_state, adam_state = opt_state
  hyper = dict(adam_state.hyperparams)
  hyper['learning_rate'] = jnp.asarray(lr, dtype=hyper['learning_rate'].dtype)
  return (clip_state, adam_state._replace(hyperparams=hyper))

def total_steps_for(max_steps: int, max_tokens: int, tokens_per_step: int) -> int | None:
  """Schedule length from the step and token budgets (the smaller), or None if neither is set."""
  candidates = []
  if max_steps > 0:
    candidates.append(int(max_steps))
  if max_tokens > 0:
    candidates.append(int(math.ceil(max_tokens / tokens_per_step)))
  return min(candidates) if candidates else None
