"""Mosaic TPU kernels for the chunked (gated) delta rule, forward and backward.

Grid (batch * heads, chunks): the head axis is "parallel" (megacore may split it), the chunk axis "arbitrary"
so it runs in order on one core and the fp32 state [Dk, Dv] lives in a VMEM scratch across it. The forward
writes o per chunk and, under differentiation, the state at the start of every chunk; the backward walks the
chunks in reverse (index maps read chunk N-1-n) carrying dL/dS in VMEM and emits all per-chunk gradients.

Layout: time is the sublane axis (C = 64 rows, a multiple of 8) and the head dim the lane axis. For Dk, Dv
multiples of 128 the kernel reads [B, T, H*D] (a free reshape of [B, T, H, D]) with a (C, D) block at lane
offset h*D, so q, k, v, o never take an extra HBM transpose. For D = 64 a (C, 64) block of [B, T, H*64] breaks
the (8, 128) block rule, so those inputs are transposed once to [B*H, T, D], where a 64-lane block is the
full minor dim; Mosaic then pads vregs to 128 lanes (half-empty vregs, but no HBM padding and no wasted
matmul K-depth). Putting time in lanes instead would not help: C = 64 is also half a vreg. The per-step
scalars g and beta are stored [B*H, N, 1, C] (lane-major rows; they are tiny) and turned into columns in-kernel.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from aira_jax.ops.dispatch import register_kernel
from pallas_kernels import common
from pallas_kernels.gated_delta_rule import chunk_math, vjp
from pallas_kernels.common import f32

CHUNK = 64


class _Layout:
    """How a [B, Tp, H, D] tensor is presented to the kernel, and how to undo it for outputs."""

    def __init__(self, bsz: int, tp: int, heads: int, d: int, c: int):
        self.bsz, self.tp, self.heads, self.d, self.c = bsz, tp, heads, d, c
        self.lanes_direct = d % 128 == 0

    def to_kernel(self, x):
        if self.lanes_direct:
            return x.reshape(self.bsz, self.tp, self.heads * self.d)
        return jnp.swapaxes(x, 1, 2).reshape(self.bsz * self.heads, self.tp, self.d)

    def from_kernel(self, y):
        if self.lanes_direct:
            return y.reshape(self.bsz, self.tp, self.heads, self.d)
        return jnp.swapaxes(y.reshape(self.bsz, self.heads, self.tp, self.d), 1, 2)

    def spec(self, chunk_of):
        h, c, d = self.heads, self.c, self.d
        if self.lanes_direct:
            # lax.div / lax.rem: Python's floor // and % lower through sign ops Mosaic does not need here.
            return pl.BlockSpec((None, c, d), lambda i, n: (lax.div(i, h), chunk_of(n), lax.rem(i, h)))
        return pl.BlockSpec((None, c, d), lambda i, n: (i, chunk_of(n), 0))

    def shape(self, dtype):
        if self.lanes_direct:
            return jax.ShapeDtypeStruct((self.bsz, self.tp, self.heads * self.d), dtype)
        return jax.ShapeDtypeStruct((self.bsz * self.heads, self.tp, self.d), dtype)


def _scalars_to_kernel(x, c):
    """[B, Tp, H] fp32 -> [B*H, N, 1, C]."""
    b, t, h = x.shape
    return jnp.swapaxes(x, 1, 2).reshape(b * h, t // c, 1, c)


def _scalars_from_kernel(y, b, h):
    """[B*H, N, 1, C] -> [B, Tp, H]."""
    return jnp.swapaxes(y.reshape(b, h, -1), 1, 2)


def _forward_step(q, k, v, beta_row, g_row, s, *, m: chunk_math.ChunkMath):
    """One grid step of the forward on loaded values: g, beta arrive as [1, C] rows, the chunk math takes [C, 1]
    columns. Returns (o fp32, the state after the chunk). Also traced alone for the kernel's cost estimate."""
    col = chunk_math.col_from_row
    return chunk_math.chunk_forward(q, k, v, col(beta_row), None if g_row is None else col(g_row), s, m)


def _backward_step(q, k, v, beta_row, g_row, s, do, ds_next, *, m: chunk_math.ChunkMath):
    """One grid step of the backward on loaded values: (dq, dk, dv fp32, dbeta row, dg row or None, dL/ds)."""
    col, row = chunk_math.col_from_row, chunk_math.row_from_col
    dq, dk, dv, dbeta, dg, ds = chunk_math.chunk_backward(q, k, v, col(beta_row),
                                                          None if g_row is None else col(g_row), s, do, ds_next, m)
    return dq, dk, dv, row(dbeta), None if dg is None else row(dg), ds


def _blocks(q, v, c):
    """One grid step's operands as ShapeDtypeStructs (for tracing a step's cost): q/k, v, a scalar row, a state."""
    dk, dv = q.shape[-1], v.shape[-1]
    return (jax.ShapeDtypeStruct((c, dk), q.dtype), jax.ShapeDtypeStruct((c, dv), v.dtype),
            jax.ShapeDtypeStruct((1, c), f32), jax.ShapeDtypeStruct((dk, dv), f32))


def _forward_kernel(*refs, m: chunk_math.ChunkMath, save_states: bool, num_chunks: int):
    it = iter(refs)
    q_ref, k_ref, v_ref = next(it), next(it), next(it)
    g_ref = next(it) if m.gated else None
    beta_ref, s0_ref = next(it), next(it)
    o_ref, sfin_ref = next(it), next(it)
    states_ref = next(it) if save_states else None
    s_scr = next(it)
    n = pl.program_id(1)

    @pl.when(n == 0)
    def _():
        s_scr[...] = s0_ref[...]

    s = s_scr[...]
    if save_states:
        states_ref[...] = s
    o, s_new = _forward_step(q_ref[...], k_ref[...], v_ref[...], beta_ref[...], g_ref[...] if m.gated else None, s,
                             m=m)
    o_ref[...] = o.astype(o_ref.dtype)
    s_scr[...] = s_new

    @pl.when(n == num_chunks - 1)
    def _():
        sfin_ref[...] = s_new


def _backward_kernel(*refs, m: chunk_math.ChunkMath, num_chunks: int):
    it = iter(refs)
    q_ref, k_ref, v_ref = next(it), next(it), next(it)
    g_ref = next(it) if m.gated else None
    beta_ref, states_ref, do_ref, dsfin_ref = next(it), next(it), next(it), next(it)
    dq_ref, dk_ref, dv_ref = next(it), next(it), next(it)
    dg_ref = next(it) if m.gated else None
    dbeta_ref, ds0_ref, ds_scr = next(it), next(it), next(it)
    n = pl.program_id(1)

    @pl.when(n == 0)
    def _():
        ds_scr[...] = dsfin_ref[...]

    dq, dk, dv, dbeta, dg, ds = _backward_step(q_ref[...], k_ref[...], v_ref[...], beta_ref[...],
                                               g_ref[...] if m.gated else None, states_ref[...], do_ref[...],
                                               ds_scr[...], m=m)
    dq_ref[...] = dq.astype(dq_ref.dtype)
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)
    dbeta_ref[...] = dbeta
    if m.gated:
        dg_ref[...] = dg
    ds_scr[...] = ds

    @pl.when(n == num_chunks - 1)
    def _():
        ds0_ref[...] = ds


def _compiler_params():
    return pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary"))


def _forward(q, k, v, g, beta, s0, *, m, interpret, save_states):
    bsz, tp, heads, dk = q.shape
    dv = v.shape[-1]
    c = CHUNK
    nc = tp // c
    lk, lv = _Layout(bsz, tp, heads, dk, c), _Layout(bsz, tp, heads, dv, c)
    fwd = lambda n: n  # noqa: E731
    scalar_spec = pl.BlockSpec((None, None, 1, c), lambda i, n: (i, n, 0, 0))
    state_spec = pl.BlockSpec((None, dk, dv), lambda i, n: (i, 0, 0))
    args = [lk.to_kernel(q), lk.to_kernel(k), lv.to_kernel(v)]
    in_specs = [lk.spec(fwd), lk.spec(fwd), lv.spec(fwd)]
    for x in ([g] if m.gated else []) + [beta]:
        args.append(_scalars_to_kernel(x, c))
        in_specs.append(scalar_spec)
    args.append(s0.reshape(bsz * heads, dk, dv))
    in_specs.append(state_spec)
    out_shape = [lv.shape(v.dtype), jax.ShapeDtypeStruct((bsz * heads, dk, dv), f32)]
    out_specs = [lv.spec(fwd), state_spec]
    if save_states:
        out_shape.append(jax.ShapeDtypeStruct((bsz * heads, nc, dk, dv), f32))
        out_specs.append(pl.BlockSpec((None, None, dk, dv), lambda i, n: (i, n, 0, 0)))
    qk_b, v_b, row_b, state_b = _blocks(q, v, c)
    cost = common.grid_cost(functools.partial(_forward_step, m=m),
                            (qk_b, qk_b, v_b, row_b, row_b if m.gated else None, state_b),
                            steps=bsz * heads * nc, operands=args, outputs=out_shape)
    outs = pl.pallas_call(
        functools.partial(_forward_kernel, m=m, save_states=save_states, num_chunks=nc),
        out_shape=out_shape, grid=(bsz * heads, nc), in_specs=in_specs, out_specs=out_specs,
        scratch_shapes=[pltpu.VMEM((dk, dv), f32)], compiler_params=_compiler_params(), interpret=interpret,
        cost_estimate=cost,
        name="gated_delta_rule_fwd" if m.gated else "delta_rule_fwd",
    )(*args)
    o, s_fin = lv.from_kernel(outs[0]), outs[1].reshape(bsz, heads, dk, dv)
    return o, s_fin, (outs[2] if save_states else None)


def _backward(q, k, v, g, beta, states, do, ds_final, *, m, interpret):
    bsz, tp, heads, dk = q.shape
    dv = v.shape[-1]
    c = CHUNK
    nc = tp // c
    lk, lv = _Layout(bsz, tp, heads, dk, c), _Layout(bsz, tp, heads, dv, c)
    rev = lambda n: nc - 1 - n  # noqa: E731  (the reverse sweep over chunks)
    scalar_spec = pl.BlockSpec((None, None, 1, c), lambda i, n: (i, nc - 1 - n, 0, 0))
    state_spec = pl.BlockSpec((None, dk, dv), lambda i, n: (i, 0, 0))
    args = [lk.to_kernel(q), lk.to_kernel(k), lv.to_kernel(v)]
    in_specs = [lk.spec(rev), lk.spec(rev), lv.spec(rev)]
    for x in ([g] if m.gated else []) + [beta]:
        args.append(_scalars_to_kernel(x, c))
        in_specs.append(scalar_spec)
    args += [states, lv.to_kernel(do), ds_final.reshape(bsz * heads, dk, dv)]
    in_specs += [pl.BlockSpec((None, None, dk, dv), lambda i, n: (i, nc - 1 - n, 0, 0)), lv.spec(rev),
                 state_spec]
    scalar_shape = jax.ShapeDtypeStruct((bsz * heads, nc, 1, c), f32)
    out_shape = [lk.shape(q.dtype), lk.shape(k.dtype), lv.shape(v.dtype)] + ([scalar_shape] if m.gated else []) \
        + [scalar_shape, jax.ShapeDtypeStruct((bsz * heads, dk, dv), f32)]
    out_specs = [lk.spec(rev), lk.spec(rev), lv.spec(rev)] + ([scalar_spec] if m.gated else []) \
        + [scalar_spec, state_spec]
    qk_b, v_b, row_b, state_b = _blocks(q, v, c)
    cost = common.grid_cost(functools.partial(_backward_step, m=m),
                            (qk_b, qk_b, v_b, row_b, row_b if m.gated else None, state_b, v_b, state_b),
                            steps=bsz * heads * nc, operands=args, outputs=out_shape)
    outs = pl.pallas_call(
        functools.partial(_backward_kernel, m=m, num_chunks=nc),
        out_shape=out_shape, grid=(bsz * heads, nc), in_specs=in_specs, out_specs=out_specs,
        scratch_shapes=[pltpu.VMEM((dk, dv), f32)], compiler_params=_compiler_params(), interpret=interpret,
        cost_estimate=cost,
        name="gated_delta_rule_bwd" if m.gated else "delta_rule_bwd",
    )(*args)
    it = iter(outs)
    dq, dk_, dv_ = lk.from_kernel(next(it)), lk.from_kernel(next(it)), lv.from_kernel(next(it))
    dg = _scalars_from_kernel(next(it), bsz, heads) if m.gated else None
    dbeta = _scalars_from_kernel(next(it), bsz, heads)
    ds0 = next(it).reshape(bsz, heads, dk, dv)
    return dq, dk_, dv_, dg, dbeta, ds0


@functools.lru_cache(maxsize=None)
def _pair(gated: bool, scale: float, dtype, interpret) -> vjp.KernelPair:
    m = chunk_math.ChunkMath(gated=gated, scale=scale, mm_dtype=jnp.dtype(dtype))
    return vjp.KernelPair(functools.partial(_forward, m=m, interpret=interpret),
                          functools.partial(_backward, m=m, interpret=interpret))


def chunk_gated_delta_rule_tpu(q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=False,
                               chunk_size=CHUNK, interpret=None):
    """Gated delta rule on TPU (g=None: the plain delta rule, decay math compiled out).

    interpret: None on a TPU; pltpu.InterpretParams() (or True) runs the kernels on CPU for tests.
    """
    make = lambda gated, sc, dt: _pair(gated, sc, dt, interpret)  # noqa: E731
    return vjp.run(make, q, k, v, g, beta, scale=scale, initial_state=initial_state,
                   output_final_state=output_final_state, chunk_size=chunk_size)


def applies(q, k, v, g, beta, **kwargs) -> bool:
    return vjp.applies(q, k, v, g, beta, **kwargs)


register_kernel("gated_delta_rule", "tpu", chunk_gated_delta_rule_tpu, applies)
