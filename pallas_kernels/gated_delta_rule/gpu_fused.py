"""The fused Mosaic GPU scheme of the (gated) delta rule: one sequential sweep per (batch, head, value block).

One CTA (one warpgroup) loops over the chunks in order with the fp32 state [Dk, Dv/blocks] carried in registers
through a fori_loop; the backward loops in reverse carrying dL/dS. Each chunk's q, k, v (, do) and the per-step
g, beta arrive in SMEM by TMA (one barrier per operand); outputs leave through the input staging tiles by TMA.
A chunk's whole math (chunk_math.chunk_forward / chunk_backward) sits on the sequential path: few launches, but
a long dependent chain per chunk and one CTA per head and value block. The forward under differentiation also
writes the state at the start of every chunk (see vjp.py) and the chunk's (I + A)^-1 (fp32 [C, C]), so the
backward's chain has no triangular inverse in it.
Selected with scheme="fused" (gpu.py); gpu_chunked.py is the default.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.common import f32
from pallas_kernels.gated_delta_rule import chunk_math
from pallas_kernels.gated_delta_rule import gpu_common as gc
from pallas_kernels.gated_delta_rule.gpu_common import CHUNK, ROW

@functools.lru_cache(maxsize=None)  # a dry run of the chunk math: once per configuration
def operand_keys(m: chunk_math.ChunkMath, c: int, dk: int, dv: int, backward: bool) -> list:
    mat = lambda r, k: jax.ShapeDtypeStruct((r, k), f32)  # noqa: E731
    vec = jax.ShapeDtypeStruct((c, 1), f32)
    args = [mat(c, dk), mat(c, dk), mat(c, dv), vec, vec if m.gated else None, mat(dk, dv)]
    if backward:  # given the forward's T
        return gc.record_operand_keys(
            m, lambda *a: chunk_math.chunk_backward(*a[:-2], a[-1], t=a[-2]), *args, mat(c, dv), mat(dk, dv),
            mat(c, c))
    return gc.record_operand_keys(m, chunk_math.chunk_forward, *args)


def smem_bytes(keys, c, dk, dv, in_dtype, backward: bool) -> int:
    """Operand buffers plus the staging tiles _forward / _backward allocate: q, k, v (+ do); outputs reuse them.
    T's fp32 tile is counted in both (the forward has it when it saves for a backward, the case that must fit)."""
    operand = gc.operand_bytes(keys)
    tiles = 2 * c * dk + (2 if backward else 1) * c * dv
    return operand + tiles * jnp.dtype(in_dtype).itemsize + dk * dv * 4 + c * c * 4 + 5 * c * 4  # + T's tile


def _forward_kernel(*refs, m, keys, save_states, num_chunks, heads, blocks):
    it = iter(refs)
    q_ref, k_ref, v_ref = next(it), next(it), next(it)
    g_ref = next(it) if m.gated else None
    beta_ref, s0_ref = next(it), next(it)
    o_ref, sfin_ref = next(it), next(it)
    states_ref, t_ref = (next(it), next(it)) if save_states else (None, None)
    bufs = {key: next(it) for key in keys}
    q_s, k_s, v_s, g_s, b_s, st_s, vec_s, bar = (next(it) for _ in range(8))
    t_s = next(it) if save_states else None
    o_s = v_s  # v is in registers once the chunk math has started: its tile stages the output
    op = gc.OpSlices.of_cta(heads, blocks)
    bhv, bh = op.row, op.bh
    gm = gc.GpuMath(m.gated, m.scale, m.mm_dtype, bufs=bufs, vec_smem=vec_s)
    c = CHUNK

    plgpu.copy_gmem_to_smem(op.state(s0_ref), st_s, bar.at[0])
    plgpu.barrier_wait(bar.at[0])
    s0 = plgpu.load(st_s, layout=plgpu.Layout.WGMMA)

    def step(n, s):
        rows = pl.ds(n * c, c)
        loads = [(op.head(q_ref, rows), q_s), (op.head(k_ref, rows), k_s), (op.value(v_ref, rows), v_s),
                 (beta_ref.at[bh, rows], b_s)] + ([(g_ref.at[bh, rows], g_s)] if m.gated else [])
        for i, (src, dst) in enumerate(loads):
            plgpu.copy_gmem_to_smem(src, dst, bar.at[i])
        for i in range(len(loads)):
            plgpu.barrier_wait(bar.at[i])
        if save_states:
            st_s[...] = s
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(st_s, states_ref.at[bhv, n])
        beta = plgpu.load(b_s, layout=ROW)
        g = plgpu.load(g_s, layout=ROW) if m.gated else None
        o, s_new, *t = chunk_math.chunk_forward(q_s[...], k_s[...], v_s[...], beta, g, s, gm, with_t=save_states)
        o_s[...] = o.astype(o_s.dtype)
        if save_states:
            t_s[...] = t[0]
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(o_s, op.value(o_ref, rows))
        if save_states:
            plgpu.copy_smem_to_gmem(t_s, t_ref.at[bhv, rows])
        plgpu.wait_smem_to_gmem(0)  # v_s (o) / st_s / t_s are refilled next step
        return s_new

    s_fin = lax.fori_loop(0, num_chunks, step, s0)
    st_s[...] = s_fin
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(st_s, op.state(sfin_ref))
    plgpu.wait_smem_to_gmem(0)


def _backward_kernel(*refs, m, keys, num_chunks, heads, blocks):
    it = iter(refs)
    q_ref, k_ref, v_ref = next(it), next(it), next(it)
    g_ref = next(it) if m.gated else None
    beta_ref, states_ref, t_ref, do_ref, dsfin_ref = next(it), next(it), next(it), next(it), next(it)
    dq_ref, dk_ref, dv_ref = next(it), next(it), next(it)
    dg_ref = next(it) if m.gated else None
    dbeta_ref, ds0_ref = next(it), next(it)
    bufs = {key: next(it) for key in keys}
    q_s, k_s, v_s, do_s, g_s, b_s, st_s, vo_s, vec_s, t_s, bar = (next(it) for _ in range(11))
    dq_s, dk_s, dv_s = q_s, k_s, v_s  # the inputs are in registers once the chunk math runs: reuse their tiles
    op = gc.OpSlices.of_cta(heads, blocks)
    bhv, bh = op.row, op.bh
    gm = gc.GpuMath(m.gated, m.scale, m.mm_dtype, bufs=bufs, vec_smem=vec_s)
    c = CHUNK

    plgpu.copy_gmem_to_smem(op.state(dsfin_ref), st_s, bar.at[0])
    plgpu.barrier_wait(bar.at[0])
    ds_fin = plgpu.load(st_s, layout=plgpu.Layout.WGMMA)

    def step(i, ds_next):
        n = num_chunks - 1 - i
        rows = pl.ds(n * c, c)
        loads = [(op.head(q_ref, rows), q_s), (op.head(k_ref, rows), k_s), (op.value(v_ref, rows), v_s),
                 (op.value(do_ref, rows), do_s), (beta_ref.at[bh, rows], b_s), (states_ref.at[bhv, n], st_s),
                 (t_ref.at[bhv, rows], t_s)]
        if m.gated:
            loads.append((g_ref.at[bh, rows], g_s))
        for j, (src, dst) in enumerate(loads):
            plgpu.copy_gmem_to_smem(src, dst, bar.at[j])
        for j in range(len(loads)):
            plgpu.barrier_wait(bar.at[j])
        beta = plgpu.load(b_s, layout=ROW)
        g = plgpu.load(g_s, layout=ROW) if m.gated else None
        s, t = plgpu.load(st_s, layout=plgpu.Layout.WGMMA), plgpu.load(t_s, layout=plgpu.Layout.WGMMA)
        dq, dk, dv, dbeta, dg, ds = chunk_math.chunk_backward(
            q_s[...], k_s[...], v_s[...], beta, g, s, do_s[...], ds_next, gm, t=t)
        gc.store_tiles([(dq, dq_s, op.partial(dq_ref, rows)), (dk, dk_s, op.partial(dk_ref, rows)),
                        (dv, dv_s, op.value(dv_ref, rows)), (dbeta, vo_s.at[0], dbeta_ref.at[bhv, rows])]
                       + ([(dg, vo_s.at[1], dg_ref.at[bhv, rows])] if m.gated else []))
        return ds

    ds0 = lax.fori_loop(0, num_chunks, step, ds_fin)
    st_s[...] = ds0
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(st_s, op.state(ds0_ref))
    plgpu.wait_smem_to_gmem(0)


def _vectors(g, beta):
    gh, bh_beta = gc.row_vectors(g, beta)
    return ([gh] if gh is not None else []) + [bh_beta]


def _forward(q, k, v, g, beta, s0, *, m, interpret, save_states):
    bsz, tp, heads, dk = q.shape
    blocks = gc.value_blocks(v.shape[-1])
    dv = v.shape[-1] // blocks  # columns per CTA
    c, nc, rows = CHUNK, tp // CHUNK, bsz * heads * blocks
    keys = operand_keys(m, c, dk, dv, backward=False)
    args = [q, k, v] + _vectors(g, beta) + [s0]
    out_shape = [jax.ShapeDtypeStruct(v.shape, v.dtype), jax.ShapeDtypeStruct(s0.shape, f32)]
    if save_states:  # the state entering every chunk, and every chunk's T (one row per value block)
        out_shape += [jax.ShapeDtypeStruct((rows, nc, dk, dv), f32), jax.ShapeDtypeStruct((rows, tp, c), f32)]
    scratch = gc.scratch(keys, [plgpu.SMEM((c, dk), q.dtype), plgpu.SMEM((c, dk), k.dtype),
                                plgpu.SMEM((c, dv), v.dtype), plgpu.SMEM((c,), f32), plgpu.SMEM((c,), f32),
                                plgpu.SMEM((dk, dv), f32), plgpu.SMEM((c,), f32), plgpu.Barrier(num_barriers=5)]
                         + ([plgpu.SMEM((c, c), f32)] if save_states else []))  # T's tile
    body = functools.partial(_forward_kernel, m=m, keys=keys, save_states=save_states, num_chunks=nc, heads=heads,
                             blocks=blocks)
    outs = gc.launch(body, args, out_shape, scratch, grid=(rows,), interpret=interpret,
                     name=gc.kernel_name(m, "fused_fwd", dk, dv, q.dtype))
    return outs[0], outs[1], ((outs[2], outs[3]) if save_states else None)


def _backward(q, k, v, g, beta, residual, do, ds_final, *, m, interpret):
    states, t = residual
    bsz, tp, heads, dk = q.shape
    blocks = gc.value_blocks(v.shape[-1])
    dv = v.shape[-1] // blocks
    c, nc, rows = CHUNK, tp // CHUNK, bsz * heads * blocks
    keys = operand_keys(m, c, dk, dv, backward=True)
    args = [q, k, v] + _vectors(g, beta) + [states, t, do.astype(v.dtype), ds_final]
    # dq, dk: one partial per value block in the op layout (summed below in fp32); dg, dbeta: per-row partials.
    out_shape = [gc.partials_shape(q, blocks), gc.partials_shape(k, blocks), jax.ShapeDtypeStruct(v.shape, v.dtype)] \
        + ([jax.ShapeDtypeStruct((rows, tp), f32)] if m.gated else []) \
        + [jax.ShapeDtypeStruct((rows, tp), f32), jax.ShapeDtypeStruct(ds_final.shape, f32)]
    scratch = gc.scratch(keys, [
        plgpu.SMEM((c, dk), q.dtype), plgpu.SMEM((c, dk), k.dtype), plgpu.SMEM((c, dv), v.dtype),
        plgpu.SMEM((c, dv), v.dtype), plgpu.SMEM((c,), f32), plgpu.SMEM((c,), f32), plgpu.SMEM((dk, dv), f32),
        plgpu.SMEM((2, c), f32), plgpu.SMEM((c,), f32), plgpu.SMEM((c, c), f32), plgpu.Barrier(num_barriers=8)])
    body = functools.partial(_backward_kernel, m=m, keys=keys, num_chunks=nc, heads=heads, blocks=blocks)
    outs = iter(gc.launch(body, args, out_shape, scratch, grid=(rows,), interpret=interpret,
                          name=gc.kernel_name(m, "fused_bwd", dk, dv, q.dtype)))
    dq, dk_ = gc.sum_partials(next(outs)), gc.sum_partials(next(outs))
    dv_ = next(outs)
    dg = gc.sum_blocks(next(outs), bsz, heads) if m.gated else None
    dbeta = gc.sum_blocks(next(outs), bsz, heads)
    return dq, dk_, dv_, dg, dbeta, next(outs)


@functools.lru_cache(maxsize=None)
def fits_smem(gated: bool, dk: int, dv: int, dtype) -> bool:
    """Whether this scheme's forward and backward SMEM for head dims (dk, dv) fits SMEM_BUDGET (per value block)."""
    m = chunk_math.ChunkMath(gated=gated, scale=1.0, mm_dtype=jnp.dtype(dtype))
    dv = dv // gc.value_blocks(dv)
    return all(smem_bytes(operand_keys(m, CHUNK, dk, dv, bwd), CHUNK, dk, dv, dtype, bwd) <= gc.SMEM_BUDGET
               for bwd in (False, True))
