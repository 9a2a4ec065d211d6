"""Chooses, per op and call, which implementation runs, and says so in the logs.

Order: an explicit `impl=` argument, then a forced default (`set_impl`, the `use_impl` context manager, or the
AIRA_JAX_OPS_IMPL environment variable), then a backend kernel registered for the target backend
(`jax.default_backend()`, or the one `lowering_for` / AIRA_JAX_OPS_TARGET names) whose `applies(...)` accepts the
arguments and which this process has not set aside after a failure (`set_aside`, used by aira_jax.ops.fallback),
then the XLA chunked implementation. Choices happen at trace time, so the log line appears once per op and path,
not once per step.

Backend kernels are imported lazily: the first choice made on a 'gpu' or 'tpu' backend imports
pallas_kernels.<op>.<backend> for every op in KERNEL_OPS, and each of those modules registers itself. Importing
them on first use keeps `import aira_jax.ops` free of Pallas/Mosaic imports on machines that never use them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import threading
from typing import Any, Callable

import jax
from absl import logging

from aira_jax.ops import selftest

IMPLS = ("auto", "kernel", "xla", "reference")
_local = threading.local()
_logged: set[tuple[str, str, str]] = set()


@dataclasses.dataclass(frozen=True)
class Kernel:
    fn: Callable[..., Any]
    applies: Callable[..., bool] | None = None  # None: always applies on its backend


_registry: dict[tuple[str, str], Kernel] = {}
_set_aside: dict[tuple[str, str], str] = {}  # (op, backend) -> why: kernels this process no longer chooses

KERNEL_OPS = ("delta_rule", "gated_delta_rule", "simple_gla")  # ops with pallas_kernels/<op>/<backend>.py
KERNEL_BACKENDS = ("gpu", "tpu")
_loaded_backends: set[str] = set()
_load_lock = threading.Lock()


def register_kernel(op: str, backend: str, fn: Callable[..., Any], applies: Callable[..., bool] | None = None):
    """Backend kernels (pallas_kernels/<op>/gpu.py, tpu.py) call this when imported."""
    _registry[(op, backend)] = Kernel(fn, applies)


def canonical_backend(name: str) -> str:
    """jax.default_backend() says 'gpu' for CUDA and ROCm; platform names 'cuda'/'rocm' map there too."""
    return "gpu" if name in ("cuda", "rocm") else name


def load_backend_kernels(backend: str) -> list[str]:
    """Imports pallas_kernels.<op>.<backend> once per backend; returns the modules that loaded this call.

    A kernel module that does not exist is skipped quietly (not every op has every backend). Any other import
    failure (a missing Mosaic binding, a bug) is logged as a WARNING with the error and that op falls back to
    XLA, so a broken kernel never takes the op down with it.
    """
    backend = canonical_backend(backend)
    if backend not in KERNEL_BACKENDS:
        return []
    with _load_lock:
        if backend in _loaded_backends:
            return []
        _loaded_backends.add(backend)
        loaded = []
        for op in KERNEL_OPS:
            module = f"pallas_kernels.{op}.{backend}"
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as e:
                if e.name != module:
                    logging.warning("aira_jax.ops: could not import %s (%s: %s); %s uses XLA", module,
                                    type(e).__name__, e, op)
                continue
            except Exception as e:  # noqa: BLE001  (any failure means: fall back to XLA, loudly)
                logging.warning("aira_jax.ops: could not import %s (%s: %s); %s uses XLA", module,
                                type(e).__name__, e, op)
                continue
            loaded.append(module)
        logging.info("aira_jax.ops: %s kernels loaded: %s", backend, ", ".join(loaded) or "none")
        return loaded


def preload_kernels() -> list[str]:
    """Imports the kernels of the backend ops will choose (target_backend(); initialises the backend) now rather
    than at the first op. Sandboxed children call it, through RuntimeGuard.install, before their guard goes up."""
    return load_backend_kernels(target_backend())


def set_aside(ops: "list[str] | tuple[str, ...] | set[str]", why: str, backend: str | None = None) -> dict[str, str]:
    """Stops choosing the kernels of `ops` on `backend` in this process (a compile failure): 'auto' then takes
    the XLA path and logs why. An explicit impl='kernel' still gets the kernel. Returns {'op@backend': why}."""
    backend = canonical_backend(backend) if backend else target_backend()
    for op in ops:
        _set_aside[(op, backend)] = why
    return {f"{op}@{backend}": why for op in ops}


def restore_kernels(ops: "list[str] | tuple[str, ...] | set[str]", backend: str | None = None) -> None:
    """Undoes `set_aside` (the failure turned out not to be the kernels')."""
    backend = canonical_backend(backend) if backend else target_backend()
    for op in ops:
        _set_aside.pop((op, backend), None)


def kernels_set_aside() -> dict[str, str]:
    """'op@backend' -> why, for the kernels set aside in this process."""
    return {f"{op}@{backend}": why for (op, backend), why in _set_aside.items()}


class KernelRecord(list):
    """The ops for which a backend kernel was chosen automatically while tracing (the list), each such call's
    signature in `calls` (for selftest), and, in `aside`, those whose kernel would have been chosen but is set
    aside in this process ({'op@backend': why})."""

    def __init__(self):
        super().__init__()
        self.calls: list[selftest.KernelCall] = []
        self.aside: dict[str, str] = {}


@contextlib.contextmanager
def record_kernels():
    """Yields a KernelRecord that collects the ops for which a backend kernel was chosen automatically ('auto')
    while tracing inside the block (what to set aside when the traced program then fails to compile) and the
    set-aside kernels that the block would otherwise have run."""
    stack = getattr(_local, "records", None)
    if stack is None:
        stack = _local.records = []
    chosen = KernelRecord()
    stack.append(chosen)
    try:
        yield chosen
    finally:
        stack[:] = [c for c in stack if c is not chosen]  # by identity: two records can hold equal lists


def _check(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"ops implementation must be one of {IMPLS}, got {impl!r}")
    return impl


def default_impl() -> str:
    forced = getattr(_local, "impl", None)
    if forced is not None:
        return forced
    value = os.environ.get("AIRA_JAX_OPS_IMPL", "auto").strip().lower() or "auto"
    if value not in IMPLS:
        raise ValueError(f"AIRA_JAX_OPS_IMPL={value!r}: choose one of {IMPLS} (or leave it unset)")
    return value


def check_environment() -> None:
    """Raises ValueError naming the variable when AIRA_JAX_OPS_IMPL or AIRA_JAX_OPS_TARGET is malformed (entry
    points call it once, rather than letting every op or training child fail on it)."""
    default_impl()
    _env_target()


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


TARGET_ENV = "AIRA_JAX_OPS_TARGET"


def _env_target() -> str | None:
    value = os.environ.get(TARGET_ENV, "").strip().lower()
    if not value:
        return None
    backend = canonical_backend(value)
    if backend not in KERNEL_BACKENDS + ("cpu",):
        raise ValueError(f"{TARGET_ENV}={value!r}: choose one of {KERNEL_BACKENDS + ('cpu',)} (or leave it unset)")
    return backend


def target_backend() -> str:
    """The backend whose kernels ops choose: jax.default_backend(), unless `lowering_for` or $AIRA_JAX_OPS_TARGET
    names another."""
    return lowering_target() or canonical_backend(jax.default_backend())


def lowering_target() -> str | None:
    """The backend named by an enclosing `lowering_for`, else by $AIRA_JAX_OPS_TARGET (a process-wide
    `lowering_for`, which sandboxed children inherit: it rehearses a GPU run's kernel choices on a CPU host, where
    each kernel then fails to compile and is set aside), or None."""
    return getattr(_local, "target", None) or _env_target()


@contextlib.contextmanager
def lowering_for(backend: str):
    """Choose the kernels of `backend` while tracing here, whatever this host runs: for exporting or cross-lowering
    a model for another platform, e.g. `with lowering_for("gpu"): jax.export.export(f, platforms=["cuda"])(...)`
    on a CPU host. Kernels that check the live device (the Hopper-only GPU kernels) assume the target has it."""
    backend = canonical_backend(backend)
    if backend not in KERNEL_BACKENDS + ("cpu",):
        raise ValueError(f"lowering_for: unknown backend {backend!r}; choose from {KERNEL_BACKENDS + ('cpu',)}")
    prev = getattr(_local, "target", None)
    _local.target = backend
    try:
        yield
    finally:
        _local.target = prev


def log_path(op: str, path: str, why: str) -> None:
    key = (op, path, why)
    if key not in _logged:
        _logged.add(key)
        logging.info("aira_jax.ops.%s: %s path (%s)", op, path, why)


def choose(op: str, impl: str | None, args: tuple, kwargs: dict) -> tuple[str, Kernel | None]:
    """Returns ('kernel', Kernel) | ('xla', None) | ('reference', None) and logs the choice once."""
    impl = _check(impl) if impl is not None else default_impl()
    backend = target_backend()
    if impl in ("xla", "reference"):
        log_path(op, impl, "forced")
        return impl, None
    load_backend_kernels(backend)
    kernel = _registry.get((op, backend))
    aside = _set_aside.get((op, backend)) if impl == "auto" else None
    if kernel is not None and aside is None and (kernel.applies is None or kernel.applies(*args, **kwargs)):
        log_path(op, f"{backend} kernel", "registered for this backend")
        if impl == "auto":
            for chosen in getattr(_local, "records", None) or ():
                chosen.append(op)
                chosen.calls.append(selftest.KernelCall.of(op, backend, args, kwargs, kernel.fn))
        return "kernel", kernel
    if aside is not None and kernel is not None and (kernel.applies is None or kernel.applies(*args, **kwargs)):
        for record in getattr(_local, "records", None) or ():
            record.aside[f"{op}@{backend}"] = aside
    if impl == "kernel":
        raise NotImplementedError(f"aira_jax.ops.{op}: no kernel for backend {backend!r} applies to these inputs")
    if aside is not None:
        why = f"the {backend} kernel was set aside: {aside}"
    elif kernel is None:
        why = "no kernel registered for " + backend
    else:
        why = "kernel does not apply to these shapes/dtypes"
    log_path(op, "xla", why)
    return "xla", None
