"""Mosaic TPU kernels for simple GLA / SSD, forward and backward (registered as ('simple_gla', 'tpu')).

Grid (batch*heads, chunks): the head axis is "parallel" (split across TensorCores), the chunk axis is
"arbitrary" because the TPU runs it in order, so the fp32 state lives in a VMEM scratch carried from one chunk
to the next and never goes to HBM inside the forward. The backward walks the chunks in reverse (its index maps
read chunk N-1-i) and carries dS the same way; the states entering each chunk are recomputed by a state-only
pass of the forward kernel (see vjp.py). Blocks are [C=64, D] with D the full head dim, so they are legal for
any head dim and 128-lane dense for D = 128/256; the decays come in twice, as a [C, 1] column and a [1, C] row,
so the kernel never transposes a vector.

On CPU, `interpret=pltpu.InterpretParams()` runs the same kernels under TPU semantics (tests do this).
"""
from __future__ import annotations

import functools

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from aira_jax.ops.dispatch import register_kernel
from pallas_kernels import common
from pallas_kernels.common import f32
from pallas_kernels.simple_gla import chunk_math, vjp

SEMANTICS = ("parallel", "arbitrary")


def _decay_views(gc, chunk):
    """gc [BH, Tp] -> column [BH, Tp, 1] and row [BH, N, 1, C] views (both f32)."""
    bh, tp = gc.shape
    return gc[:, :, None], gc.reshape(bh, tp // chunk, 1, chunk)


def _specs(chunk, dk, dv, reverse_n=None):
    """BlockSpecs for the per-chunk operands; reverse_n walks the chunk axis backwards."""
    if reverse_n is None:
        t = lambda i, n: (i, n, 0)  # noqa: E731
        row = lambda i, n: (i, n, 0, 0)  # noqa: E731
    else:
        t = lambda i, n: (i, reverse_n - 1 - n, 0)  # noqa: E731
        row = lambda i, n: (i, reverse_n - 1 - n, 0, 0)  # noqa: E731
    return dict(
        qk=pl.BlockSpec((None, chunk, dk), t),
        v=pl.BlockSpec((None, chunk, dv), t),
        col=pl.BlockSpec((None, chunk, 1), t),
        row=pl.BlockSpec((None, None, 1, chunk), row),
        state=pl.BlockSpec((None, dk, dv), lambda i, n: (i, 0, 0)),
        states=pl.BlockSpec((None, None, dk, dv), row),
    )


def _forward_kernel(q_ref, k_ref, v_ref, col_ref, row_ref, s0_ref, o_ref, sf_ref, s_scr, *, scale, nchunks):
    n = pl.program_id(1)

    @pl.when(n == 0)
    def _():
        s_scr[...] = s0_ref[...]

    dots = chunk_math.Dots(q_ref.dtype)
    o, s_new = chunk_math.chunk_forward(q_ref[...], k_ref[...], v_ref[...], col_ref[...], row_ref[...],
                                        s_scr[...], scale, dots)
    o_ref[...] = o.astype(o_ref.dtype)
    s_scr[...] = s_new

    @pl.when(n == nchunks - 1)
    def _():
        sf_ref[...] = s_new


def _states_kernel(k_ref, v_ref, col_ref, row_ref, s0_ref, h_ref, s_scr):
    n = pl.program_id(1)

    @pl.when(n == 0)
    def _():
        s_scr[...] = s0_ref[...]

    s = s_scr[...]
    h_ref[...] = s
    dots = chunk_math.Dots(k_ref.dtype)
    _, s_new = chunk_math.chunk_forward(None, k_ref[...], v_ref[...], col_ref[...], row_ref[...], s, 0.0, dots,
                                        want_output=False)
    s_scr[...] = s_new


def _backward_kernel(q_ref, k_ref, v_ref, col_ref, row_ref, h_ref, do_ref, dsf_ref,
                     dq_ref, dk_ref, dv_ref, dg_ref, ds0_ref, ds_scr, *, scale, nchunks):
    i = pl.program_id(1)

    @pl.when(i == 0)
    def _():
        ds_scr[...] = dsf_ref[...]

    dots = chunk_math.Dots(q_ref.dtype)
    dq, dk, dv, dg, ds_prev = chunk_math.chunk_backward(
        q_ref[...], k_ref[...], v_ref[...], col_ref[...], row_ref[...], h_ref[...], do_ref[...], ds_scr[...],
        scale, dots)
    dq_ref[...] = dq.astype(dq_ref.dtype)
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)
    dg_ref[...] = dg
    ds_scr[...] = ds_prev

    @pl.when(i == nchunks - 1)
    def _():
        ds0_ref[...] = ds_prev


def _blocks(qh, vh, chunk):
    """One grid step's operands as ShapeDtypeStructs (for tracing a step's cost): q/k, v, decay column and row,
    a state."""
    dk, dv = qh.shape[-1], vh.shape[-1]
    return (jax.ShapeDtypeStruct((chunk, dk), qh.dtype), jax.ShapeDtypeStruct((chunk, dv), vh.dtype),
            jax.ShapeDtypeStruct((chunk, 1), f32), jax.ShapeDtypeStruct((1, chunk), f32),
            jax.ShapeDtypeStruct((dk, dv), f32))


def _params():
    return pltpu.CompilerParams(dimension_semantics=SEMANTICS)


def forward(qh, kh, vh, gc, s0, *, scale, chunk, interpret):
    bh, tp, dk = qh.shape
    dv = vh.shape[-1]
    n = tp // chunk
    sp = _specs(chunk, dk, dv)
    col, row = _decay_views(gc, chunk)
    out_shape = [jax.ShapeDtypeStruct((bh, tp, dv), vh.dtype), jax.ShapeDtypeStruct((bh, dk, dv), f32)]
    dots = chunk_math.Dots(qh.dtype)
    qk_b, v_b, col_b, row_b, state_b = _blocks(qh, vh, chunk)
    cost = common.grid_cost(lambda q, k, v, c, r, s: chunk_math.chunk_forward(q, k, v, c, r, s, scale, dots),
                            (qk_b, qk_b, v_b, col_b, row_b, state_b), steps=bh * n,
                            operands=(qh, kh, vh, col, row, s0), outputs=out_shape)
    return pl.pallas_call(
        functools.partial(_forward_kernel, scale=scale, nchunks=n),
        grid=(bh, n),
        in_specs=[sp["qk"], sp["qk"], sp["v"], sp["col"], sp["row"], sp["state"]],
        out_specs=[sp["v"], sp["state"]],
        out_shape=out_shape,
        scratch_shapes=[pltpu.VMEM((dk, dv), f32)],
        compiler_params=_params(), interpret=interpret, name="simple_gla_fwd", cost_estimate=cost,
    )(qh, kh, vh, col, row, s0)


def states(kh, vh, gc, s0, *, chunk, interpret):
    bh, tp, dk = kh.shape
    dv = vh.shape[-1]
    n = tp // chunk
    sp = _specs(chunk, dk, dv)
    col, row = _decay_views(gc, chunk)
    out_shape = jax.ShapeDtypeStruct((bh, n, dk, dv), f32)
    dots = chunk_math.Dots(kh.dtype)
    k_b, v_b, col_b, row_b, state_b = _blocks(kh, vh, chunk)
    cost = common.grid_cost(
        lambda k, v, c, r, s: chunk_math.chunk_forward(None, k, v, c, r, s, 0.0, dots, want_output=False),
        (k_b, v_b, col_b, row_b, state_b), steps=bh * n, operands=(kh, vh, col, row, s0), outputs=out_shape)
    return pl.pallas_call(
        _states_kernel,
        grid=(bh, n),
        in_specs=[sp["qk"], sp["v"], sp["col"], sp["row"], sp["state"]],
        out_specs=sp["states"],
        out_shape=out_shape,
        scratch_shapes=[pltpu.VMEM((dk, dv), f32)],
        compiler_params=_params(), interpret=interpret, name="simple_gla_states", cost_estimate=cost,
    )(kh, vh, col, row, s0)


def backward(qh, kh, vh, gc, h, do, dsf, *, scale, chunk, interpret):
    bh, tp, dk = qh.shape
    dv = vh.shape[-1]
    n = tp // chunk
    sp = _specs(chunk, dk, dv, reverse_n=n)
    col, row = _decay_views(gc, chunk)
    out_shape = [jax.ShapeDtypeStruct(qh.shape, qh.dtype), jax.ShapeDtypeStruct(kh.shape, kh.dtype),
                 jax.ShapeDtypeStruct(vh.shape, vh.dtype), jax.ShapeDtypeStruct((bh, n, 1, chunk), f32),
                 jax.ShapeDtypeStruct((bh, dk, dv), f32)]
    dots = chunk_math.Dots(qh.dtype)
    qk_b, v_b, col_b, row_b, state_b = _blocks(qh, vh, chunk)
    cost = common.grid_cost(
        lambda q, k, v, c, r, s, do_, ds: chunk_math.chunk_backward(q, k, v, c, r, s, do_, ds, scale, dots),
        (qk_b, qk_b, v_b, col_b, row_b, state_b, v_b, state_b), steps=bh * n,
        operands=(qh, kh, vh, col, row, h, do, dsf), outputs=out_shape)
    dq, dk_, dv_, dg, ds0 = pl.pallas_call(
        functools.partial(_backward_kernel, scale=scale, nchunks=n),
        grid=(bh, n),
        in_specs=[sp["qk"], sp["qk"], sp["v"], sp["col"], sp["row"], sp["states"], sp["v"], sp["state"]],
        out_specs=[sp["qk"], sp["qk"], sp["v"], sp["row"], sp["state"]],
        out_shape=out_shape,
        scratch_shapes=[pltpu.VMEM((dk, dv), f32)],
        compiler_params=_params(), interpret=interpret, name="simple_gla_bwd", cost_estimate=cost,
    )(qh, kh, vh, col, row, h, do, dsf)
    return dq, dk_, dv_, dg.reshape(bh, tp), ds0


KERNELS = vjp.KernelSet(forward=forward, states=states, backward=backward)
_core = vjp.make_core(KERNELS)


def simple_gla_tpu(q, k, v, g, *, scale=None, initial_state=None, output_final_state=False, chunk_size=64,
                   interpret=False):
    """aira_jax.ops.simple_gla on Mosaic TPU; `interpret=pltpu.InterpretParams()` runs it on CPU."""
    if chunk_size % 8:
        raise ValueError(f"simple_gla tpu kernel: chunk_size must be a multiple of 8, got {chunk_size}")
    return vjp.run(_core, q, k, v, g, scale=scale, initial_state=initial_state,
                   output_final_state=output_final_state, chunk_size=chunk_size, interpret=interpret)


def applies(q, k, v, g, *, chunk_size=64, **_) -> bool:
    # Head dims 32..256 (full-dim blocks are legal for any of them); state up to 256x256 fp32 in VMEM.
    return vjp.supported(q, k, v, g, chunk_size=chunk_size, dims=(32, 64, 128, 256))


register_kernel("simple_gla", "tpu", simple_gla_tpu, applies)
