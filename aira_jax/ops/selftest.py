"""Each Pallas kernel call a compiled step makes, checked once against the XLA op before the step runs.

A kernel can compile and compute wrong numbers that never turn into a NaN: an index off by one, a block read
twice, an output scaled by a constant. Training then goes on, a little worse, and a discovery run ranks every
design that uses the op too low without any sign of it. The model-level check (train.check_kernels, in fallback)
compares one whole forward and backward, which a normalisation after the op can hide (an output scaled by 1.5
passes through an RMSNorm unchanged), and it costs a second compile of the model, so it is off by default.

This check is per op, cheap enough to be on by default. While a step is traced, `dispatch.choose` notes each call
that took a kernel (`KernelCall`: op, argument shapes and dtypes, options). After the step compiles,
`check_calls` runs every call signature not yet checked in this process once, on random inputs of that signature
with the batch cut to 1 and the sequence to at most SEQ_CAP (+ T % 128, so a ragged tail stays ragged),
through the kernel and through the XLA op: the outputs, the final state when the call returns one, and the
gradients of a random projection of them with respect to every floating input are compared by relative RMS
error. A kernel that fails, or raises, is reported; `fallback.compile_step` then sets it aside and compiles the
step with the XLA ops. Calls with several processes (multi-host) are not checked: each process would judge on
its own, and processes that disagree would compile different programs.

Inputs follow each op's contract (RECIPES): unit-norm keys, β in (0, 1), log decays below 0; an op without a
recipe is not checked (logged).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

SEQ_CAP = 256  # longest sequence checked (plus T % 128): 4 chunks of 64, 2 blocks of 128
# Relative RMS error of each output and gradient, kernel vs XLA, by input precision. A correct bf16 kernel
# differs from the XLA op by ~5e-3 (the Mosaic GPU kernels, interpreted: 3.4e-3 to 5.8e-3; another summation
# order over bf16 inputs); a wrong one by O(1) (outputs 1.5x: 0.5; keys one position late: 1.4).
TOLERANCE = {'low': 0.1, 'float32': 2e-2}


@dataclasses.dataclass(frozen=True)
class KernelCall:
  """One traced call of an op that chose a backend kernel: what the self-test needs to make inputs like it."""
  op: str
  backend: str
  args: tuple[Any, ...]              # jax.ShapeDtypeStruct per positional argument (None where None was passed)
  kwargs: tuple[tuple[str, Any], ...]  # sorted; arrays as ShapeDtypeStruct, other options as given
  kernel: Callable[..., Any] | None = None  # the registered function (a verdict is for it, not a later one)

  @classmethod
  def of(cls, op: str, backend: str, args: tuple, kwargs: dict,
         kernel: Callable[..., Any] | None = None) -> 'KernelCall':
    def spec(x):
      return None if x is None else (jax.ShapeDtypeStruct(x.shape, x.dtype) if hasattr(x, 'shape') else x)
    return cls(op, backend, tuple(spec(a) for a in args), tuple(sorted((k, spec(v)) for k, v in kwargs.items())),
               kernel)

  def reduced(self) -> 'KernelCall':
    """The call as the self-test runs it: batch 1 and the checked sequence length (positional arguments are
    [B, T, ...] sequences; array options, the initial state, are [B, ...]). Calls that reduce alike share a
    verdict: an evaluation's many length buckets cost a few checks, not one each."""
    def cut(x, seq: bool):
      if not isinstance(x, jax.ShapeDtypeStruct) or len(x.shape) < (2 if seq else 1):
        return x
      rest = (checked_length(x.shape[1]),) + tuple(x.shape[2:]) if seq else tuple(x.shape[1:])
      return jax.ShapeDtypeStruct((1,) + rest, x.dtype)
    return dataclasses.replace(self, args=tuple(cut(a, True) for a in self.args),
                               kwargs=tuple((k, cut(v, False)) for k, v in self.kwargs))

  def describe(self) -> str:
    def show(x):
      return f'{x.dtype}{list(x.shape)}' if isinstance(x, jax.ShapeDtypeStruct) else repr(x)
    opts = ', '.join(f'{k}={show(v)}' for k, v in self.kwargs if v is not None and v is not False)
    return f"{self.op}({', '.join(show(a) for a in self.args)}{', ' + opts if opts else ''})"


# ------------------------------------------------------------------------------------------------ inputs
def _normal(key, shape):
  return jax.random.normal(key, shape, jnp.float32)


def _unit(key, shape):
  x = jax.random.normal(key, shape, jnp.float32)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _gate(key, shape):  # beta in (0, 1)
  return jax.nn.sigmoid(jax.random.normal(key, shape, jnp.float32))


def _log_decay(key, shape):  # log of a per-step decay in (0, 1), mostly near 1 as trained models have it
  return -jax.nn.softplus(jax.random.normal(key, shape, jnp.float32) - 2.0)


# op -> how to draw each positional argument (all are [B, T, ...] sequence arrays) and the initial state.
RECIPES: dict[str, tuple[Callable, ...]] = {
    'delta_rule': (_unit, _unit, _normal, _gate),
    'gated_delta_rule': (_unit, _unit, _normal, _log_decay, _gate),
    'simple_gla': (_unit, _unit, _normal, _log_decay),
}


def checked_length(t: int) -> int:
  """The sequence length a call over `t` positions is checked at: t itself up to SEQ_CAP, else SEQ_CAP plus
  t % 128 (so a length that is not a multiple of the chunk or block keeps its ragged tail)."""
  return t if t <= SEQ_CAP else SEQ_CAP + t % 128


def sample_inputs(call: KernelCall, seed: int = 0) -> tuple[tuple, dict]:
  """Random (args, kwargs) for the reduced call (KernelCall.reduced): its shapes, dtypes and options."""
  call = call.reduced()
  recipe = RECIPES[call.op]
  if len(recipe) != len(call.args):
    raise ValueError(f'{call.op}: the self-test recipe has {len(recipe)} arguments, the call {len(call.args)}')
  keys = iter(jax.random.split(jax.random.key(seed), len(call.args) + len(call.kwargs) + 1))
  args = []
  for draw, a in zip(recipe, call.args):
    key = next(keys)
    args.append(None if a is None else draw(key, a.shape).astype(a.dtype))
  kwargs = {}
  for name, value in call.kwargs:
    key = next(keys)
    if isinstance(value, jax.ShapeDtypeStruct):  # the initial state
      value = (0.1 * jax.random.normal(key, value.shape, jnp.float32)).astype(value.dtype)
    kwargs[name] = value
  return tuple(args), kwargs


# ------------------------------------------------------------------------------------------------ the check
def _rel_rms(got, want) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  if not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):
    return math.inf
  scale = float(np.linalg.norm(want))
  return float(np.linalg.norm(got - want)) / max(scale, 1e-30) if scale > 0 else float(np.linalg.norm(got))


def _outputs_and_grads(op_fn: Callable, args: tuple, kwargs: dict, seed: int):
  """op(impl) on the inputs: its outputs, and the gradients of <outputs, random cotangents> w.r.t. every floating
  argument and array option (one jit: forward, then backward)."""
  floating = [i for i, a in enumerate(args) if a is not None and jnp.issubdtype(a.dtype, jnp.floating)]
  state_keys = [k for k, v in kwargs.items() if hasattr(v, 'dtype') and jnp.issubdtype(v.dtype, jnp.floating)]

  def run(diff_args, diff_state):
    full = list(args)
    for i, a in zip(floating, diff_args):
      full[i] = a
    kw = {**kwargs, **dict(zip(state_keys, diff_state))}
    return op_fn(*full, **kw)

  def fwd_bwd(diff_args, diff_state):
    out, pullback = jax.vjp(run, diff_args, diff_state)
    leaves, tree = jax.tree.flatten(out)
    cots = [jax.random.normal(jax.random.key(seed + 1 + i), x.shape, jnp.float32).astype(x.dtype)
            for i, x in enumerate(leaves)]
    grads = pullback(jax.tree.unflatten(tree, cots))
    return leaves, jax.tree.leaves(grads)

  outs, grads = jax.jit(fwd_bwd)([args[i] for i in floating], [kwargs[k] for k in state_keys])
  names = [f'output {i}' for i in range(len(outs))] + [f'gradient of argument {i}' for i in floating] + \
      [f'gradient of {k}' for k in state_keys]
  return names, jax.device_get(list(outs) + list(grads))


def check_call(call: KernelCall, *, seed: int = 0) -> dict[str, Any]:
  """Runs one call signature through the kernel and the XLA op. Returns {'ok', 'call', 'max_rel_err', 'worst',
  'reason', 'seconds'}; a kernel that raises fails with the error as its reason. When the check itself cannot
  run (the XLA op raises or is not finite on the drawn inputs) the verdict has 'skipped' (why) and is ok: the
  kernel keeps its place and the log says it went unchecked."""
  from aira_jax import ops  # pylint: disable=import-outside-toplevel  (aira_jax.ops imports this module's users)
  t0 = time.monotonic()
  low = any(isinstance(a, jax.ShapeDtypeStruct) and jnp.dtype(a.dtype).itemsize < 4 for a in call.args)
  tol = TOLERANCE['low' if low else 'float32']
  out = {'call': call.reduced().describe(), 'tolerance': tol}
  public = getattr(ops, call.op)
  kernel = call.kernel or functools.partial(public, impl='kernel')
  try:
    args, kwargs = sample_inputs(call, seed)
    names, want = _outputs_and_grads(functools.partial(public, impl='xla'), args, kwargs, seed)
    if not all(np.all(np.isfinite(np.asarray(w, np.float32))) for w in want):
      raise FloatingPointError('the XLA op is not finite on the drawn inputs')
  except Exception as e:  # noqa: BLE001  (the check's own trouble must never stop a run)
    return {**out, 'ok': True, 'max_rel_err': 0.0, 'worst': '', 'reason': '', 'seconds': time.monotonic() - t0,
            'skipped': f'the self-test could not run: {type(e).__name__}: {str(e)[:300]}'}
  try:
    _, got = _outputs_and_grads(kernel, args, kwargs, seed)
  except Exception as e:  # noqa: BLE001  (a kernel that raises on these inputs fails the check, saying why)
    text = f'{type(e).__name__}: {e}'
    return {**out, 'ok': False, 'max_rel_err': math.inf, 'worst': '', 'seconds': time.monotonic() - t0,
            'reason': f"the kernel raised on {out['call']}: {text[:400]}"}
  errors = [(_rel_rms(g, w), name) for name, g, w in zip(names, got, want)]
  worst_err, worst = max(errors, default=(0.0, ''))
  ok = worst_err <= tol
  reason = '' if ok else (f"{worst} differs from the XLA op by relative RMS {worst_err:.3g} > {tol:g} "
                          f"on {out['call']}")
  return {**out, 'ok': ok, 'max_rel_err': worst_err, 'worst': worst, 'reason': reason,
          'seconds': time.monotonic() - t0}


_checked: dict[KernelCall, dict[str, Any]] = {}  # this process's verdicts by reduced call
_lock = threading.Lock()


def check_calls(calls: list[KernelCall]) -> dict[str, Any]:
  """Checks each call signature not yet checked in this process. Returns {'ok': {op: max error},
  'failed': {op: reason}, 'skipped': {op: why}, 'seconds': s} over these calls (earlier verdicts included)."""
  t0 = time.monotonic()
  report: dict[str, Any] = {'ok': {}, 'failed': {}, 'skipped': {}}
  if jax.process_count() > 1:
    for call in calls:
      report['skipped'][call.op] = 'multi-host run: each process would judge alone'
    return {**report, 'seconds': 0.0}
  with _lock:
    for call in dict.fromkeys(calls):  # first-seen order, each signature once
      if call.op not in RECIPES:
        report['skipped'][call.op] = 'no self-test recipe for this op'
        continue
      try:
        key = call.reduced()
        verdict = _checked.get(key)
        fresh = verdict is None
        if fresh:
          verdict = _checked[key] = check_call(call)
      except Exception as e:  # noqa: BLE001  (the check's own trouble must never stop a run)
        fresh, verdict = True, {'ok': True, 'call': call.describe(), 'max_rel_err': 0.0,
                                'skipped': f'the self-test could not run: {type(e).__name__}: {str(e)[:300]}'}
      if fresh:
        _log(verdict)
      if verdict.get('skipped'):
        report['skipped'].setdefault(call.op, verdict['skipped'])
      elif not verdict['ok']:
        report['failed'].setdefault(call.op, verdict['reason'])
      elif call.op not in report['failed']:
        report['ok'][call.op] = max(report['ok'].get(call.op, 0.0), verdict['max_rel_err'])
  for op in report['failed']:
    report['ok'].pop(op, None)
  return {**report, 'seconds': time.monotonic() - t0}


def _log(verdict: dict[str, Any]) -> None:
  if verdict.get('skipped'):
    logging.warning('Kernel self-test: %s not checked: %s', verdict['call'], verdict['skipped'])
  elif verdict['ok']:
    logging.info('Kernel self-test: %s agrees with the XLA op (worst relative RMS %.2g, %.1f s)',
                 verdict['call'], verdict['max_rel_err'], verdict['seconds'])
  else:
    logging.warning('Kernel self-test: %s', verdict['reason'])


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
  """One report for several compiled steps (a training step and its evaluation step)."""
  out: dict[str, Any] = {'ok': {}, 'failed': {}, 'skipped': {}, 'seconds': 0.0}
  for r in reports:
    for op, err in r.get('ok', {}).items():
      out['ok'][op] = max(out['ok'].get(op, 0.0), err)
    out['failed'].update(r.get('failed', {}))
    out['skipped'].update(r.get('skipped', {}))
    out['seconds'] += r.get('seconds', 0.0)
  for op in out['failed']:
    out['ok'].pop(op, None)
  return out


def forget() -> None:
  """Drops this process's verdicts (tests)."""
  with _lock:
    _checked.clear()
