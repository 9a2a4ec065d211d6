"""Mosaic GPU (Hopper) kernels for the chunked (gated) delta rule, forward and backward.

One CTA (one warpgroup) per (batch, head) loops over the chunks in order with the fp32 state [Dk, Dv] carried
in registers through a fori_loop; the backward loops in reverse carrying dL/dS. Each chunk's q, k, v (, do)
and the per-step g, beta arrive in SMEM by TMA (copy_gmem_to_smem + one barrier per operand); outputs leave
through an SMEM buffer by TMA. The chunk math is chunk_math.py, shared with the TPU body, with
  * matmuls as wgmma: both operands are stored to swizzled, tiled SMEM buffers (one per role, shape and dtype,
    sized by a dry run of the chunk math) and transposes are SMEM views, never register shuffles;
  * per-time vecs as 1-D arrays in the WGMMA row layout; where a vec must run along the other axis (column
    sums, broadcasting along columns) it is re-laid out through a small SMEM buffer.
The forward under differentiation also writes the state at the start of every chunk (see vjp.py).

Limits: all SMEM buffers must fit SMEM_BUDGET (`applies` sizes them): today that admits Dk = Dv = 64 (113 KiB
bf16, 145 KiB fp32); D = 128 needs ~265 KiB with this one-buffer-per-operand plan and falls back to XLA until
the staging buffers are reused as wgmma operands. fp32 inputs use tf32 wgmma, so fp32 accuracy on GPU is
tf32-level, not the 1e-6 of the TPU/XLA paths.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from aira_jax.ops.dispatch import register_kernel
from pallas_kernels.gated_delta_rule import chunk_math, vjp
from pallas_kernels.common import f32

CHUNK = 64
SMEM_BUDGET = 200 * 1024  # bytes of dynamic SMEM we allow ourselves (H100: 227 KiB per CTA)
ROW = plgpu.Layout.WGMMA.reduce(1)  # a vec indexed by the row of a WGMMA-layout matrix
COL = plgpu.Layout.WGMMA.reduce(0)  # a vec indexed by its column


def _mma_transforms(dtype, minor: int):
    bits = jnp.dtype(dtype).itemsize * 8
    swizzle = plgpu.find_swizzle(minor * bits)
    return plgpu.TilingTransform((8, swizzle * 8 // bits)), plgpu.SwizzleTransform(swizzle)


class _Recorder(chunk_math.ChunkMath):
    """Dry-run ChunkMath that records which SMEM operand buffers the kernel body needs."""

    def __init__(self, base: chunk_math.ChunkMath, keys: set):
        super().__init__(base.gated, base.scale, base.mm_dtype)
        object.__setattr__(self, "keys", keys)

    def dot(self, a, b, *, ta=False, tb=False, dtype=f32):
        self.keys.add(("lhs", tuple(a.shape), jnp.dtype(dtype).name))
        self.keys.add(("rhs", tuple(b.shape), jnp.dtype(dtype).name))
        return super().dot(a, b, ta=ta, tb=tb, dtype=dtype)


def _operand_keys(m: chunk_math.ChunkMath, c: int, dk: int, dv: int, backward: bool) -> list:
    keys: set = set()
    rec = _Recorder(m, keys)
    mat = lambda r, k: jax.ShapeDtypeStruct((r, k), f32)  # noqa: E731
    vec = jax.ShapeDtypeStruct((c, 1), f32)
    args = [mat(c, dk), mat(c, dk), mat(c, dv), vec, vec if m.gated else None, mat(dk, dv)]
    if backward:
        jax.eval_shape(lambda *a: chunk_math.chunk_backward(*a, rec), *args, mat(c, dv), mat(dk, dv))
    else:
        jax.eval_shape(lambda *a: chunk_math.chunk_forward(*a, rec), *args)
    return sorted(keys)


def _smem_bytes(keys, c, dk, dv, in_dtype, backward: bool) -> int:
    """Operand buffers plus the staging buffers _forward / _backward allocate (q, k, v, o or + do, dq, dk, dv)."""
    operand = sum(r * k * jnp.dtype(d).itemsize for _, (r, k), d in keys)
    tiles = (2 * c * dk + 2 * c * dv) if not backward else (4 * c * dk + 3 * c * dv + c * dv)
    return operand + tiles * jnp.dtype(in_dtype).itemsize + dk * dv * 4 + 5 * c * 4


@dataclasses.dataclass(frozen=True)
class _GpuMath(chunk_math.ChunkMath):
    """chunk_math primitives for a Mosaic GPU warpgroup: wgmma through SMEM, 1-D vecs in the ROW layout."""
    bufs: Any = dataclasses.field(default=None, compare=False)
    vec_smem: Any = dataclasses.field(default=None, compare=False)

    def dot(self, a, b, *, ta=False, tb=False, dtype=f32):
        dname = jnp.dtype(dtype).name
        a_s, b_s = self.bufs[("lhs", tuple(a.shape), dname)], self.bufs[("rhs", tuple(b.shape), dname)]
        a_s[...] = a.astype(dtype)
        b_s[...] = b.astype(dtype)
        plgpu.commit_smem()  # make the register stores visible to the async (wgmma) proxy
        m = a.shape[1] if ta else a.shape[0]
        n = b.shape[0] if tb else b.shape[1]

        def run(acc):
            plgpu.wgmma(acc, a_s.T if ta else a_s, b_s.T if tb else b_s)
            return acc[...]  # reading the accumulator waits for the wgmma, so the buffers are free again

        return pl.run_scoped(run, plgpu.ACC((m, n), f32))

    def iota(self, c):
        return (plgpu.broadcasted_iota(jnp.int32, (c, c), 0, layout=plgpu.Layout.WGMMA),
                plgpu.broadcasted_iota(jnp.int32, (c, c), 1, layout=plgpu.Layout.WGMMA))

    def _relayout(self, vec, layout):
        self.vec_smem[...] = vec
        return plgpu.load(self.vec_smem, layout=layout)

    def ecol(self, vec, width):
        return lax.broadcast_in_dim(vec, (vec.shape[0], width), (0,))

    def erow(self, vec, height):
        return lax.broadcast_in_dim(self._relayout(vec, COL), (height, vec.shape[0]), (1,))

    def rowsum(self, x):
        return jnp.sum(x, axis=1)

    def colsum(self, x):
        return self._relayout(jnp.sum(x, axis=0), ROW)

    def total(self, x):
        return jnp.sum(x if x.ndim == 1 else jnp.sum(x, axis=1))


def _scratch(keys, extra):
    bufs = [plgpu.SMEM(shape, jnp.dtype(d), transforms=_mma_transforms(d, shape[1])) for _, shape, d in keys]
    return bufs + extra


def _forward_kernel(*refs, m, keys, save_states, num_chunks):
    it = iter(refs)
    q_ref, k_ref, v_ref = next(it), next(it), next(it)
    g_ref = next(it) if m.gated else None
    beta_ref, s0_ref = next(it), next(it)
    o_ref, sfin_ref = next(it), next(it)
    states_ref = next(it) if save_states else None
    bufs = {key: next(it) for key in keys}
    q_s, k_s, v_s, g_s, b_s, o_s, st_s, vec_s, bar = (next(it) for _ in range(9))
    bh = lax.axis_index("bh")
    gm = _GpuMath(m.gated, m.scale, m.mm_dtype, bufs=bufs, vec_smem=vec_s)
    c = CHUNK

    plgpu.copy_gmem_to_smem(s0_ref.at[bh], st_s, bar.at[0])
    plgpu.barrier_wait(bar.at[0])
    s0 = plgpu.load(st_s, layout=plgpu.Layout.WGMMA)

    def step(n, s):
        rows = pl.ds(n * c, c)
        loads = [(q_ref, q_s), (k_ref, k_s), (v_ref, v_s), (beta_ref, b_s)] + ([(g_ref, g_s)] if m.gated else [])
        for i, (src, dst) in enumerate(loads):
            plgpu.copy_gmem_to_smem(src.at[bh, rows], dst, bar.at[i])
        for i in range(len(loads)):
            plgpu.barrier_wait(bar.at[i])
        if save_states:
            st_s[...] = s
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(st_s, states_ref.at[bh, n])
        beta = plgpu.load(b_s, layout=ROW)
        g = plgpu.load(g_s, layout=ROW) if m.gated else None
        o, s_new = chunk_math.chunk_forward(q_s[...], k_s[...], v_s[...], beta, g, s, gm)
        o_s[...] = o.astype(o_s.dtype)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(o_s, o_ref.at[bh, rows])
        plgpu.wait_smem_to_gmem(0)  # o_s / st_s are rewritten next step
        return s_new

    s_fin = lax.fori_loop(0, num_chunks, step, s0)
    st_s[...] = s_fin
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(st_s, sfin_ref.at[bh])
    plgpu.wait_smem_to_gmem(0)


def _backward_kernel(*refs, m, keys, num_chunks):
    it = iter(refs)
    q_ref, k_ref, v_ref = next(it), next(it), next(it)
    g_ref = next(it) if m.gated else None
    beta_ref, states_ref, do_ref, dsfin_ref = next(it), next(it), next(it), next(it)
    dq_ref, dk_ref, dv_ref = next(it), next(it), next(it)
    dg_ref = next(it) if m.gated else None
    dbeta_ref, ds0_ref = next(it), next(it)
    bufs = {key: next(it) for key in keys}
    q_s, k_s, v_s, do_s, g_s, b_s, st_s, dq_s, dk_s, dv_s, vo_s, vec_s, bar = (next(it) for _ in range(13))
    bh = lax.axis_index("bh")
    gm = _GpuMath(m.gated, m.scale, m.mm_dtype, bufs=bufs, vec_smem=vec_s)
    c = CHUNK

    plgpu.copy_gmem_to_smem(dsfin_ref.at[bh], st_s, bar.at[0])
    plgpu.barrier_wait(bar.at[0])
    ds_fin = plgpu.load(st_s, layout=plgpu.Layout.WGMMA)

    def step(i, ds_next):
        n = num_chunks - 1 - i
        rows = pl.ds(n * c, c)
        loads = [(q_ref.at[bh, rows], q_s), (k_ref.at[bh, rows], k_s), (v_ref.at[bh, rows], v_s),
                 (do_ref.at[bh, rows], do_s), (beta_ref.at[bh, rows], b_s), (states_ref.at[bh, n], st_s)]
        if m.gated:
            loads.append((g_ref.at[bh, rows], g_s))
        for j, (src, dst) in enumerate(loads):
            plgpu.copy_gmem_to_smem(src, dst, bar.at[j])
        for j in range(len(loads)):
            plgpu.barrier_wait(bar.at[j])
        beta = plgpu.load(b_s, layout=ROW)
        g = plgpu.load(g_s, layout=ROW) if m.gated else None
        s = plgpu.load(st_s, layout=plgpu.Layout.WGMMA)
        dq, dk, dv, dbeta, dg, ds = chunk_math.chunk_backward(
            q_s[...], k_s[...], v_s[...], beta, g, s, do_s[...], ds_next, gm)
        outs = [(dq, dq_s, dq_ref.at[bh, rows]), (dk, dk_s, dk_ref.at[bh, rows]), (dv, dv_s, dv_ref.at[bh, rows])]
        for val, buf, dst in outs:
            buf[...] = val.astype(buf.dtype)
        vo_s[0] = dbeta
        if m.gated:
            vo_s[1] = dg
        plgpu.commit_smem()
        for _, buf, dst in outs:
            plgpu.copy_smem_to_gmem(buf, dst)
        plgpu.copy_smem_to_gmem(vo_s.at[0], dbeta_ref.at[bh, rows])
        if m.gated:
            plgpu.copy_smem_to_gmem(vo_s.at[1], dg_ref.at[bh, rows])
        plgpu.wait_smem_to_gmem(0)
        return ds

    ds0 = lax.fori_loop(0, num_chunks, step, ds_fin)
    st_s[...] = ds0
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(st_s, ds0_ref.at[bh])
    plgpu.wait_smem_to_gmem(0)


def _heads_first(x):
    """[B, T, H, ...] -> [B*H, T, ...] (one CTA per (batch, head) reads contiguous rows)."""
    x = jnp.swapaxes(x, 1, 2)
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def _heads_back(y, b, h):
    y = y.reshape(b, h, *y.shape[1:])
    return jnp.swapaxes(y, 1, 2)


def _call(body, args, out_shape, scratch, *, interpret, name):
    """One CTA per row of the leading (batch*heads) axis.

    The GPU interpreter runs one block per call, so under `interpret` the same kernel runs once per head.
    """
    bh = args[0].shape[0]
    params = plgpu.CompilerParams()
    if not interpret:
        return plgpu.kernel(body, out_type=out_shape, scratch_types=scratch, grid=(bh,), grid_names=("bh",),
                            compiler_params=params, kernel_name=name)(*args)
    per_head = [jax.ShapeDtypeStruct((1, *s.shape[1:]), s.dtype) for s in out_shape]
    outs = [plgpu.kernel(body, out_type=per_head, scratch_types=scratch, grid=(1,), grid_names=("bh",),
                         interpret=interpret, kernel_name=name)(*(a[i:i + 1] for a in args)) for i in range(bh)]
    return [jnp.concatenate(parts, axis=0) for parts in zip(*outs)]


def _forward(q, k, v, g, beta, s0, *, m, interpret, save_states):
    bsz, tp, heads, dk = q.shape
    dv = v.shape[-1]
    c, nc = CHUNK, tp // CHUNK
    keys = _operand_keys(m, c, dk, dv, backward=False)
    args = [_heads_first(q), _heads_first(k), _heads_first(v)] + ([_heads_first(g)] if m.gated else []) \
        + [_heads_first(beta), s0.reshape(bsz * heads, dk, dv)]
    out_shape = [jax.ShapeDtypeStruct((bsz * heads, tp, dv), v.dtype),
                 jax.ShapeDtypeStruct((bsz * heads, dk, dv), f32)]
    if save_states:
        out_shape.append(jax.ShapeDtypeStruct((bsz * heads, nc, dk, dv), f32))
    scratch = _scratch(keys, [plgpu.SMEM((c, dk), q.dtype), plgpu.SMEM((c, dk), k.dtype), plgpu.SMEM((c, dv), v.dtype),
                              plgpu.SMEM((c,), f32), plgpu.SMEM((c,), f32), plgpu.SMEM((c, dv), v.dtype),
                              plgpu.SMEM((dk, dv), f32), plgpu.SMEM((c,), f32), plgpu.Barrier(num_barriers=5)])
    body = functools.partial(_forward_kernel, m=m, keys=keys, save_states=save_states, num_chunks=nc)
    outs = _call(body, args, out_shape, scratch, interpret=interpret,
                 name="gated_delta_rule_fwd" if m.gated else "delta_rule_fwd")
    o = _heads_back(outs[0], bsz, heads)
    return o, outs[1].reshape(bsz, heads, dk, dv), (outs[2] if save_states else None)


def _backward(q, k, v, g, beta, states, do, ds_final, *, m, interpret):
    bsz, tp, heads, dk = q.shape
    dv = v.shape[-1]
    c, nc = CHUNK, tp // CHUNK
    keys = _operand_keys(m, c, dk, dv, backward=True)
    args = [_heads_first(q), _heads_first(k), _heads_first(v)] + ([_heads_first(g)] if m.gated else []) \
        + [_heads_first(beta), states, _heads_first(do.astype(v.dtype)), ds_final.reshape(bsz * heads, dk, dv)]
    bh = bsz * heads
    out_shape = [jax.ShapeDtypeStruct((bh, tp, dk), q.dtype), jax.ShapeDtypeStruct((bh, tp, dk), k.dtype),
                 jax.ShapeDtypeStruct((bh, tp, dv), v.dtype)] \
        + ([jax.ShapeDtypeStruct((bh, tp), f32)] if m.gated else []) \
        + [jax.ShapeDtypeStruct((bh, tp), f32), jax.ShapeDtypeStruct((bh, dk, dv), f32)]
    scratch = _scratch(keys, [
        plgpu.SMEM((c, dk), q.dtype), plgpu.SMEM((c, dk), k.dtype), plgpu.SMEM((c, dv), v.dtype),
        plgpu.SMEM((c, dv), v.dtype), plgpu.SMEM((c,), f32), plgpu.SMEM((c,), f32), plgpu.SMEM((dk, dv), f32),
        plgpu.SMEM((c, dk), q.dtype), plgpu.SMEM((c, dk), k.dtype), plgpu.SMEM((c, dv), v.dtype),
        plgpu.SMEM((2, c), f32), plgpu.SMEM((c,), f32), plgpu.Barrier(num_barriers=7)])
    body = functools.partial(_backward_kernel, m=m, keys=keys, num_chunks=nc)
    outs = iter(_call(body, args, out_shape, scratch, interpret=interpret,
                      name="gated_delta_rule_bwd" if m.gated else "delta_rule_bwd"))
    dq, dk_, dv_ = (_heads_back(next(outs), bsz, heads) for _ in range(3))
    dg = _heads_back(next(outs), bsz, heads) if m.gated else None
    dbeta = _heads_back(next(outs), bsz, heads)
    return dq, dk_, dv_, dg, dbeta, next(outs).reshape(bsz, heads, dk, dv)


@functools.lru_cache(maxsize=None)
def _pair(gated: bool, scale: float, dtype, interpret) -> vjp.KernelPair:
    m = chunk_math.ChunkMath(gated=gated, scale=scale, mm_dtype=jnp.dtype(dtype))
    return vjp.KernelPair(functools.partial(_forward, m=m, interpret=interpret),
                          functools.partial(_backward, m=m, interpret=interpret))


GPU_HEAD_DIMS = (64, 128)  # smaller head dims are zero-padded to 64 by vjp.run


def chunk_gated_delta_rule_gpu(q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=False,
                               chunk_size=CHUNK, interpret=None):
    """Gated delta rule on a Hopper GPU (g=None: the plain delta rule, decay math compiled out).

    interpret: None on the GPU; plgpu.InterpretGPUParams() runs the same kernels on CPU for tests.
    """
    make = lambda gated, sc, dt: _pair(gated, sc, dt, interpret)  # noqa: E731
    return vjp.run(make, q, k, v, g, beta, scale=scale, initial_state=initial_state,
                   output_final_state=output_final_state, chunk_size=chunk_size, head_dims=GPU_HEAD_DIMS)


def _is_hopper() -> bool:
    cc = getattr(jax.devices()[0], "compute_capability", None)  # "9.0" on H100/H200
    return cc is not None and str(cc).split(".")[0] == "9"  # wgmma is Hopper-only (Blackwell uses tcgen05)


@functools.lru_cache(maxsize=None)
def fits_smem(gated: bool, dk: int, dv: int, dtype) -> bool:
    m = chunk_math.ChunkMath(gated=gated, scale=1.0, mm_dtype=jnp.dtype(dtype))
    return all(_smem_bytes(_operand_keys(m, CHUNK, dk, dv, bwd), CHUNK, dk, dv, dtype, bwd) <= SMEM_BUDGET
               for bwd in (False, True))


def applies(q, k, v, g, beta, *, check_device=True, **kwargs) -> bool:
    if not vjp.applies(q, k, v, g, beta, head_dims=GPU_HEAD_DIMS, **kwargs):
        return False
    if check_device and not _is_hopper():
        return False
    dk, dv = (vjp.common.kernel_head_dim(d, GPU_HEAD_DIMS) for d in (q.shape[-1], v.shape[-1]))
    return fits_smem(g is not None, dk, dv, jnp.dtype(q.dtype))


register_kernel("gated_delta_rule", "gpu", chunk_gated_delta_rule_gpu, applies)
