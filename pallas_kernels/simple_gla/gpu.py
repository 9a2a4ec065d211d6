"""Mosaic GPU (Hopper wgmma) kernels for simple GLA / SSD, forward and backward (registered as ('simple_gla', 'gpu')).

Three kernels, one warpgroup per program, chunk C = 64 (wgmma's M), bf16 operands with fp32 accumulation:
  * forward / states, grid (batch*heads, Dv/64): the fp32 state block [Dk, 64] lives in registers and the chunk
    loop runs inside the kernel (a GPU grid has no order); per chunk the inputs come in by TMA, the state goes to
    shared memory as bf16 once for Q S, and S' = exp(b_C) S + K^T (r * V) accumulates on the tensor cores.
    Splitting Dv in 64-wide blocks (as flash-linear-attention does) keeps the state at 32 registers a thread
    per 64 rows of Dk. It writes the outputs, the state entering every chunk (bf16), or both: under
    differentiation the forward writes both, so the backward has the states without a second sweep.
  * dS, grid (batch*heads, Dv/64): the reverse recurrence dS_{n-1} = exp(b_C) dS_n + scale (Q*e)^T dO_n, writing
    the gradient of the state leaving every chunk (bf16) and the gradient of the initial state (fp32).
  * gradients, grid (batch*heads, chunks): with both states known every chunk is independent: dq, dk, dv and
    the per-position pieces of the log-decay gradient (see chunk_math.py for the formulas), fully parallel.
The chunk-local sums that finish dg are three cumsums over [B*H, T] done by XLA (vjp_glue below).
q, k, v, dO come in and o, dq, dk, dv go out in the op layout [B, T, H, D], read and written in place by TMA
(a head's rows are H*D apart; `_head`), so XLA never copies them to or from a head-major layout; the decays,
the states and the dg pieces are head-major [B*H, ...].
Every wgmma operand is a shared-memory tile (wgmma transposes 16-bit tiles there for the A^T products);
feeding the left operand from registers would save a store but the GPU interpreter cannot run that form.
`interpret=plgpu.InterpretGPUParams()` runs the same kernels on CPU.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from aira_jax.ops.dispatch import register_kernel
from pallas_kernels import common
from pallas_kernels.common import f32
from pallas_kernels.simple_gla import vjp

BV = 64  # value-dim block of the recurrent kernels
bf16 = jnp.bfloat16


def _tile(shape):
    """bf16 shared-memory tile in the layout wgmma reads (8x64 tiles, 128-byte swizzle)."""
    return plgpu.SMEM(shape, bf16, transforms=(plgpu.TilingTransform((8, 64)), plgpu.SwizzleTransform(128)))


def _mm(a, b, m, n):
    """a @ b on the tensor cores into a fresh fp32 accumulator (a: registers or SMEM, b: SMEM)."""
    def body(acc):
        plgpu.wgmma(acc, a, b)
        return acc[...]
    return pl.run_scoped(body, plgpu.ACC((m, n), f32))


def _row_vec(ref):
    """A [M] fp32 vector from shared memory in the layout that broadcasts one value per row of a wgmma tile."""
    return plgpu.load(ref, layout=plgpu.Layout.WGMMA.reduce(1))


def _col_vec(ref):
    """The same vector laid out to broadcast one value per column."""
    return plgpu.load(ref, layout=plgpu.Layout.WGMMA.reduce(0))


def _rows(vec, shape):
    """[M] -> [M, N], one value per row."""
    return lax.broadcast_in_dim(vec, shape, [0])


def _cols(vec, shape):
    return lax.broadcast_in_dim(vec, shape, [1])


def _decay_matrix(b_ref, bcol_ref, c, transpose=False):
    """D_ij = exp(b_i - b_j) for i >= j else 0 (or its transpose), from the chunk's cumulative decays.

    b_ref and bcol_ref hold the same values: Mosaic GPU's layout inference needs every load of one SMEM ref to
    ask for the same layout, so the per-column copy of the decays has its own buffer.
    """
    rows = plgpu.broadcasted_iota(jnp.int32, (c, c), 0, layout=plgpu.Layout.WGMMA)
    cols = plgpu.broadcasted_iota(jnp.int32, (c, c), 1, layout=plgpu.Layout.WGMMA)
    br, bc = _rows(_row_vec(b_ref), (c, c)), _cols(_col_vec(bcol_ref), (c, c))
    if transpose:  # [j, i]: exp(b_i - b_j) for i >= j
        return jnp.where(cols >= rows, jnp.exp(jnp.minimum(bc - br, 0.0)), 0.0)
    return jnp.where(rows >= cols, jnp.exp(jnp.minimum(br - bc, 0.0)), 0.0)


def _head(i, heads):
    """(batch, head) of program row i: its windows of an op-layout [B, T, H, D] array are ref.at[b, ts, h]."""
    return lax.div(i, heads), lax.rem(i, heads)


def _wait_all(bars, n):
    for i in range(n):
        plgpu.barrier_wait(bars.at[i])


# ------------------------------------------------------------------------------------------------ forward
def _forward_body(*refs, scale, nchunks, outputs, states, heads):
    """outputs: write o; states: write the (bf16) state entering every chunk (one or both)."""
    it = iter(refs)
    q_ref, k_ref, v_ref, b_ref, r_ref, ec_ref, s0_ref = (next(it) for _ in range(7))
    out_ref = next(it) if outputs else None
    h_ref = next(it) if states else None
    sf_ref = next(it)
    q_s, k_s, v_s, b_s, r_s, ec_s, st_s, s_s, vr_s, o_s, a_s, bc_s, bars = it
    i, j = lax.axis_index("bh"), lax.axis_index("vb")
    bb, hh = _head(i, heads)
    c, dk = k_s.shape
    vs = pl.ds(j * BV, BV)
    plgpu.copy_gmem_to_smem(s0_ref.at[i, :, vs], st_s, bars.at[0])
    plgpu.barrier_wait(bars.at[0])
    s0 = st_s[...]

    def step(n, s):
        ts = pl.ds(n * c, c)
        plgpu.copy_gmem_to_smem(k_ref.at[bb, ts, hh], k_s, bars.at[0])
        plgpu.copy_gmem_to_smem(v_ref.at[bb, ts, hh, vs], v_s, bars.at[1])
        plgpu.copy_gmem_to_smem(b_ref.at[i, ts], b_s, bars.at[2])
        plgpu.copy_gmem_to_smem(r_ref.at[i, ts], r_s, bars.at[3])
        plgpu.copy_gmem_to_smem(ec_ref.at[i, n], ec_s, bars.at[4])
        if outputs:
            plgpu.copy_gmem_to_smem(q_ref.at[bb, ts, hh], q_s, bars.at[5])
            plgpu.copy_gmem_to_smem(b_ref.at[i, ts], bc_s, bars.at[6])
        _wait_all(bars, 7 if outputs else 5)
        s_s[...] = s.astype(bf16)
        plgpu.commit_smem()
        if states:  # the state entering chunk n, for the backward
            plgpu.copy_smem_to_gmem(s_s, h_ref.at[i, n, :, vs])
        if outputs:
            a = _mm(q_s, k_s.transpose((1, 0)), c, c) * (_decay_matrix(b_s, bc_s, c) * scale)
            a_s[...] = a.astype(bf16)
            plgpu.commit_smem()
            o = _mm(q_s, s_s, c, BV) * _rows(jnp.exp(_row_vec(b_s)) * scale, (c, BV)) + _mm(a_s, v_s, c, BV)
            o_s[...] = o.astype(bf16)
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(o_s, out_ref.at[bb, ts, hh, vs])
        vr_s[...] = (v_s[...].astype(f32) * _rows(_row_vec(r_s), (c, BV))).astype(bf16)
        plgpu.commit_smem()
        s = s * _rows(_row_vec(ec_s), (dk, BV)) + _mm(k_s.transpose((1, 0)), vr_s, dk, BV)
        plgpu.wait_smem_to_gmem(0)  # the staging tiles are rewritten next chunk
        return s

    s = lax.fori_loop(0, nchunks, step, s0)
    st_s[...] = s
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(st_s, sf_ref.at[i, :, vs])
    plgpu.wait_smem_to_gmem(0)


def _name(stage: str, dk: int, dtype) -> str:
    """Launch names that say the configuration, for profiler traces and bench/ptxas_report.py."""
    return f"simple_gla_{stage}_k{dk}_v{BV}_{jnp.dtype(dtype).name}"


def _recurrent_call(q, k, v, b, r, ec, s0, *, scale, chunk, outputs, states, interpret):
    """q, k, v in the op layout [B, Tp, H, D]; b, r [B*H, Tp]; ec [B*H, N, Dk]; s0 [B*H, Dk, Dv].
    Returns (o if outputs, the bf16 states [B*H, N, Dk, Dv] entering every chunk if states, the final state)."""
    bsz, tp, heads, dk = k.shape
    bh, dv = bsz * heads, v.shape[-1]
    n = tp // chunk
    out = ([jax.ShapeDtypeStruct(v.shape, v.dtype)] if outputs else []) \
        + ([jax.ShapeDtypeStruct((bh, n, dk, dv), bf16)] if states else [])
    scratch = [_tile((chunk, dk)), _tile((chunk, dk)), _tile((chunk, BV)), plgpu.SMEM((chunk,), f32),
               plgpu.SMEM((chunk,), f32), plgpu.SMEM((dk,), f32), plgpu.SMEM((dk, BV), f32), _tile((dk, BV)),
               _tile((chunk, BV)), _tile((chunk, BV)), _tile((chunk, chunk)), plgpu.SMEM((chunk,), f32),
               plgpu.Barrier(num_barriers=7)]
    return plgpu.kernel(
        functools.partial(_forward_body, scale=scale, nchunks=n, outputs=outputs, states=states, heads=heads),
        out_type=(*out, jax.ShapeDtypeStruct((bh, dk, dv), f32)),
        scratch_types=scratch, grid=(bh, dv // BV), grid_names=("bh", "vb"),
        compiler_params=plgpu.CompilerParams(), interpret=interpret,
        kernel_name=_name({(True, False): "fwd", (False, True): "states", (True, True): "fwd_states"}[outputs, states],
                          dk, v.dtype),
    )(q, k, v, b, r, ec, s0)


# ------------------------------------------------------------------------------------------------ dS
def _ds_body(q_ref, do_ref, b_ref, ec_ref, dsf_ref, dh_ref, ds0_ref,
             q_s, do_s, b_s, ec_s, st_s, qe_s, dh_s, bars, *, scale, nchunks, heads):
    i, j = lax.axis_index("bh"), lax.axis_index("vb")
    bb, hh = _head(i, heads)
    c, dk = q_s.shape
    vs = pl.ds(j * BV, BV)
    plgpu.copy_gmem_to_smem(dsf_ref.at[i, :, vs], st_s, bars.at[0])
    plgpu.barrier_wait(bars.at[0])

    def step(m, ds):
        n = nchunks - 1 - m
        ts = pl.ds(n * c, c)
        plgpu.copy_gmem_to_smem(q_ref.at[bb, ts, hh], q_s, bars.at[0])
        plgpu.copy_gmem_to_smem(do_ref.at[bb, ts, hh, vs], do_s, bars.at[1])
        plgpu.copy_gmem_to_smem(b_ref.at[i, ts], b_s, bars.at[2])
        plgpu.copy_gmem_to_smem(ec_ref.at[i, n], ec_s, bars.at[3])
        dh_s[...] = ds.astype(bf16)  # gradient of the state leaving chunk n
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(dh_s, dh_ref.at[i, n, :, vs])
        _wait_all(bars, 4)
        qe_s[...] = (q_s[...].astype(f32) * _rows(jnp.exp(_row_vec(b_s)) * scale, (c, dk))).astype(bf16)
        plgpu.commit_smem()
        ds = ds * _rows(_row_vec(ec_s), (dk, BV)) + _mm(qe_s.transpose((1, 0)), do_s, dk, BV)
        plgpu.wait_smem_to_gmem(0)
        return ds

    ds = lax.fori_loop(0, nchunks, step, st_s[...])
    st_s[...] = ds
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(st_s, ds0_ref.at[i, :, vs])
    plgpu.wait_smem_to_gmem(0)


def _ds_call(q, do, b, ec, dsf, *, scale, chunk, interpret):
    bsz, tp, heads, dk = q.shape
    bh, dv = bsz * heads, do.shape[-1]
    n = tp // chunk
    scratch = [_tile((chunk, dk)), _tile((chunk, BV)), plgpu.SMEM((chunk,), f32), plgpu.SMEM((dk,), f32),
               plgpu.SMEM((dk, BV), f32), _tile((chunk, dk)), _tile((dk, BV)), plgpu.Barrier(num_barriers=4)]
    return plgpu.kernel(
        functools.partial(_ds_body, scale=scale, nchunks=n, heads=heads),
        out_type=(jax.ShapeDtypeStruct((bh, n, dk, dv), bf16), jax.ShapeDtypeStruct((bh, dk, dv), f32)),
        scratch_types=scratch, grid=(bh, dv // BV), grid_names=("bh", "vb"),
        compiler_params=plgpu.CompilerParams(), interpret=interpret, kernel_name=_name("dstates", dk, do.dtype),
    )(q, do, b, ec, dsf)


# ------------------------------------------------------------------------------------------------ gradients
def _grad_body(q_ref, k_ref, v_ref, do_ref, b_ref, r_ref, h_ref, dh_ref,
               dq_ref, dk_ref, dv_ref, rs_ref, cs_ref, wr_ref,
               q_s, k_s, v_s, do_s, h_s, dh_s, a_s, da_s, oq_s, ok_s, ov_s, b_s, r_s, v1_s, v2_s, v3_s, bc_s, bars,
               *, scale, heads):
    i, n = lax.axis_index("bh"), lax.axis_index("n")
    bb, hh = _head(i, heads)
    c, dk = q_s.shape
    dv = v_s.shape[1]
    ts = pl.ds(n * c, c)
    op = lambda ref: ref.at[bb, ts, hh]  # noqa: E731  (this head's rows of an op-layout array)
    for idx, (src, dst) in enumerate(((op(q_ref), q_s), (op(k_ref), k_s), (op(v_ref), v_s),
                                      (op(do_ref), do_s), (h_ref.at[i, n], h_s), (dh_ref.at[i, n], dh_s),
                                      (b_ref.at[i, ts], b_s), (r_ref.at[i, ts], r_s), (b_ref.at[i, ts], bc_s))):
        plgpu.copy_gmem_to_smem(src, dst, bars.at[idx])
    _wait_all(bars, 9)
    e, r = jnp.exp(_row_vec(b_s)), _row_vec(r_s)
    dmat = _decay_matrix(b_s, bc_s, c) * scale
    a = _mm(q_s, k_s.transpose((1, 0)), c, c) * dmat
    dov = _mm(do_s, v_s.transpose((1, 0)), c, c)
    da = dov * dmat
    pairs = a * dov
    a_s[...] = a.astype(bf16)
    da_s[...] = da.astype(bf16)
    plgpu.commit_smem()
    # Column sums of the pair terms as row sums of their transpose (K Q^T and V dO^T): reductions along rows
    # are the ones the wgmma layout does natively.
    dmat_t = _decay_matrix(b_s, bc_s, c, transpose=True) * scale
    pairs_t = _mm(k_s, q_s.transpose((1, 0)), c, c) * dmat_t * _mm(v_s, do_s.transpose((1, 0)), c, c)

    dq_inter = _mm(do_s, h_s.transpose((1, 0)), c, dk) * _rows(e * scale, (c, dk))
    v1_s[...] = jnp.sum(pairs, axis=1) + jnp.sum(q_s[...].astype(f32) * dq_inter, axis=1)
    oq_s[...] = (dq_inter + _mm(da_s, k_s, c, dk)).astype(bf16)
    dk_inter = _mm(v_s, dh_s.transpose((1, 0)), c, dk) * _rows(r, (c, dk))
    v3_s[...] = jnp.sum(k_s[...].astype(f32) * dk_inter, axis=1)
    ok_s[...] = (dk_inter + _mm(da_s.transpose((1, 0)), q_s, c, dk)).astype(bf16)
    dvv = _mm(k_s, dh_s, c, dv) * _rows(r, (c, dv)) + _mm(a_s.transpose((1, 0)), do_s, c, dv)
    ov_s[...] = dvv.astype(bf16)
    v2_s[...] = jnp.sum(pairs_t, axis=1)
    plgpu.commit_smem()
    for src, dst in ((oq_s, op(dq_ref)), (ok_s, op(dk_ref)), (ov_s, op(dv_ref)),
                     (v1_s, rs_ref.at[i, ts]), (v2_s, cs_ref.at[i, ts]), (v3_s, wr_ref.at[i, ts])):
        plgpu.copy_smem_to_gmem(src, dst)
    plgpu.wait_smem_to_gmem(0)


def _grad_call(q, k, v, do, b, r, h, dh, *, scale, chunk, interpret):
    bsz, tp, heads, dk = q.shape
    bh, dv = bsz * heads, v.shape[-1]
    n = tp // chunk
    vec = jax.ShapeDtypeStruct((bh, tp), f32)
    scratch = [_tile((chunk, dk)), _tile((chunk, dk)), _tile((chunk, dv)), _tile((chunk, dv)), _tile((dk, dv)),
               _tile((dk, dv)), _tile((chunk, chunk)), _tile((chunk, chunk)), _tile((chunk, dk)),
               _tile((chunk, dk)), _tile((chunk, dv))] + [plgpu.SMEM((chunk,), f32)] * 6 + [
                   plgpu.Barrier(num_barriers=9)]
    return plgpu.kernel(
        functools.partial(_grad_body, scale=scale, heads=heads),
        out_type=(jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype),
                  jax.ShapeDtypeStruct(v.shape, v.dtype), vec, vec, vec),
        scratch_types=scratch, grid=(bh, n), grid_names=("bh", "n"),
        compiler_params=plgpu.CompilerParams(), interpret=interpret, kernel_name=_name("grads", dk, q.dtype),
    )(q, k, v, do, b, r, h, dh)


# ------------------------------------------------------------------------------------------------ glue
def _decays(gc, dk, chunk):
    """Chunk-local cumulative decays b [BH, Tp] -> r = exp(b_C - b) [BH, Tp], exp(b_C) as [BH, N, Dk] rows."""
    bh, tp = gc.shape
    g3 = gc.reshape(bh, tp // chunk, chunk)
    last = g3[..., -1:]
    r = jnp.exp(last - g3).reshape(bh, tp)
    ec = jnp.broadcast_to(jnp.exp(last), (bh, tp // chunk, dk))
    return r, ec


def forward(q, k, v, gc, s0, *, scale, chunk, interpret):
    r, ec = _decays(gc, k.shape[-1], chunk)
    return _recurrent_call(q, k, v, gc, r, ec, s0, scale=scale, chunk=chunk, outputs=True, states=False,
                           interpret=interpret)


def forward_saving_states(q, k, v, gc, s0, *, scale, chunk, interpret):
    """The forward under differentiation: also writes the bf16 state entering every chunk for the backward, which
    then skips the states sweep (one TMA store per chunk here, against a second pass over k, v there)."""
    r, ec = _decays(gc, k.shape[-1], chunk)
    return _recurrent_call(q, k, v, gc, r, ec, s0, scale=scale, chunk=chunk, outputs=True, states=True,
                           interpret=interpret)


def states(k, v, gc, s0, *, chunk, interpret):
    r, ec = _decays(gc, k.shape[-1], chunk)
    h, _ = _recurrent_call(k, k, v, gc, r, ec, s0, scale=1.0, chunk=chunk, outputs=False, states=True,
                           interpret=interpret)
    return h


def backward(q, k, v, gc, h, do, dsf, *, scale, chunk, interpret):
    """q, k, v, do in the op layout [B, Tp, H, D]; gc [B*H, Tp]; h [B*H, N, Dk, Dv]; dsf [B*H, Dk, Dv]."""
    bh, tp = gc.shape
    n = tp // chunk
    r, ec = _decays(gc, q.shape[-1], chunk)
    dh, ds0 = _ds_call(q, do, gc, ec, dsf, scale=scale, chunk=chunk, interpret=interpret)
    dq, dk_, dv, rs, cs, wr = _grad_call(q, k, v, do, gc, r, h, dh, scale=scale, chunk=chunk,
                                         interpret=interpret)
    # dg_t = sum_{s>=t in chunk} (rowsum - colsum of the pair terms + reads)_s + sum_{j<t in chunk} writes_j
    #        + <dS_n, exp(b_C) S_n>   (see chunk_math.chunk_backward)
    inner = (rs - cs).reshape(bh, n, chunk)
    writes = wr.reshape(bh, n, chunk)
    through = ec[..., 0] * jnp.sum(h.astype(f32) * dh.astype(f32), axis=(2, 3))
    dg = (jnp.flip(jnp.cumsum(jnp.flip(inner, -1), -1), -1) + (jnp.cumsum(writes, -1) - writes)
          + through[..., None])
    return dq, dk_, dv, dg.reshape(bh, tp), ds0


KERNELS = vjp.KernelSet(forward=forward, states=states, backward=backward, forward_saving_states=forward_saving_states)
_core = vjp.make_core(KERNELS)


GPU_HEAD_DIMS = (64, 128)  # smaller head dims are zero-padded to 64 by vjp.run


def simple_gla_gpu(q, k, v, g, *, scale=None, initial_state=None, output_final_state=False, chunk_size=64,
                   interpret=None):
    """aira_jax.ops.simple_gla on Mosaic GPU (Hopper); `interpret=plgpu.InterpretGPUParams()` runs it on CPU."""
    if chunk_size != 64:
        raise ValueError(f"simple_gla gpu kernel: chunk_size must be 64 (wgmma's M), got {chunk_size}")
    def run(q, k, v, g, **kw):
        return vjp.run(_core, q, k, v, g, scale=scale, chunk_size=chunk_size, interpret=interpret,
                       head_dims=GPU_HEAD_DIMS, op_layout=True, **kw)
    if not common.strided_gpu_io():  # AIRA_GPU_STRIDED_TMA=0: heads as batch rows (contiguous windows)
        return common.call_heads_as_batch(run, q, k, v, (g,), initial_state=initial_state,
                                          output_final_state=output_final_state)
    return run(q, k, v, g, initial_state=initial_state, output_final_state=output_final_state)


def applies(q, k, v, g, *, chunk_size=64, check_device=True, **_) -> bool:
    # bf16 only (fp32 wgmma would be tf32, below the fp32 bar); head dims 64/128 (the gradient kernel keeps
    # q, k, v, dO, both states and its staging tiles in shared memory: ~200 KiB at 128); wgmma needs a Hopper.
    return (vjp.supported(q, k, v, g, chunk_size=chunk_size, dims=GPU_HEAD_DIMS)
            and jnp.dtype(q.dtype) == jnp.dtype(bf16) and (not check_device or common.is_hopper()))


register_kernel("simple_gla", "gpu", simple_gla_gpu, applies)
