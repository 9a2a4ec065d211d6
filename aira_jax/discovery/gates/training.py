"""Gates 7-9, on the tiny LM built around the Mixer: gradients reach every parameter, the parameter budget, and
a short training smoke test (AdamW on one fixed batch; the loss must fall)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from aira_jax.discovery.gates.common import (CheckContext, GateFailure, describe_exception, jit, param_paths,
                                             program_line)
from aira_jax.models import auto_mlp_hidden, build_model, count_params

MAX_NAMED = 8
MLP_STEP = 64


def _build(ctx: CheckContext, seed: int) -> nnx.Module:
  try:
    return build_model(ctx.model_config(), rngs=nnx.Rngs(seed))
  except Exception as e:
    raise GateFailure(f'building the tiny LM failed: {describe_exception(e)}', line=program_line(e)[0]) from e


def _loss_fn(graphdef, rest, tokens):
  def loss(params):
    model = nnx.merge(graphdef, params, rest)
    logits = model(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
  return loss


def _names(items: list[str]) -> str:
  more = f' (+{len(items) - MAX_NAMED} more)' if len(items) > MAX_NAMED else ''
  return ', '.join(items[:MAX_NAMED]) + more


def gradients_gate(ctx: CheckContext) -> dict[str, Any]:
  """Gate 7: on a random batch every parameter's gradient is finite and not identically zero."""
  s = ctx.settings
  model = _build(ctx, s.seed)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tokens = np.random.default_rng(s.seed + 70).integers(0, s.vocab_size, (s.batch_size, s.train_seq_len + 1))
  tokens = jnp.asarray(tokens, jnp.int32)
  try:
    loss, grads = jit(jax.value_and_grad(_loss_fn(graphdef, rest, tokens)), s)(params)
  except Exception as e:
    raise GateFailure(f'computing gradients of the LM loss failed: {describe_exception(e)}',
                      line=program_line(e)[0]) from e
  nonfinite, dead = [], []
  for name, g in param_paths(grads):
    g = np.asarray(g, np.float32)
    if not np.isfinite(g).all():
      nonfinite.append(name)
    elif not np.any(g):
      dead.append(name)
  if not np.isfinite(float(loss)) or nonfinite:
    raise GateFailure(f'the loss or gradients are not finite (loss {float(loss):.4g}; non-finite gradients for '
                      f'{_names(nonfinite) or "none"}); guard exp/log/division/sqrt at their edges: mask with '
                      f'jnp.where before the op, add eps, keep decays in float32', nonfinite_params=nonfinite)
  if dead:
    raise GateFailure(f'these parameters get an all-zero gradient on a random batch: {_names(dead)}. Every '
                      f'parameter must influence the output: remove unused parameters, or fix what cuts them off '
                      f'(stop_gradient, a multiply by zero, an integer cast, a branch never taken)', dead_params=dead)
  return {'loss': float(loss), 'params_checked': len(param_paths(grads))}


def _total(ctx: CheckContext, mlp_hidden: int | None, design: str | None = None) -> int:
  """The LM's parameter count from an abstract build (no memory, no compute)."""
  s = ctx.settings
  if design is None:
    cfg = s.model_config(program_source=ctx.source, mlp_hidden=mlp_hidden)
  else:
    cfg = s.model_config(design=design, mlp_hidden=mlp_hidden)
    cfg['mixer_kwargs'] = {}
  abstract = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0)))
  return count_params(abstract)['total']


def budget_gate(ctx: CheckContext) -> dict[str, Any]:
  """Gate 8: the LM's total parameters within +-budget_tolerance of the target; optionally fit mlp_hidden."""
  s = ctx.settings
  target = s.target_params or _total(ctx, s.mlp_hidden, design=s.budget_reference)
  source = 'target_params' if s.target_params else f'the {s.budget_reference} baseline at the same scale'
  current = ctx.mlp_hidden if ctx.mlp_hidden is not None else s.mlp_hidden
  total = _total(ctx, current)
  tol = s.budget_tolerance
  details = {'total_params': total, 'target_params': target, 'relative': total / target - 1,
             'mlp_hidden': current or auto_mlp_hidden(s.d_model)}  # the block MLP width the LM uses
  if abs(total - target) <= tol * target:
    return details
  if not s.auto_fit:
    side = 'above' if total > target else 'below'
    action = 'shrink the mixer' if total > target else 'grow the mixer'
    raise GateFailure(f'the LM has {total:,} parameters, {abs(total / target - 1):.0%} {side} the target {target:,} '
                      f'({source}, +-{tol:.0%}): {action} by about {abs(total - target) // s.num_layers:,} '
                      f'parameters per layer, or enable auto_fit to resize the block MLP (mlp_hidden)', **details)
  # Parameters are affine in mlp_hidden: two abstract builds give the line, then round to a multiple of 64.
  base = _total(ctx, MLP_STEP)
  slope = (_total(ctx, 2 * MLP_STEP) - base) / MLP_STEP
  ideal = MLP_STEP + (target - base) / slope
  cands = {max(MLP_STEP, MLP_STEP * int(np.floor(ideal / MLP_STEP))), max(MLP_STEP, MLP_STEP * int(np.ceil(ideal / MLP_STEP)))}
  best = min(cands, key=lambda h: abs(base + slope * (h - MLP_STEP) - target))
  fitted = _total(ctx, best)
  details.update(total_params=fitted, relative=fitted / target - 1, mlp_hidden=best, unfitted_params=total)
  if abs(fitted - target) > tol * target:
    per_layer = (fitted - target) // s.num_layers
    raise GateFailure(f'no MLP width fits the budget: with mlp_hidden={best} the LM has {fitted:,} parameters vs the '
                      f'target {target:,} (+-{tol:.0%}); the mixer alone is too '
                      f'{"large" if fitted > target else "small"}: change it by about {abs(per_layer):,} '
                      f'parameters per layer', **details)
  ctx.mlp_hidden = best
  return details


def _pattern_batch(seed: int, batch: int, length: int, vocab: int) -> jax.Array:
  """Sequences that repeat a random motif (period 3-8): learnable by unigram statistics and by copying."""
  rng = np.random.default_rng(seed)
  rows = [np.resize(rng.integers(0, vocab, int(rng.integers(3, 9))), length) for _ in range(batch)]
  return jnp.asarray(np.stack(rows), jnp.int32)


def train_gate(ctx: CheckContext) -> dict[str, Any]:
  """Gate 9: a few dozen AdamW steps on one fixed batch; the loss must fall by min_loss_drop."""
  s = ctx.settings
  model = _build(ctx, s.seed + 9)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tokens = _pattern_batch(s.seed + 90, s.train_batch, s.train_seq_len + 1, s.vocab_size)
  loss_fn = _loss_fn(graphdef, rest, tokens)
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(s.train_lr, weight_decay=0.0))

  def step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jit(step, s)

  opt_state = jit(opt.init, s)(params)  # one compilation instead of one per parameter shape
  losses = []
  try:
    for i in range(s.train_steps):
      params, opt_state, loss = step(params, opt_state)
      losses.append(float(loss))
      if not np.isfinite(losses[-1]):
        raise GateFailure(f'the training loss became {losses[-1]} at step {i} (AdamW lr {s.train_lr}); the Mixer is '
                          f'numerically unstable under training: bound its outputs (normalise), keep decays in '
                          f'float32, avoid exp of unbounded values', losses=losses)
  except GateFailure:
    raise
  except Exception as e:
    raise GateFailure(f'a training step failed: {describe_exception(e)}', line=program_line(e)[0]) from e
  first, last = losses[0], float(np.mean(losses[-3:]))
  drop = (first - last) / first
  details = {'loss_first': first, 'loss_last': last, 'relative_drop': drop,
             'losses': [round(v, 4) for v in losses[:: max(1, len(losses) // 10)]]}
  if not drop >= s.min_loss_drop:
    raise GateFailure(f'the loss fell only {drop:.1%} ({first:.3f} -> {last:.3f}) in {s.train_steps} AdamW steps on '
                      f'one fixed batch (needs {s.min_loss_drop:.0%}); the LM with this Mixer does not train: check '
                      f'that the output carries signal (not ~0 or huge), and that normalisation and gating let '
                      f'gradients through', **details)
  return details
