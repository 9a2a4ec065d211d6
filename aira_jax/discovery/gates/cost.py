"""Gate 6: sub-quadratic cost in sequence length.

The mixer's forward is traced and compiled (never run) at two or more lengths (default 2048 and 8192). Metrics:
our own jaxpr FLOP and data-movement counts (scan bodies times their length, see aira_jax.ops.jaxpr_cost), and
XLA's cost_analysis() FLOPs and bytes and memory_analysis() temporaries. Each metric's exponent is
log(c(T2)/c(T1)) / log(T2/T1) on the last pair; the worst one decides: T and T log T sit near 1-1.2, T^2 near 2.

Trusted ops are costed as they run: `ops.attention(..., sliding_window=W)` takes its banded O(T W) path on the
CPU where the check runs, so a fixed-window attention measures linear and full attention quadratic.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from aira_jax.discovery.gates.common import CheckContext, GateFailure, describe_exception, jit, program_line
from aira_jax.ops.jaxpr_cost import count_jaxpr

QUADRATIC_FIX = ('replace the T x T interaction with a recurrence carrying a fixed-size state (lax.scan over chunks, '
                 'ops.delta_rule / ops.gated_delta_rule / ops.simple_gla), a causal convolution (ops.short_conv or '
                 'an FFT long convolution) or sliding-window attention (ops.attention(..., sliding_window=W)) with '
                 'a fixed W')
MIN_METRIC = 1e3  # below this a metric is noise (constants, tiny temporaries)
METRICS = ('jaxpr_flops', 'jaxpr_moved', 'xla_flops', 'xla_bytes', 'temp_bytes')


def _xla_metrics(apply, state, x, settings) -> dict[str, float]:
  compiled = jit(apply, settings).lower(state, x).compile()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  out = {'xla_flops': float(cost.get('flops', 0.0)), 'xla_bytes': float(cost.get('bytes accessed', 0.0))}
  mem = compiled.memory_analysis()
  out['temp_bytes'] = float(getattr(mem, 'temp_size_in_bytes', 0) or 0)
  return out


def measure(apply, state, seq_len: int, batch: int, d_model: int, settings) -> dict[str, float]:
  x = jax.ShapeDtypeStruct((batch, seq_len, d_model), jnp.float32)
  closed = jax.make_jaxpr(apply)(state, x)
  jc = count_jaxpr(closed.jaxpr)
  if jc.unbounded:
    raise GateFailure(f'the cost cannot be bounded: {jc.unbounded[0]}; use lax.scan (fixed length) or '
                      f'lax.fori_loop with Python-int bounds so the number of steps is known', unbounded=jc.unbounded)
  return {'seq_len': seq_len, 'jaxpr_flops': jc.flops, 'jaxpr_moved': jc.moved, **_xla_metrics(apply, state, x, settings)}


def exponents(rows: list[dict[str, float]]) -> dict[str, float]:
  """Per metric, log(c2 / c1) / log(T2 / T1) on the last two rows (metrics below MIN_METRIC skipped)."""
  a, b = rows[-2], rows[-1]
  out = {}
  for m in METRICS:
    if a.get(m, 0.0) >= MIN_METRIC and b.get(m, 0.0) > 0:
      out[m] = math.log(b[m] / a[m]) / math.log(b['seq_len'] / a['seq_len'])
  return out


def cost_gate(ctx: CheckContext) -> dict[str, Any]:
  s = ctx.settings
  apply, _, state = ctx.forward()
  rows = []
  for t in s.cost_seq_lens:
    try:
      rows.append(measure(apply, state, t, s.cost_batch, s.d_model, s))
    except GateFailure:
      raise
    except Exception as e:
      raise GateFailure(f'tracing/compiling the forward pass at T={t} failed: {describe_exception(e)}; the Mixer '
                        f'must work for any sequence length', line=program_line(e)[0]) from e
  exps = exponents(rows)
  if not exps:
    raise GateFailure('the cost could not be measured (all metrics ~0)', rows=rows)
  worst = max(exps, key=exps.get)
  exponent = exps[worst]
  limit = s.max_quadratic_exponent if s.allow_quadratic else s.max_cost_exponent
  details = {'cost_exponent': round(exponent, 3), 'worst_metric': worst,
             'exponents': {k: round(v, 3) for k, v in exps.items()}, 'rows': rows}
  if exponent > limit:
    a, b = rows[-2], rows[-1]
    growth = f'{worst}: {a[worst]:.3g} at T={a["seq_len"]} -> {b[worst]:.3g} at T={b["seq_len"]}'
    if s.allow_quadratic:
      raise GateFailure(f'cost grows like T^{exponent:.2f} ({growth}), worse than quadratic even with '
                        f'allow_quadratic (limit T^{limit}); remove the cubic work', **details)
    raise GateFailure(f'cost grows like T^{exponent:.2f} in sequence length ({growth}); the limit is T^{limit} '
                      f'(T log T passes, T^2 does not). The Mixer is quadratic: {QUADRATIC_FIX}.', **details)
  return details
