"""Shared helpers for chunked linear-recurrence kernels: padding, chunk layout, matmul precision."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

f32 = jnp.float32


def pad_time(x: jax.Array, multiple: int) -> jax.Array:
    """Zero-pads axis 1 (time) up to a multiple of `multiple`.

    Zero padding at the end is exact for every recurrence here: padded steps have k = 0, v = 0, beta = 0 and a
    log-decay of 0, so they neither change earlier outputs nor the carried state.
    """
    t = x.shape[1]
    extra = (-t) % multiple
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, extra)
    return jnp.pad(x, widths)


def to_chunks(x: jax.Array, chunk: int) -> jax.Array:
    """[B, T, H, ...] -> [B, H, N, C, ...] with T = N * C."""
    b, t, h = x.shape[:3]
    x = x.reshape(b, t // chunk, chunk, h, *x.shape[3:])
    return jnp.moveaxis(x, 3, 1)


def from_chunks(x: jax.Array) -> jax.Array:
    """[B, H, N, C, ...] -> [B, N * C, H, ...]."""
    b, h, n, c = x.shape[:4]
    x = jnp.moveaxis(x, 1, 3)
    return x.reshape(b, n * c, h, *x.shape[4:])


def precision_for(dtype) -> lax.Precision:
    """fp32 inputs get true fp32 matmuls (no TF32/bf16 passes), so the chunked form matches its oracle to ~1e-6."""
    return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else lax.Precision.DEFAULT


def mm(spec: str, a: jax.Array, b: jax.Array, precision: lax.Precision) -> jax.Array:
    """einsum with float32 accumulation."""
    return jnp.einsum(spec, a, b, precision=precision, preferred_element_type=f32)


def default_scale(q: jax.Array, scale: float | None) -> float:
    return q.shape[-1] ** -0.5 if scale is None else scale


def check_qkv(name: str, q, k, v, *per_head) -> None:
    """Shape checks with messages that name the op and the offending tensor."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"{name}: q, k, v must be [batch, time, heads, dim]; got {q.shape}, {k.shape}, {v.shape}")
    if q.shape != k.shape:
        raise ValueError(f"{name}: q and k must have the same shape; got {q.shape} and {k.shape}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"{name}: v must share [batch, time, heads] with q; got {v.shape} vs {q.shape}")
    for arr_name, arr in per_head:
        if arr.shape != q.shape[:3]:
            raise ValueError(f"{name}: {arr_name} must be [batch, time, heads] = {q.shape[:3]}; got {arr.shape}")


def check_state(name: str, state, q, v) -> None:
    if state is None:
        return
    want = (q.shape[0], q.shape[2], q.shape[3], v.shape[3])
    if tuple(state.shape) != want:
        raise ValueError(f"{name}: initial_state must be [batch, heads, dk, dv] = {want}; got {tuple(state.shape)}")
