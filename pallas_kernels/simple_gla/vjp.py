"""custom_vjp wiring shared by the Pallas simple-GLA kernels (TPU and GPU).

A backend supplies three kernels on the head-major layout [BH, Tp, D] (Tp a multiple of the chunk), or with
run(..., op_layout=True) on q, k, v, dO, o, dq, dk, dv in the op layout [B, Tp, H, D] (the GPU kernels read and
write it in place by TMA; the decays and states stay head-major either way):
    forward(qh, kh, vh, gc, s0)      -> o [BH, Tp, Dv] (dtype of v), final state [BH, Dk, Dv] f32
    states(kh, vh, gc, s0)           -> h [BH, N, Dk, Dv] f32, the state entering each chunk
    backward(qh, kh, vh, gc, h, do, dsT)
                                     -> dq, dk, dv (input dtypes), dg [BH, Tp] f32, ds0 [BH, Dk, Dv] f32
where gc is the chunk-local cumulative log decay (f32). The backward kernel runs the chunks in reverse, carrying
dS (the gradient of the state leaving a chunk); it forms dg per chunk from the pair terms that cross each step
(chunk_math.chunk_backward), all in fp32. A backend may also supply
    forward_saving_states(qh, kh, vh, gc, s0) -> (o, h, final state)
which writes the states on its way (the GPU kernels: one store per chunk) so the backward skips the states sweep,
keeping h (bf16 where the backend writes bf16) as a residual. Without it the states are recomputed in the
backward, and the forward keeps only its inputs.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from pallas_kernels import common
from pallas_kernels.common import f32


@dataclasses.dataclass(frozen=True)
class KernelSet:
    """The three kernels of one backend; each also takes keyword args scale/chunk/interpret (see module doc)."""
    forward: Callable[..., tuple[jax.Array, jax.Array]]
    states: Callable[..., jax.Array]
    backward: Callable[..., tuple[jax.Array, ...]]
    forward_saving_states: Callable[..., tuple[jax.Array, jax.Array, jax.Array]] | None = None


def local_cumsum(gh: jax.Array, chunk: int) -> jax.Array:
    """[BH, Tp] log decays -> cumulative sums restarting at each chunk, float32."""
    bh, tp = gh.shape
    return jnp.cumsum(gh.astype(f32).reshape(bh, tp // chunk, chunk), axis=-1).reshape(bh, tp)


def make_core(kernels: KernelSet):
    """Returns core(qh, kh, vh, gh, s0, scale, chunk, interpret) -> (o, final_state), differentiable in all five
    array arguments through the backend's Pallas backward."""

    @functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
    def core(qh, kh, vh, gh, s0, scale, chunk, interpret):
        gc = local_cumsum(gh, chunk)
        return kernels.forward(qh, kh, vh, gc, s0, scale=scale, chunk=chunk, interpret=interpret)

    def fwd(qh, kh, vh, gh, s0, scale, chunk, interpret):
        gc = local_cumsum(gh, chunk)
        if kernels.forward_saving_states is not None:
            o, h, s_final = kernels.forward_saving_states(qh, kh, vh, gc, s0, scale=scale, chunk=chunk,
                                                          interpret=interpret)
            return (o, s_final), (qh, kh, vh, gh, s0, h)
        o, s_final = kernels.forward(qh, kh, vh, gc, s0, scale=scale, chunk=chunk, interpret=interpret)
        return (o, s_final), (qh, kh, vh, gh, s0, None)

    def bwd(scale, chunk, interpret, res, cts):
        qh, kh, vh, gh, s0, h = res
        do, ds_final = cts
        gc = local_cumsum(gh, chunk)
        if h is None:
            h = kernels.states(kh, vh, gc, s0, chunk=chunk, interpret=interpret)
        dq, dk, dv, dg, ds0 = kernels.backward(qh, kh, vh, gc, h, do.astype(vh.dtype), ds_final.astype(f32),
                                               scale=scale, chunk=chunk, interpret=interpret)
        return (dq.astype(qh.dtype), dk.astype(kh.dtype), dv.astype(vh.dtype), dg.astype(gh.dtype),
                ds0.astype(s0.dtype))

    core.defvjp(fwd, bwd)
    return core


def head_major(x: jax.Array, chunk: int) -> jax.Array:
    """[B, T, H, ...] -> [B*H, Tp, ...], zero-padded in time (exact: see common.pad_time)."""
    x = common.pad_time(x, chunk)
    b, tp, h = x.shape[:3]
    return jnp.moveaxis(x, 2, 1).reshape(b * h, tp, *x.shape[3:])


def run(core, q, k, v, g, *, scale=None, initial_state=None, output_final_state=False, chunk_size=64,
        interpret: Any = False, head_dims=(32, 64, 128, 256), op_layout: bool = False):
    """The ops-level signature on top of a core from make_core: checks, padding (time to the chunk, head dims up
    to the smallest of `head_dims` that holds them: exact, see common.kernel_head_dim), layout, state in/out.
    op_layout: the core takes q, k, v as [B, Tp, H, D] and returns o so (no head-major copies)."""
    common.check_qkv("simple_gla", q, k, v, ("g", g))
    common.check_state("simple_gla", initial_state, q, v)
    bsz, seqlen, heads, dk = q.shape
    dv = v.shape[-1]
    out_dtype = v.dtype
    scale = float(common.default_scale(q, scale))
    v = v.astype(q.dtype) if v.dtype != q.dtype else v
    k = k.astype(q.dtype) if k.dtype != q.dtype else k
    dk_p, dv_p = common.kernel_head_dim(dk, head_dims), common.kernel_head_dim(dv, head_dims)
    if dk_p is None or dv_p is None:
        raise ValueError(f"simple_gla: head dims {dk}, {dv} exceed the kernels' largest ({max(head_dims)})")
    q, k, v = common.pad_last(q, dk_p), common.pad_last(k, dk_p), common.pad_last(v, dv_p)
    s0 = (jnp.zeros((bsz * heads, dk_p, dv_p), f32) if initial_state is None
          else common.pad_state(initial_state.astype(f32).reshape(bsz * heads, dk, dv), dk_p, dv_p))
    gh = head_major(g.astype(f32), chunk_size)
    layout = (lambda x: common.pad_time(x, chunk_size)) if op_layout else (lambda x: head_major(x, chunk_size))  # noqa
    o, s_final = core(layout(q), layout(k), layout(v), gh, s0, scale, chunk_size, interpret)
    if not op_layout:
        o = jnp.moveaxis(o.reshape(bsz, heads, -1, dv_p), 1, 2)
    o = o[:, :seqlen, :, :dv].astype(out_dtype)
    if output_final_state:
        return o, s_final[:, :dk, :dv].reshape(bsz, heads, dk, dv)
    return o


def supported(q, k, v, g, *, chunk_size=64, dims=(64, 128, 256), max_state_elems=256 * 256, **_) -> bool:
    """Shared applies(): what the kernels handle; anything else falls back to the XLA path."""
    if q.ndim != 4 or k.shape != q.shape or v.ndim != 4 or v.shape[:3] != q.shape[:3] or g.shape != q.shape[:3]:
        return False
    if jnp.dtype(q.dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(f32)):
        return False
    if jnp.dtype(k.dtype) != jnp.dtype(q.dtype) or jnp.dtype(v.dtype) != jnp.dtype(q.dtype):
        return False
    dk, dv = (common.kernel_head_dim(d, dims) for d in (q.shape[-1], v.shape[-1]))  # padded up (exact)
    return chunk_size == 64 and dk is not None and dv is not None and dk * dv <= max_state_elems
