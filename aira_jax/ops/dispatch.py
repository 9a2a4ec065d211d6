"""Chooses, per op and call, which implementation runs, and says so in the logs.

Order: an explicit `impl=` argument, then a forced default (`set_impl`, the `use_impl` context manager, or the
AIRA_JAX_OPS_IMPL environment variable), then a backend kernel registered for `jax.default_backend()` whose
`applies(...)` accepts the arguments, then the XLA chunked implementation. Choices happen at trace time, so the
log line appears once per op and path, not once per step.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from typing import Any, Callable

import jax
from absl import logging

IMPLS = ("auto", "kernel", "xla", "reference")
_local = threading.local()
_logged: set[tuple[str, str, str]] = set()


@dataclasses.dataclass(frozen=True)
class Kernel:
    fn: Callable[..., Any]
    applies: Callable[..., bool] | None = None  # None: always applies on its backend


_registry: dict[tuple[str, str], Kernel] = {}


def register_kernel(op: str, backend: str, fn: Callable[..., Any], applies: Callable[..., bool] | None = None):
    """Backend kernels (pallas_kernels/<op>/gpu.py, tpu.py) call this when imported."""
    _registry[(op, backend)] = Kernel(fn, applies)


def _check(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"ops implementation must be one of {IMPLS}, got {impl!r}")
    return impl


def default_impl() -> str:
    forced = getattr(_local, "impl", None)
    if forced is not None:
        return forced
    return _check(os.environ.get("AIRA_JAX_OPS_IMPL", "auto").strip().lower() or "auto")


def set_impl(impl: str | None) -> None:
    """Forces an implementation for this thread ('xla' forces the XLA reference); None restores 'auto'."""
    _local.impl = None if impl is None else _check(impl)


@contextlib.contextmanager
def use_impl(impl: str):
    prev = getattr(_local, "impl", None)
    set_impl(impl)
    try:
        yield
    finally:
        _local.impl = prev


def log_path(op: str, path: str, why: str) -> None:
    key = (op, path, why)
    if key not in _logged:
        _logged.add(key)
        logging.info("aira_jax.ops.%s: %s path (%s)", op, path, why)


def choose(op: str, impl: str | None, args: tuple, kwargs: dict) -> tuple[str, Kernel | None]:
    """Returns ('kernel', Kernel) | ('xla', None) | ('reference', None) and logs the choice once."""
    impl = _check(impl) if impl is not None else default_impl()
    backend = jax.default_backend()
    if impl in ("xla", "reference"):
        log_path(op, impl, "forced")
        return impl, None
    kernel = _registry.get((op, backend))
    if kernel is not None and (kernel.applies is None or kernel.applies(*args, **kwargs)):
        log_path(op, f"{backend} kernel", "registered for this backend")
        return "kernel", kernel
    if impl == "kernel":
        raise NotImplementedError(f"aira_jax.ops.{op}: no kernel for backend {backend!r} applies to these inputs")
    why = "no kernel registered for " + backend if kernel is None else "kernel does not apply to these shapes/dtypes"
    log_path(op, "xla", why)
    return "xla", None
