"""Gate 4: exact causality. No output position may depend on a later input position.

Two independent checks, because each misses what the other sees:
* gradients: the dependence rows dep[t, s] = max_c |d (out[t] . r_t) / d x[s, c]| over every input position s,
  for ~20 output positions t (the first and last ones, both sides of every chunk boundary, a few random ones),
  from one vmapped VJP, at the initial parameters and at randomly perturbed ones (so a zero-initialised future
  tap cannot hide); anything above `leak_tolerance` times the largest in-range dependence is a leak.
  Mathematically causal but numerically noisy mixers (an FFT convolution) sit around 1e-7 and pass.
* perturbation: replacing the inputs from position p on must leave out[:p] unchanged, which also catches
  leaks that carry no gradient (stop_gradient, argmax/sort, integer paths).
Positions straddle 64-token chunk boundaries (T > 64), where chunked kernels go wrong.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aira_jax.discovery.gates.common import (CheckContext, GateFailure, describe_exception, jit,
                                             perturb_floating, program_line, random_input)
from aira_jax.discovery.gates.numerics import call

CHUNK = 64
FIX = ('a future token leaks; make every time mixing causal (cumsum/scan/causal conv/masked attention, and '
       'reductions over time only over positions <= t)')


def _dependence(apply, state, x, r, rows):
  """dep[i, s] = max over channels of |d (y[0, rows[i]] . r[i]) / d x[0, s]| for a batch of one."""
  y, vjp = jax.vjp(lambda x: apply(state, x), x)
  onehot = jax.nn.one_hot(rows, x.shape[1], dtype=jnp.float32)  # [R, T]
  cotangents = (onehot[:, None, :, None] * r[:, None, None, :]).astype(y.dtype)
  (grads,) = jax.vmap(vjp)(cotangents)  # [R, 1, T, d]
  return jnp.max(jnp.abs(grads[:, 0].astype(jnp.float32)), axis=-1)


def gradient_rows(seq_len: int, seed: int, extra: int = 4) -> list[int]:
  """Output positions whose full dependence row is checked: edges, both sides of chunk boundaries, random."""
  rows = {0, 1, 2, seq_len // 3, seq_len // 2, seq_len - 2, seq_len - 1}
  for c in range(CHUNK, seq_len, CHUNK):
    rows |= {c - 2, c - 1, c, c + 1}
  rng = np.random.default_rng(seed)
  rows |= set(int(t) for t in rng.integers(0, seq_len, extra))
  return sorted(t for t in rows if 0 <= t < seq_len)


def perturb_positions(seq_len: int) -> list[int]:
  cands = {1, 2, seq_len // 2 + 3, seq_len - 1}
  for c in range(CHUNK, seq_len, CHUNK):
    cands |= {c - 1, c, c + 1}
  return sorted(p for p in cands if 0 < p < seq_len)


def _leak_message(dep: np.ndarray, rows: list[int], tol: float, variant: str) -> GateFailure | None:
  future = np.arange(dep.shape[1])[None, :] > np.asarray(rows)[:, None]
  in_range = float(dep[~future].max(initial=0.0))
  leak = np.where(future, dep, 0.0)
  bad = leak > tol * max(in_range, 1e-30)
  if not bad.any():
    return None
  i = int(np.argwhere(bad.any(axis=1))[0, 0])
  t, s = rows[i], int(np.nonzero(bad[i])[0].max())  # the farthest future input it sees
  value = float(leak[i, s])
  where = ''
  ri, cols = np.nonzero(bad)
  if np.all(np.asarray(rows)[ri] // CHUNK == cols // CHUNK) and dep.shape[1] > CHUNK:
    where = f' Every leak stays inside a {CHUNK}-token chunk: check the intra-chunk mask (keep j <= i).'
  return GateFailure(
      f'output position {t} depends on input position {s} (|d out[{t}]/d x[{s}]| = {value:.3g}, '
      f'{value / max(in_range, 1e-30):.2g} of the largest causal dependence; {int(bad.sum())} future (t, s) pairs '
      f'leak among the {len(rows)} output positions checked, with {variant}): {FIX}.{where}',
      output_position=t, input_position=s, leaking_pairs=int(bad.sum()))


def _ratio(dep: np.ndarray, rows: list[int]) -> float:
  future = np.arange(dep.shape[1])[None, :] > np.asarray(rows)[:, None]
  return float(dep[future].max(initial=0.0)) / max(float(dep[~future].max(initial=0.0)), 1e-30)


def causality_gate(ctx: CheckContext) -> dict[str, Any]:
  s = ctx.settings
  apply, fwd, state = ctx.forward()
  x = random_input(s.seed + 40, 1, s.seq_len, s.d_model)
  rows = gradient_rows(s.seq_len, s.seed)
  r = random_input(s.seed + 41, 1, len(rows), s.d_model)[0]
  dependence = jit(functools.partial(_dependence, apply), s)
  details: dict[str, Any] = {}
  for variant, params in (('the initial parameters', state),
                          ('randomly perturbed parameters', perturb_floating(state, s.seed + 42))):
    try:
      dep = np.asarray(dependence(params, x, r, jnp.asarray(rows)))
    except Exception as e:  # the program fails under differentiation
      raise GateFailure(f'differentiating the output with respect to the input failed ({variant}): '
                        f'{describe_exception(e)}', line=program_line(e)[0]) from e
    if not np.isfinite(dep).all():
      if variant == 'the initial parameters':
        i, src = (int(v) for v in np.argwhere(~np.isfinite(dep))[0])
        raise GateFailure(f'd out[{rows[i]}]/d x[{src}] is not finite at the initial parameters, so causality cannot '
                          f'be verified; avoid NaN gradients (mask with jnp.where *before* exp/log/division, not '
                          f'after)')
      details['perturbed_params_skipped'] = 'non-finite gradients at perturbed parameters'
      continue
    failure = _leak_message(dep, rows, s.leak_tolerance, variant)
    if failure is not None:
      raise failure
    details[f'max_future_over_causal_{"init" if variant.startswith("the") else "perturbed"}'] = _ratio(dep, rows)
  details['gradient_rows'] = rows
  y0 = np.asarray(call(fwd, state, x, 'causality reference'), np.float64)
  scale = max(float(np.abs(y0).max(initial=0.0)), 1e-30)
  for i, p in enumerate(perturb_positions(s.seq_len)):
    changed = x.copy()
    changed[:, p:] = random_input(s.seed + 43 + i, 1, s.seq_len - p, s.d_model) * 3.0
    y = np.asarray(call(fwd, state, changed, f'inputs from position {p} on replaced'), np.float64)
    diff = np.abs(y[:, :p] - y0[:, :p]).max(axis=(0, 2))
    bad = ~(diff <= s.perturb_tolerance * scale)
    if bad.any():
      t = int(np.argmax(bad))
      raise GateFailure(f'output position {t} changed by {diff[t]:.3g} (max |output| {scale:.3g}) when only inputs '
                        f'at positions >= {p} were replaced: {FIX}. (Gradients may not show it: look for '
                        f'stop_gradient, argmax/sort or global statistics over time.)', output_position=t,
                        input_position=p)
  details['perturbed_positions'] = perturb_positions(s.seq_len)
  return details
