"""Shared helpers for chunked linear-recurrence kernels: padding, chunk layout, matmul precision."""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

f32 = jnp.float32


def grid_cost(step, blocks, *, steps: int, operands, outputs) -> pl.CostEstimate:
    """The `pl.CostEstimate` of a pallas_call whose grid runs `step(*blocks)` (one grid step on loaded values,
    blocks as ShapeDtypeStructs; None for an absent operand) `steps` times and touches every element of its
    operands and outputs once (each block visited once; a block held across the sequential axis is read once).

    FLOPs and transcendentals are counted on the traced step (aira_jax.ops.jaxpr_cost), so they follow the kernel
    body as it is written. XLA's TPU scheduler uses the estimate to overlap the kernel with other work (FSDP
    all-gathers, the next layer's projections); without one it has to guess the kernel's cost.
    """
    from aira_jax.ops.jaxpr_cost import count_jaxpr  # pylint: disable=import-outside-toplevel  (ops imports us)
    cost = count_jaxpr(jax.make_jaxpr(step)(*blocks))
    nbytes = sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves((operands, outputs)))
    return pl.CostEstimate(flops=int(cost.flops * steps), transcendentals=int(cost.transcendentals * steps),
                           bytes_accessed=int(nbytes))


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


def kernel_head_dim(d: int, dims=(64, 128, 256)) -> int | None:
    """The smallest head dim in `dims` that holds `d` (None when none does).

    Zero-padding the key and value dims is exact for every recurrence here: padded key dims are zero in q and k,
    so inner products, the state's real block and every output are unchanged, and the padded state rows and
    columns stay zero (the padded output columns and state entries are sliced off). So a kernel tiled for 64
    also serves head dim 32 (ASI-Arch's exploration-scale DeltaNet: d_model 256, 8 heads), at the cost of
    computing on zeros.
    """
    fits = [x for x in sorted(dims) if x >= d]
    return fits[0] if fits else None


def pad_last(x: jax.Array, size: int) -> jax.Array:
    """Zero-pads the last axis up to `size`."""
    extra = size - x.shape[-1]
    if extra == 0:
        return x
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)])


def pad_state(s: jax.Array, dk: int, dv: int) -> jax.Array:
    """Zero-pads a state [..., Dk, Dv] up to [..., dk, dv] (no op when it already is)."""
    if s.shape[-2:] == (dk, dv):
        return s
    return jnp.pad(s, [(0, 0)] * (s.ndim - 2) + [(0, dk - s.shape[-2]), (0, dv - s.shape[-1])])


def strided_gpu_io() -> bool:
    """Whether the Mosaic GPU kernels read and write the op layout [B, T, H, D] in place (strided TMA windows;
    the default). AIRA_GPU_STRIDED_TMA=0 makes them see heads as batch rows instead (call_heads_as_batch): a
    transpose copy in and out, the layout the kernels had before, for a machine whose TMA rejects the strides."""
    return os.environ.get("AIRA_GPU_STRIDED_TMA", "1") != "0"


def call_heads_as_batch(fn, q, k, v, vecs, *, initial_state=None, output_final_state=False, **kwargs):
    """fn(q, k, v, *vecs, ...) on heads moved into the batch ([B, T, H, ...] -> [B*H, T, 1, ...]; states
    [B, H, Dk, Dv] -> [B*H, 1, Dk, Dv]), with the results moved back. Exact: the heads are independent."""
    b, t, h = q.shape[:3]

    def rows(x):
        return None if x is None else jnp.swapaxes(x, 1, 2).reshape(b * h, t, 1, *x.shape[3:])

    s0 = None if initial_state is None else initial_state.reshape(b * h, 1, *initial_state.shape[2:])
    out = fn(rows(q), rows(k), rows(v), *map(rows, vecs), initial_state=s0, output_final_state=output_final_state,
             **kwargs)
    o, s = out if output_final_state else (out, None)
    o = jnp.swapaxes(o.reshape(b, h, t, o.shape[-1]), 1, 2)
    return (o, s.reshape(b, h, *s.shape[2:])) if output_final_state else o


def check_state(name: str, state, q, v) -> None:
    if state is None:
        return
    want = (q.shape[0], q.shape[2], q.shape[3], v.shape[3])
    if tuple(state.shape) != want:
        raise ValueError(f"{name}: initial_state must be [batch, heads, dk, dv] = {want}; got {tuple(state.shape)}")


@jax.custom_vjp
def unit_lower_inverse(a: jax.Array) -> jax.Array:
    """(I + A)^-1 for strictly lower-triangular A [..., C, C] (C a power of two, or <= 16), in float32.

    jax.scipy.linalg.solve_triangular is slow on CPU for many small matrices and slower still in its gradient, so
    this inverts 16x16 diagonal blocks by forward substitution and merges pairs of blocks with
    [[T11, 0], [T21, T22]], T21 = -T22 A21 T11 (16 -> 32 -> 64). The gradient is matmuls only (below).
    """
    return _unit_lower_inverse(a)


def _unit_lower_inverse(a):
    c = a.shape[-1]
    b = min(16, c)
    if c % b or (c // b) & (c // b - 1):
        raise ValueError(f"chunk size must be <= 16 or a power of two, got {c}")
    hi = lax.Precision.HIGHEST
    nb = c // b
    diag = jnp.stack([a[..., i * b:(i + 1) * b, i * b:(i + 1) * b] for i in range(nb)], axis=-3)
    t = jnp.broadcast_to(jnp.eye(b, dtype=a.dtype), diag.shape)
    for i in range(1, b):  # row i of (I + A)^-1 = e_i - A[i, :] @ T (rows >= i of T are still identity rows)
        row = -jnp.einsum("...j,...jk->...k", diag[..., i, :], t, precision=hi)
        t = t.at[..., i, :].set(row.at[..., i].add(1.0))
    s = b
    while s < c:
        merged = []
        for p in range(t.shape[-3] // 2):
            t11, t22 = t[..., 2 * p, :, :], t[..., 2 * p + 1, :, :]
            r0 = 2 * p * s
            a21 = a[..., r0 + s:r0 + 2 * s, r0:r0 + s]
            t21 = -jnp.einsum("...ij,...jk,...kl->...il", t22, a21, t11, precision=hi)
            top = jnp.concatenate([t11, jnp.zeros_like(t11)], axis=-1)
            bottom = jnp.concatenate([t21, t22], axis=-1)
            merged.append(jnp.concatenate([top, bottom], axis=-2))
        t = jnp.stack(merged, axis=-3)
        s *= 2
    return t[..., 0, :, :]


def _uli_fwd(a):
    t = _unit_lower_inverse(a)
    return t, t


def _uli_bwd(t, g):
    # T = (I + A)^-1  =>  dT = -T dA T  =>  dL/dA = -T^T G T^T, restricted to A's strictly lower part.
    hi = lax.Precision.HIGHEST
    tt = jnp.swapaxes(t, -1, -2)
    grad = -jnp.einsum("...ij,...jk,...kl->...il", tt, g, tt, precision=hi)
    c = t.shape[-1]
    return (jnp.where(jnp.tril(jnp.ones((c, c), bool), -1), grad, 0.0),)


unit_lower_inverse.defvjp(_uli_fwd, _uli_bwd)


def is_hopper() -> bool:
    """Whether the kernels' GPU is a Hopper (sm_90: H100/H200), the only one with wgmma (Blackwell has tcgen05).

    Under aira_jax.ops.dispatch.lowering_for("gpu") (cross-lowering from another host) the target is assumed to be.
    """
    from aira_jax.ops import dispatch  # here, not at import: pallas_kernels stays importable without aira_jax.ops
    if dispatch.lowering_target() == "gpu":
        return True
    cc = getattr(jax.devices()[0], "compute_capability", None)  # "9.0" on H100/H200
    return cc is not None and str(cc).split(".")[0] == "9"
