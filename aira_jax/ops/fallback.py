"""Compiling a step whose ops chose Pallas kernels, with the XLA ops as the way out when a kernel fails.

A backend kernel can fail to lower or compile where no test reached it: another GPU generation, a newer Mosaic,
a shape no one tried. Left alone, that failure stops the run, and in a discovery run it would stop every design
that uses the op. Instead the kernels chosen while tracing the step are set aside for this process (a WARNING
names them and the error), the step is rebuilt and compiled with the XLA ops, and the run records what happened
(`ops` in its summary). If the XLA build fails too, the failure is not the kernels': they are restored and the
first error is raised unchanged. An explicit impl='kernel' (or AIRA_JAX_OPS_IMPL=kernel) never falls back.
"""
from __future__ import annotations

from typing import Any, Callable

from absl import logging
import jax

from aira_jax.ops import dispatch

ERROR_CHARS = 600


def _brief(error: BaseException) -> str:
  text = f'{type(error).__name__}: {error}'.strip()
  return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS - 3] + '...'


def compile_step(build: Callable[[], Any], compile_fn: Callable[[Any], Any]) -> tuple[Any, Any, dict[str, Any]]:
  """`build()` makes the jitted step; `compile_fn(step)` lowers and compiles it. Returns (step, compiled, ops):
  ops = {'kernels': ops that run a backend kernel, 'set_aside': {op@backend: error} or absent}."""
  step = build()
  with dispatch.record_kernels() as chosen:
    try:
      compiled = compile_fn(step)
    except Exception as error:  # noqa: BLE001  (only kernels chosen here are retried; anything else re-raises)
      if not chosen:
        raise
      first = error
    else:
      return step, compiled, {'kernels': sorted(set(chosen))}
  kernels = sorted(set(chosen))
  why = _brief(first)
  logging.warning('Pallas kernel(s) %s failed to compile (%s); setting them aside for this process and '
                  'compiling with the XLA ops instead', ', '.join(kernels), why)
  dispatch.set_aside(kernels, why)
  jax.clear_caches()  # traces are cached by function: without this a rebuilt jit could reuse the kernel's trace
  try:
    step = build()
    compiled = compile_fn(step)
  except Exception:  # noqa: BLE001
    dispatch.restore_kernels(kernels)
    logging.warning('The XLA build failed as well: the error is not the kernels\'; they are restored')
    raise first from None
  logging.warning('Compiled with the XLA ops for %s (kernels set aside)', ', '.join(kernels))
  return step, compiled, {'kernels': [], 'set_aside': {k: why for k in dispatch.kernels_set_aside()
                                                       if k.split('@')[0] in kernels}}
