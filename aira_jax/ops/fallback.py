"""Compiling a step whose ops chose Pallas kernels, with the XLA ops as the way out when a kernel fails.

A backend kernel can fail to lower or compile where no test reached it: another GPU generation, a newer Mosaic,
a shape no one tried. Left alone, that failure stops the run, and in a discovery run it would stop every design
that uses the op. Instead the kernels chosen while tracing the step are set aside for this process (a WARNING
names them and the error), the step is rebuilt and compiled with the XLA ops, and the run records what happened
(`ops` in its summary). If the XLA build fails too, the failure is not the kernels': they are restored and the
first error is raised unchanged. An explicit impl='kernel' (or AIRA_JAX_OPS_IMPL=kernel) never falls back.

A kernel can also compile and compute the wrong numbers. By default `compile_step` then checks each kernel call
of the step against the XLA op on random inputs, once per process and call signature (aira_jax.ops.selftest),
and sets aside a kernel that disagrees. `compile_checked` (the trainer's check_kernels, off by default) also runs
one forward and backward of the whole model with the kernels and with the XLA ops on the same inputs and sets
the kernels aside when the loss or any parameter's gradient disagrees beyond what the precision explains.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from aira_jax.ops import dispatch, selftest

ERROR_CHARS = 600
# Kernel vs XLA on one forward+backward: relative loss difference, and the relative RMS difference of each
# parameter's gradient. Two correct bf16 implementations differ by ~1e-2 at most; a wrong kernel by O(1).
TOLERANCE = {'low': {'loss': 2e-2, 'grad': 0.2}, 'float32': {'loss': 1e-3, 'grad': 5e-2}}
TINY_GRAD_FRACTION = 1e-4  # leaves whose gradient is this small against the largest are not compared


def _brief(error: BaseException) -> str:
  text = f'{type(error).__name__}: {error}'.strip()
  return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS - 3] + '...'


def compile_step(build: Callable[[], Any], compile_fn: Callable[[Any], Any], *, self_test: bool = True,
                 on_self_test: Callable[[list[str]], None] | None = None) -> tuple[Any, Any, dict[str, Any]]:
  """`build()` makes the jitted step; `compile_fn(step)` lowers and compiles it. Returns (step, compiled, ops):
  ops = {'kernels': ops that run a backend kernel, 'set_aside': {op@backend: why} or absent, 'self_test': the
  selftest report when kernel calls were checked}. With `self_test`, each kernel call signature of the step is
  checked against the XLA op once per process (`on_self_test(kernels)` is told first); kernels that fail are set
  aside and the step is compiled again."""
  step = build()
  with dispatch.record_kernels() as chosen:
    try:
      compiled = compile_fn(step)
    except Exception as error:  # noqa: BLE001  (only kernels chosen here are retried; anything else re-raises)
      if not chosen:
        raise
      first = error
    else:
      first = None
  if first is not None:
    return _compile_with_xla(build, compile_fn, chosen, first)
  ops: dict[str, Any] = {'kernels': sorted(set(chosen))}
  if chosen.aside:  # set aside earlier in this process (a compile or runtime failure): these ran on XLA
    ops['set_aside'] = dict(chosen.aside)
  if not self_test or not chosen.calls:
    return step, compiled, ops
  if on_self_test is not None:
    on_self_test(ops['kernels'])
  report = selftest.check_calls(chosen.calls)
  ops['self_test'] = report
  if not report['failed']:
    return step, compiled, ops
  for op, reason in sorted(report['failed'].items()):
    dispatch.set_aside([op], f'self-test: {reason}')
  jax.clear_caches()
  logging.warning('Pallas kernel(s) %s failed the self-test against the XLA ops; setting them aside for this process '
                  'and compiling with the XLA ops instead', ', '.join(sorted(report['failed'])))
  step, compiled, again = compile_step(build, compile_fn, self_test=self_test)
  return step, compiled, {**again, 'self_test': report}


def _compile_with_xla(build: Callable[[], Any], compile_fn: Callable[[Any], Any], chosen: dispatch.KernelRecord,
                      first: BaseException) -> tuple[Any, Any, dict[str, Any]]:
  """The step failed to compile after kernels were chosen: sets them aside and compiles with the XLA ops; if that
  fails too, the kernels are restored and the first error raised."""
  kernels = sorted(set(chosen))
  why = _brief(first)
  logging.warning('Pallas kernel(s) %s failed to compile (%s); setting them aside for this process and '
                  'compiling with the XLA ops instead', ', '.join(kernels), why)
  aside = _set_aside(kernels, why)
  try:
    step = build()
    compiled = compile_fn(step)
  except Exception:  # noqa: BLE001
    dispatch.restore_kernels(kernels)
    logging.warning('The XLA build failed as well: the error is not the kernels\'; they are restored')
    raise first from None
  logging.warning('Compiled with the XLA ops for %s (kernels set aside)', ', '.join(kernels))
  return step, compiled, {'kernels': [], 'set_aside': {**chosen.aside, **aside}}  # with earlier set-asides it met


def _set_aside(kernels: list[str], why: str) -> dict[str, str]:
  aside = dispatch.set_aside(kernels, why)
  jax.clear_caches()  # traces are cached by function: without this a rebuilt jit could reuse the kernel's trace
  return aside


@dataclasses.dataclass(frozen=True)
class FirstRunWatch:
  """What a step compiled at its first call tells a watcher (the trainer's metrics, the training child's events),
  so that a kernel that hangs is told from a slow compile: `self_test(kernels)` before the kernel self-test runs
  kernels, `compiled(ops, seconds)` once compiled (self-test included) and about to run, `first_run(seconds)` once
  that first run has finished."""
  self_test: Callable[[list[str]], None] | None = None
  compiled: Callable[[dict[str, Any], float], None] | None = None
  first_run: Callable[[float], None] | None = None


class CompileOnFirstCall:
  """A jitted step built by `build()` and compiled, through compile_step, for the arguments of its first call;
  later calls must bring the same shapes and shardings (an evaluation step over equal batches). `.ops` says which
  kernels it runs or set aside (None before the first call). With a `watch`, the first call also waits for its
  result, to report when it finished."""

  def __init__(self, build: Callable[[], Any], *, self_test: bool = True, watch: FirstRunWatch | None = None):
    self._build = build
    self._self_test = self_test
    self._watch = watch or FirstRunWatch()
    self._compiled = None
    self.ops: dict[str, Any] | None = None

  def __call__(self, *args):
    if self._compiled is not None:
      return self._compiled(*args)
    watch, t0 = self._watch, time.time()
    _, self._compiled, self.ops = compile_step(self._build, lambda step: step.lower(*args).compile(),
                                               self_test=self._self_test, on_self_test=watch.self_test)
    if watch.compiled is not None:
      watch.compiled(self.ops, time.time() - t0)
    t1 = time.time()
    out = self._compiled(*args)
    if watch.first_run is not None:
      jax.block_until_ready(out)
      watch.first_run(time.time() - t1)
    return out


def merge_ops(*infos: dict[str, Any] | None) -> dict[str, Any]:
  """One `ops` record for several compiled steps: kernels any of them runs, and every kernel set aside."""
  kernels: set[str] = set()
  aside: dict[str, str] = {}
  for info in infos:
    if info:
      kernels.update(info.get('kernels') or ())
      aside.update(info.get('set_aside') or {})
  out: dict[str, Any] = {'kernels': sorted(k for k in kernels if not any(a.split('@')[0] == k for a in aside))}
  if aside:
    out['set_aside'] = aside
  for info in infos:
    if info and 'check' in info:
      out['check'] = info['check']
  tests = [info['self_test'] for info in infos if info and info.get('self_test')]
  if tests:
    out['self_test'] = selftest.merge_reports(tests)
  return out


def _path(key_path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in key_path)


def compare_with_xla(make_fn: Callable[[], Callable], args: tuple, *, precision: str = 'low') -> dict[str, Any]:
  """Runs make_fn()(*args) -> (loss, grads) with the current op choices and again with the XLA ops, and
  compares: {'ok', 'loss_kernel', 'loss_xla', 'loss_rel_err', 'grad_rel_rms_max', 'worst', 'reason'}."""
  tol = TOLERANCE[precision]
  loss_k, grads_k = jax.jit(make_fn())(*args)
  with dispatch.use_impl('xla'):
    loss_x, grads_x = jax.jit(make_fn())(*args)
  loss_k, loss_x = float(loss_k), float(loss_x)
  # Per leaf: |g_xla| and |g_kernel - g_xla|, in one compiled pass and one transfer.
  def leaf_stats(k, x):
    k, x = jnp.ravel(k).astype(jnp.float32), jnp.ravel(x).astype(jnp.float32)
    return jnp.stack([jnp.linalg.norm(x), jnp.linalg.norm(k - x)])
  stats = jax.device_get(jax.jit(lambda a, b: jax.tree.map(leaf_stats, a, b))(grads_k, grads_x))
  flat = [(path, float(v[0]), float(v[1])) for path, v in jax.tree_util.tree_flatten_with_path(stats)[0]]
  biggest = max((norm for _, norm, _ in flat), default=0.0)
  worst, worst_err = '', 0.0
  finite = math.isfinite(loss_k) and math.isfinite(loss_x)
  for path, norm, diff in flat:
    if not (math.isfinite(diff) and math.isfinite(norm)):
      finite, worst, worst_err = False, _path(path), math.inf
      break
    if norm <= TINY_GRAD_FRACTION * biggest:
      continue
    err = diff / norm
    if err > worst_err:
      worst, worst_err = _path(path), err
  loss_err = abs(loss_k - loss_x) / max(abs(loss_x), 1e-6)
  reasons = []
  if not finite:
    reasons.append(f'non-finite values (loss {loss_k} vs {loss_x}; {worst or "-"})')
  if loss_err > tol['loss']:
    reasons.append(f'loss {loss_k:.6g} vs {loss_x:.6g} with the XLA ops (relative {loss_err:.2e} > {tol["loss"]:g})')
  if finite and worst_err > tol['grad']:
    reasons.append(f'gradient of {worst} differs by relative RMS {worst_err:.2e} > {tol["grad"]:g}')
  return {'ok': not reasons, 'loss_kernel': loss_k, 'loss_xla': loss_x, 'loss_rel_err': loss_err,
          'grad_rel_rms_max': worst_err, 'worst': worst, 'reason': '; '.join(reasons), 'precision': precision}


def compile_checked(build: Callable[[], Any], compile_fn: Callable[[Any], Any],
                    check: Callable[[], dict[str, Any]] | None = None, *, self_test: bool = True,
                    on_self_test: Callable[[list[str]], None] | None = None) -> tuple[Any, Any, dict[str, Any]]:
  """compile_step (its per-op self-test as asked), then (when `check` is given and kernels were chosen)
  `check()` -> compare_with_xla's dict; a failed check sets the kernels aside and compiles again with the XLA
  ops. ops gains 'check'."""
  step, compiled, ops = compile_step(build, compile_fn, self_test=self_test, on_self_test=on_self_test)
  if check is None or not ops['kernels']:
    return step, compiled, ops
  result = check()
  if result['ok']:
    logging.info('Pallas kernel(s) %s agree with the XLA ops (loss rel. %.1e, worst gradient rel. RMS %.1e)',
                 ', '.join(ops['kernels']), result['loss_rel_err'], result['grad_rel_rms_max'])
    return step, compiled, {**ops, 'check': result}
  kernels = ops['kernels']
  why = f"numerics: {result['reason']}"
  logging.warning('Pallas kernel(s) %s disagree with the XLA ops (%s); setting them aside for this process',
                  ', '.join(kernels), result['reason'])
  aside = _set_aside(kernels, why)
  step, compiled, again = compile_step(build, compile_fn)
  return step, compiled, {**again, 'set_aside': {**again.get('set_aside', {}), **aside}, 'check': result}


def random_tokens(shape: tuple[int, int], vocab_size: int, sharding: Any = None, seed: int = 0) -> jax.Array:
  """Token ids for a check (uniform over the vocabulary), placed with `sharding`."""
  tokens = np.random.default_rng(seed).integers(0, vocab_size, size=shape, dtype=np.int32)
  return jax.device_put(tokens, sharding) if sharding is not None else jnp.asarray(tokens)
