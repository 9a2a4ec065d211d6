"""Gates 3 and 5: the forward contract (shape, dtype, finite, in fp32 and bf16) and batch independence."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aira_jax.discovery.gates.common import (CheckContext, GateFailure, cast_floating, describe_exception,
                                             program_line, random_input)


def call(fn, state, x, what: str) -> jax.Array:
  """fn(state, x), turning any exception into a GateFailure that names the program line."""
  try:
    y = fn(state, x)
    jax.block_until_ready(y)
    return y
  except GateFailure:
    raise
  except Exception as e:  # whatever the program raises while traced, compiled or run
    raise GateFailure(f'the forward pass on x of shape {tuple(x.shape)} {x.dtype} ({what}) raised '
                      f'{describe_exception(e)}', line=program_line(e)[0]) from e


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
  return tuple(int(i) for i in np.argwhere(mask)[0])


def check_output(y: Any, x: jax.Array, what: str) -> None:
  """Same shape and dtype as x, all finite."""
  if not isinstance(y, jax.Array):
    raise GateFailure(f'Mixer.__call__ returned {type(y).__name__} ({what}); it must return one array shaped like x')
  if y.shape != x.shape:
    raise GateFailure(f'Mixer.__call__ returned shape {tuple(y.shape)} for input {tuple(x.shape)} ({what}); the '
                      f'output must be [batch, time, d_model] exactly like the input (project back to d_model)')
  if y.dtype != x.dtype:
    raise GateFailure(f'Mixer.__call__ returned {y.dtype} for a {x.dtype} input ({what}); return the input dtype '
                      f'(e.g. `return out.astype(x.dtype)`), computing sensitive parts in float32 inside')
  finite = np.isfinite(np.asarray(y).astype(np.float32))
  if not finite.all():
    b, t, c = _first_bad(~finite)
    raise GateFailure(f'the output has {int((~finite).sum())} non-finite values (NaN/inf) ({what}), first at batch '
                      f'{b}, position {t}, channel {c}; guard exp/log/division/sqrt (clip, add eps, mask before exp) '
                      f'and keep decays and normalisers in float32', position=t)


def forward_gate(ctx: CheckContext) -> dict[str, Any]:
  """Gate 3: [B, T, d] -> [B, T, d] of x's dtype, finite, with fp32 and with bf16 parameters and input."""
  s = ctx.settings
  _, fwd, state = ctx.forward()
  x = random_input(s.seed + 30, s.batch_size, s.seq_len, s.d_model)
  y = call(fwd, state, x, 'float32 parameters')
  check_output(y, x, 'float32 parameters')
  x16 = x.astype(jnp.bfloat16)
  y16 = call(fwd, cast_floating(state, jnp.bfloat16), x16, 'bfloat16 parameters')
  check_output(y16, x16, 'bfloat16 parameters')
  y32 = np.asarray(y, np.float32)
  err16 = float(np.linalg.norm(np.asarray(y16, np.float32) - y32) / max(np.linalg.norm(y32), 1e-30))
  return {'output_rms': float(np.sqrt(np.mean(y32 ** 2))), 'bf16_relative_error': err16}


def _max_diff(a: jax.Array, b: jax.Array) -> float:
  d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
  return float('inf') if not np.isfinite(d).all() else float(d.max(initial=0.0))


def batch_gate(ctx: CheckContext) -> dict[str, Any]:
  """Gate 5: a sample's output does not depend on the other samples, nor on the batch size.

  Shapes reuse the forward gate's [batch_size, T] and the causality gate's [1, T] compilations.
  """
  s = ctx.settings
  _, fwd, state = ctx.forward()
  b = s.batch_size
  x = random_input(s.seed + 50, b, s.seq_len, s.d_model)
  y = np.asarray(call(fwd, state, x, f'batch of {b}'), np.float32)
  scale = max(float(np.abs(y).max()), 1e-30)
  tol = s.batch_tolerance * scale
  hint = ('the Mixer mixes information across the batch; reduce and normalise only over time (causally) or '
          'features (axis -1), never over axis 0, and keep no state between calls')
  others = x.copy()
  others[1:] = random_input(s.seed + 51, b - 1, s.seq_len, s.d_model) * 2.0
  diff = _max_diff(np.asarray(call(fwd, state, others, f'batch of {b}, other samples changed'))[0], y[0])
  if not diff <= tol:
    raise GateFailure(f'sample 0\'s output changed by {diff:.3g} (max |output| {scale:.3g}) when only the other '
                      f'samples of the batch changed: {hint}', max_diff=diff)
  diff1 = max(_max_diff(np.asarray(call(fwd, state, x[i:i + 1], 'batch of 1'))[0], y[i]) for i in range(b))
  if not diff1 <= tol:
    raise GateFailure(f'a sample\'s output changed by {diff1:.3g} (max |output| {scale:.3g}) when it ran alone '
                      f'instead of in a batch of {b}: {hint}', max_diff=diff1)
  return {'max_diff_other_samples': diff, 'max_diff_batch_size': diff1}
