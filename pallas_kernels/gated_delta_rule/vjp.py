"""custom_vjp wiring shared by the TPU and GPU kernels of the (gated) delta rule.

A backend supplies two functions on time-padded arrays in the op layout (q, k [B,Tp,H,Dk], v [B,Tp,H,Dv],
g (or None) and beta fp32 [B,Tp,H], state fp32 [B,H,Dk,Dv]):

    forward(q, k, v, g, beta, s0, *, save_states) -> (o [B,Tp,H,Dv] in v's dtype, s_final, states | None)
        states [B*H, N, Dk, Dv] fp32: the state at the start of every chunk (saved for the backward)
    backward(q, k, v, g, beta, states, do, ds_final) -> (dq, dk, dv, dg | None, dbeta, ds0)

The forward pass under differentiation saves the per-chunk start states instead of recomputing them: one
fp32 [Dk, Dv] write per chunk is cheaper than a second sequential pass, and it lets the backward kernel run
the reverse recurrence of dS over chunks in one sweep that also emits every per-chunk gradient. Padding and
dtype casts happen outside the custom_vjp, so autodiff handles them.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from pallas_kernels import common
from pallas_kernels.common import f32

SUPPORTED_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))


@dataclasses.dataclass(frozen=True)
class KernelPair:
    """A backend's forward and backward kernels, closed over their static settings (scale, interpret, ...)."""
    forward: Callable[..., Any]
    backward: Callable[..., Any]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _core(kp: KernelPair, q, k, v, g, beta, s0):
    o, s_final, _ = kp.forward(q, k, v, g, beta, s0, save_states=False)
    return o, s_final


def _core_fwd(kp, q, k, v, g, beta, s0):
    o, s_final, states = kp.forward(q, k, v, g, beta, s0, save_states=True)
    return (o, s_final), (q, k, v, g, beta, states)


def _core_bwd(kp, res, cts):
    q, k, v, g, beta, states = res
    do, ds_final = cts
    dq, dk, dv, dg, dbeta, ds0 = kp.backward(q, k, v, g, beta, states, do, ds_final.astype(f32))
    return (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None if g is None else dg.astype(f32),
            dbeta.astype(f32), ds0.astype(f32))


_core.defvjp(_core_fwd, _core_bwd)


def applies(q, k, v, g, beta, *, chunk_size=64, initial_state=None, head_dims=(64, 128, 256), **_) -> bool:
    """Whether the Pallas kernels handle these inputs; anything else goes to the XLA implementation."""
    if chunk_size != 64 or q.ndim != 4 or k.shape != q.shape or v.ndim != 4 or v.shape[:3] != q.shape[:3]:
        return False
    # Smaller head dims are zero-padded up to a supported one (exact, see common.kernel_head_dim).
    if any(common.kernel_head_dim(d, head_dims) is None for d in (q.shape[-1], v.shape[-1])):
        return False
    if not (jnp.dtype(q.dtype) == jnp.dtype(k.dtype) == jnp.dtype(v.dtype)) or jnp.dtype(q.dtype) not in \
            SUPPORTED_DTYPES:
        return False
    return initial_state is None or tuple(initial_state.shape) == (q.shape[0], q.shape[2], q.shape[3], v.shape[3])


def run(make_pair: Callable[[bool, float, jnp.dtype], KernelPair], q, k, v, g, beta, *, scale=None,
        initial_state=None, output_final_state=False, chunk_size=64, head_dims=(64, 128, 256)):
    """The ops-facing entry: checks, pads time to the chunk and head dims to a kernel's, runs the custom_vjp
    core, trims. Head dims below the smallest of `head_dims` are zero-padded (exact; see common.kernel_head_dim).

    make_pair(gated, scale, mm_dtype) builds the backend's KernelPair (static per trace).
    """
    name = "delta_rule" if g is None else "gated_delta_rule"
    common.check_qkv(name, q, k, v, ("beta", beta), *(() if g is None else (("g", g),)))
    common.check_state(name, initial_state, q, v)
    if chunk_size != 64:
        raise ValueError(f"{name}: the Pallas kernels use chunk_size=64, got {chunk_size}")
    dtype = jnp.dtype(q.dtype)
    if dtype not in SUPPORTED_DTYPES or k.dtype != dtype or v.dtype != dtype:
        raise ValueError(f"{name}: Pallas kernels take q, k, v all bf16 or all fp32; got {q.dtype}, {k.dtype}, "
                         f"{v.dtype}")
    bsz, seqlen, heads, dk = q.shape
    dv = v.shape[-1]
    scale = float(common.default_scale(q, scale))
    pad = lambda x: common.pad_time(x, chunk_size)  # noqa: E731  (zero padding is exact, see common.pad_time)
    s0 = jnp.zeros((bsz, heads, dk, dv), f32) if initial_state is None else initial_state.astype(f32)
    dk_p, dv_p = common.kernel_head_dim(dk, head_dims), common.kernel_head_dim(dv, head_dims)
    if dk_p is None or dv_p is None:
        raise ValueError(f"{name}: head dims {dk}, {dv} exceed the kernels' largest ({max(head_dims)})")
    q, k, v = common.pad_last(q, dk_p), common.pad_last(k, dk_p), common.pad_last(v, dv_p)
    s0 = common.pad_state(s0, dk_p, dv_p)
    pair = make_pair(g is not None, scale, dtype)
    o, s_final = _core(pair, pad(q), pad(k), pad(v), None if g is None else pad(g.astype(f32)),
                       pad(beta.astype(f32)), s0)
    o = o[:, :seqlen, :, :dv]
    s_final = s_final[:, :, :dk, :dv]
    return (o, s_final) if output_final_state else o
