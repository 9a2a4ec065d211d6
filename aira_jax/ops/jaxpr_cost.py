"""Counting a jaxpr's cost ourselves, because XLA's cost_analysis() counts a while/scan body only once.

Two users: the Checker's cost gate (aira_jax.discovery.gates.cost) counts a design's forward at two lengths, and
the Mosaic TPU kernels count one grid step of their body for the `pl.CostEstimate` they give XLA's scheduler.

`count_jaxpr` walks the jaxpr: dot_general and convolutions by their multiply-adds, FFTs as 5 N log2 N,
triangular solves and decompositions by their cubic terms, everything elementwise at one FLOP per output
element, and data movement (reshape, gather, broadcast, ...) as elements moved in a separate tally. A scan
multiplies its body by its length, a cond takes its most expensive branch, a while_loop multiplies its body by
a trip count read from the fori_loop pattern (counter < bound, counter += 1, literal bounds) and is reported as
unbounded otherwise. Call-like primitives (jit, custom_jvp/vjp, remat, ...) recurse into their jaxprs.
Transcendental elementwise ops (exp, log, tanh, ...) count as FLOPs like any elementwise op and are also
tallied on their own, as XLA's cost model keeps them.
"""
from __future__ import annotations

import dataclasses
import math

from jax.extend import core

MOVEMENT = frozenset({
    'reshape', 'broadcast_in_dim', 'transpose', 'squeeze', 'expand_dims', 'slice', 'dynamic_slice',
    'dynamic_update_slice', 'gather', 'concatenate', 'pad', 'rev', 'convert_element_type', 'copy', 'copy_p', 'iota',
    'device_put', 'sharding_constraint', 'reduce_precision', 'bitcast_convert_type', 'split', 'scatter',
    'mesh_cast', 'reshard', 'optimization_barrier', 'real', 'imag', 'complex'})
FREE = frozenset({'stop_gradient', 'name', 'debug_callback', 'random_seed', 'random_wrap', 'random_unwrap'})
CUMULATIVE = frozenset({'cumsum', 'cumprod', 'cummax', 'cummin', 'cumlogsumexp'})
TRANSCENDENTAL = frozenset({'exp', 'exp2', 'expm1', 'log', 'log1p', 'logistic', 'tanh', 'sin', 'cos', 'tan',
                            'asin', 'acos', 'atan', 'atan2', 'sinh', 'cosh', 'asinh', 'acosh', 'atanh', 'sqrt',
                            'rsqrt', 'cbrt', 'pow', 'erf', 'erfc', 'erf_inv', 'lgamma', 'digamma'})
DECOMPOSITIONS = frozenset({'cholesky', 'lu', 'qr', 'householder_product', 'eigh', 'eig', 'svd', 'schur',
                            'hessenberg', 'tridiagonal'})


@dataclasses.dataclass
class JaxprCost:
  flops: float = 0.0
  moved: float = 0.0  # elements written by data-movement primitives
  transcendentals: float = 0.0  # elements produced by TRANSCENDENTAL ops (also in flops)
  unbounded: list[str] = dataclasses.field(default_factory=list)  # while_loops without a readable trip count

  def add(self, other: 'JaxprCost', times: float = 1.0) -> None:
    self.flops += times * other.flops
    self.moved += times * other.moved
    self.transcendentals += times * other.transcendentals
    self.unbounded.extend(other.unbounded)


def _size(var) -> int:
  aval = getattr(var, 'aval', None)
  shape = getattr(aval, 'shape', ())
  return math.prod(shape) if shape is not None else 1


def _shape(var) -> tuple:
  return tuple(getattr(getattr(var, 'aval', None), 'shape', ()) or ())


def _out_size(eqn) -> int:
  return sum(_size(v) for v in eqn.outvars)


def _as_jaxpr(value):
  if isinstance(value, core.ClosedJaxpr):
    return value.jaxpr
  if isinstance(value, core.Jaxpr):
    return value
  return None


def _sub_jaxprs(params: dict) -> list:
  found = []
  for value in params.values():
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      j = _as_jaxpr(v)
      if j is not None:
        found.append(j)
  return found


def _literal(value) -> int | None:
  if isinstance(value, core.Literal):
    try:
      return int(value.val)
    except (TypeError, ValueError):
      return None
  return None


def while_trip_count(eqn) -> int | None:
  """The trip count of a fori_loop-shaped while (i < n, i += 1, literal start and bound), else None."""
  p = eqn.params
  cond, body = p['cond_jaxpr'].jaxpr, p['body_jaxpr'].jaxpr
  cnc, bnc = p['cond_nconsts'], p['body_nconsts']
  if len(cond.eqns) != 1 or cond.eqns[0].primitive.name != 'lt':
    return None
  counter, bound = cond.eqns[0].invars
  carry_in = list(cond.invars[cnc:])
  outer_carry = list(eqn.invars[cnc + bnc:])
  if counter not in carry_in:
    return None
  idx = carry_in.index(counter)
  start = _literal(outer_carry[idx])
  # The bound: a literal in cond, a cond constant given as a literal, or a carry the body passes through.
  limit = _literal(bound)
  if limit is None and bound in cond.invars[:cnc]:
    limit = _literal(eqn.invars[cond.invars.index(bound)])
  if limit is None and bound in carry_in:
    j = carry_in.index(bound)
    if body.outvars[j] is body.invars[bnc + j]:
      limit = _literal(outer_carry[j])
  if start is None or limit is None:
    return None
  # The body must add the literal 1 to the counter.
  out = body.outvars[idx]
  step = next((e for e in body.eqns if out in e.outvars), None)
  if step is None or step.primitive.name != 'add':
    return None
  a, b = step.invars
  if not ((a is body.invars[bnc + idx] and _literal(b) == 1) or (b is body.invars[bnc + idx] and _literal(a) == 1)):
    return None
  return max(0, limit - start)


def _eqn_cost(eqn) -> JaxprCost:
  name = eqn.primitive.name
  c = JaxprCost()
  if name == 'scan':
    c.add(count_jaxpr(eqn.params['jaxpr'].jaxpr), times=eqn.params['length'])
  elif name == 'while':
    trips = while_trip_count(eqn)
    if trips is None:
      c.unbounded.append('lax.while_loop whose trip count depends on data (not `i < n; i += 1` with fixed bounds)')
      trips = 1
    c.add(count_jaxpr(eqn.params['body_jaxpr'].jaxpr), times=trips)
    c.add(count_jaxpr(eqn.params['cond_jaxpr'].jaxpr), times=trips + 1)
  elif name == 'cond':
    branches = [count_jaxpr(b.jaxpr) for b in eqn.params['branches']]
    worst = max(branches, key=lambda b: (b.flops, b.moved))
    c.add(worst)
    for b in branches:
      c.unbounded.extend(b.unbounded)
  elif (subs := _sub_jaxprs(eqn.params)):
    for sub in subs:  # call-like primitives: jit, custom_jvp_call, custom_vjp_call, checkpoint, shard_map, ...
      c.add(count_jaxpr(sub))
  elif name == 'dot_general':
    (lhs_contract, _), _ = eqn.params['dimension_numbers']
    lhs = _shape(eqn.invars[0])
    c.flops = 2.0 * _out_size(eqn) * math.prod(lhs[d] for d in lhs_contract)
  elif name == 'conv_general_dilated':
    rhs = _shape(eqn.invars[1])
    out_feature_dim = eqn.params['dimension_numbers'].rhs_spec[0]
    c.flops = 2.0 * _out_size(eqn) * math.prod(rhs) / max(rhs[out_feature_dim], 1)
  elif name == 'fft':
    n = math.prod(eqn.params['fft_lengths'])
    c.flops = 5.0 * max(_size(eqn.invars[0]), _out_size(eqn)) * math.log2(max(n, 2))
  elif name == 'triangular_solve':
    a, b = _shape(eqn.invars[0]), _shape(eqn.invars[1])
    c.flops = float(math.prod(b)) * (a[-1] if a else 1)
  elif name in DECOMPOSITIONS:
    a = _shape(eqn.invars[0])
    m, n = (a[-2], a[-1]) if len(a) >= 2 else (1, 1)
    c.flops = float(math.prod(a[:-2])) * m * n * min(m, n)
  elif name == 'sort':
    shape = _shape(eqn.invars[0])
    n = shape[eqn.params.get('dimension', -1)] if shape else 1
    c.flops = float(sum(_size(v) for v in eqn.invars)) * math.log2(max(n, 2))
  elif name in CUMULATIVE or name.startswith('reduce_') or name in ('argmax', 'argmin'):
    c.flops = float(sum(_size(v) for v in eqn.invars))
  elif name in MOVEMENT:
    c.moved = float(_out_size(eqn))
  elif name in FREE:
    pass
  else:  # elementwise arithmetic, comparisons, select, random bits, ...
    c.flops = float(_out_size(eqn))
    if name in TRANSCENDENTAL:
      c.transcendentals = c.flops
  return c


def count_jaxpr(jaxpr) -> JaxprCost:
  """The cost of running `jaxpr` (a Jaxpr or ClosedJaxpr) once."""
  jaxpr = _as_jaxpr(jaxpr) or jaxpr
  total = JaxprCost()
  for eqn in jaxpr.eqns:
    total.add(_eqn_cost(eqn))
  return total
