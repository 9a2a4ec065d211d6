"""Telling a Pallas kernel's run-time fault from the design's, and what the run has learned about its kernels.

A kernel can compile and still fail when it runs: wrong numbers (NaN, divergence), an illegal memory access (a
runtime error or the process dies), a deadlock (the first step never finishes). `kernel_suspect` says whether a
failed training run may be such a fault; the Engineer then trains the design once more with those kernels set
aside, and records what that found in the store as `KernelVerdict` rows, one per kernel:

  - FAULT: the run trained without the kernel. Every later training child on the same kind of device, with the
    same jax, jaxlib and aira-jax, sets the kernel aside from its start (it gets the XLA op instead).
  - CLEARED: the run failed the same way without it; the failure was the design's. A kernel cleared TRUST_AFTER
    times is trusted: later failures with it are not retried, so designs that diverge on their own do not train
    twice.

The store is where they live because every worker of a run shares it: the loop makes one Engineer per iteration,
`train_queue` one per thread, `--workers=N` one per process, and a resumed run new ones again; each of them must
know what any of them learned. A verdict is scoped (`scope`) to the device kind and the software that produced it:
on other hardware the op runs another kernel, and after an upgrade the kernel may have been mended.

    verdicts = KernelVerdicts(store.kernel_verdicts())
    child_request.set_aside_by_scope = verdicts.aside_by_scope()   # the child applies its own scope's
    verdicts.worth_retrying(outcome.kernel_scope, outcome.kernels)
Kept free of JAX imports (the Engineer's process never starts a backend).
"""
from __future__ import annotations

import functools
from importlib import metadata
from typing import Any, Iterable, Sequence

from aira_jax.discovery import failures as fl
from aira_jax.discovery.records import KERNEL_CLEARED, KERNEL_FAULT, KernelVerdict

FIRST_STEP = 'first step'  # Failure.diagnostics['stage'] of a run whose first train or eval step never finished
# Exceptions raised by running a compiled computation (not by tracing or compiling it).
RUNTIME_ERRORS = ('JaxRuntimeError', 'XlaRuntimeError')
# A kernel that the retry has cleared this many times (the run failed the same way without it) is trusted: later
# failures with it are not retried, so designs that diverge on their own do not train twice.
TRUST_AFTER = 2
_SOFTWARE = ('jax', 'jaxlib', 'aira-jax')


def kernel_suspect(failure: fl.Failure, kernels: list[str], error: dict[str, Any] | None) -> bool:
  """Whether a failure may be a Pallas kernel's rather than the design's: kernels ran, and the run failed the
  way a faulty kernel fails it: a NaN or a divergence (wrong numbers), an error raised while running the
  compiled step, a crash in native code (an illegal memory access takes the process down), or a first training
  or evaluation step that never finished (a hang). A failure while tracing or compiling is not (compile failures
  already fall back in the trainer), nor OOM, policy or a timeout later in the run, which a slow design explains
  as well."""
  if not kernels:
    return False
  if failure.kind in (fl.NAN, fl.DIVERGENCE):
    return True
  if failure.kind == fl.TIMEOUT:  # only a first step that never finished: a kernel that hangs
    return failure.diagnostics.get('stage') == FIRST_STEP
  if failure.kind != fl.CRASH:
    return False
  return error is None or error.get('exc_type') in RUNTIME_ERRORS


@functools.cache
def _software() -> str:
  def version(dist: str) -> str:
    try:
      return metadata.version(dist)
    except metadata.PackageNotFoundError:
      return 'not installed'
  return ', '.join(f'{d} {version(d)}' for d in _SOFTWARE)


def scope(device_kind: str) -> str:
  """Where a kernel verdict holds: the device kind (jax.Device.device_kind) and the installed jax, jaxlib and
  aira-jax. The training child reports its own; the Engineer's process runs the same Python, so it agrees."""
  return f'{device_kind} ({_software()})'


class KernelVerdicts:
  """The store's kernel verdicts, summarised: kernels to set aside and clearance counts, per scope."""

  def __init__(self, verdicts: Sequence[KernelVerdict] = ()):
    self._aside: dict[str, dict[str, str]] = {}
    self._cleared: dict[str, dict[str, int]] = {}
    for v in verdicts:
      if v.verdict == KERNEL_FAULT:
        self._aside.setdefault(v.scope, {})[v.op] = v.reason
      elif v.verdict == KERNEL_CLEARED:
        counts = self._cleared.setdefault(v.scope, {})
        counts[v.op] = counts.get(v.op, 0) + 1

  def aside_by_scope(self) -> dict[str, dict[str, str]]:
    """scope -> {op: why}: the kernels a training child in that scope must set aside."""
    return {s: dict(ops) for s, ops in self._aside.items()}

  def cleared(self, scope_: str) -> dict[str, int]:
    return dict(self._cleared.get(scope_, {}))

  def trusted(self, scope_: str) -> list[str]:
    return sorted(op for op, n in self._cleared.get(scope_, {}).items() if n >= TRUST_AFTER)

  def worth_retrying(self, scope_: str, kernels: Iterable[str]) -> bool:
    """Whether a suspect failure with these kernels is retried: one of them is not trusted yet in this scope."""
    trusted = set(self.trusted(scope_))
    return any(op not in trusted for op in kernels)
