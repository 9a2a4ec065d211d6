"""Telling a Pallas kernel's run-time fault from the design's, and what a process has learned about its kernels.

A kernel can compile and still fail when it runs: wrong numbers (NaN, divergence), an illegal memory access (a
runtime error or the process dies), a deadlock (the first step never finishes). `kernel_suspect` says whether a
failed training run may be such a fault; the Engineer then trains the design once more with those kernels set
aside. `KernelVerdicts` keeps the outcome for every Engineer of the process: the loop makes one Engineer per
iteration and `train_queue` one per thread, so what one of them learns must outlive it.

    verdicts = KernelVerdicts()
    verdicts.blame({'delta_rule': 'runtime failure in experiment 7 (nan: ...)'})   # later children set it aside
    verdicts.clear(['simple_gla'])                  # failed the same way without it; trusted after TRUST_AFTER
Kept free of JAX imports (the Engineer's process never starts a backend).
"""
from __future__ import annotations

import threading
from typing import Any, Iterable

from aira_jax.discovery import failures as fl

FIRST_STEP = 'first step'  # Failure.diagnostics['stage'] of a run whose first step never finished
# Exceptions raised by running a compiled computation (not by tracing or compiling it).
RUNTIME_ERRORS = ('JaxRuntimeError', 'XlaRuntimeError')
# A kernel that the retry has cleared this many times (the run failed the same way without it) is trusted: later
# failures with it are not retried, so designs that diverge on their own do not train twice.
TRUST_AFTER = 2


def kernel_suspect(failure: fl.Failure, kernels: list[str], error: dict[str, Any] | None) -> bool:
  """Whether a failure may be a Pallas kernel's rather than the design's: kernels ran, and the run failed the
  way a faulty kernel fails it: a NaN or a divergence (wrong numbers), an error raised while running the
  compiled step, a crash in native code (an illegal memory access takes the process down), or a first step that
  never finished (a hang). A failure while tracing or compiling is not (compile failures already fall back in the
  trainer), nor OOM, policy or a timeout later in the run, which a slow design explains as well."""
  if not kernels:
    return False
  if failure.kind in (fl.NAN, fl.DIVERGENCE):
    return True
  if failure.kind == fl.TIMEOUT:  # only a first step that never finished: a kernel that hangs
    return failure.diagnostics.get('stage') == FIRST_STEP
  if failure.kind != fl.CRASH:
    return False
  return error is None or error.get('exc_type') in RUNTIME_ERRORS


class KernelVerdicts:
  """Kernels blamed for a run-time failure (op -> why; every later training child sets them aside) and how often
  each kernel was cleared. Thread-safe: train_queue's Engineers share one."""

  def __init__(self):
    self._lock = threading.Lock()
    self._aside: dict[str, str] = {}
    self._cleared: dict[str, int] = {}

  def blamed(self) -> dict[str, str]:
    """op -> why, for the kernels this process's training children must set aside."""
    with self._lock:
      return dict(self._aside)

  def cleared(self) -> dict[str, int]:
    with self._lock:
      return dict(self._cleared)

  def worth_retrying(self, kernels: Iterable[str]) -> bool:
    """Whether a suspect failure with these kernels is retried: one of them is not trusted yet."""
    with self._lock:
      return any(self._cleared.get(op, 0) < TRUST_AFTER for op in kernels)

  def blame(self, aside: dict[str, str]) -> None:
    with self._lock:
      self._aside.update(aside)

  def clear(self, kernels: Iterable[str]) -> list[str]:
    """Counts one clearance for each kernel; returns those that have just become trusted."""
    trusted = []
    with self._lock:
      for op in kernels:
        self._cleared[op] = self._cleared.get(op, 0) + 1
        if self._cleared[op] == TRUST_AFTER:
          trusted.append(op)
    return trusted


# The process's verdicts: what every Engineer uses unless it is given its own (tests do).
PROCESS_VERDICTS = KernelVerdicts()
