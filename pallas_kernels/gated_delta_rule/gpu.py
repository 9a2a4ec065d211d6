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

Value blocks: the recurrence is separable along the value axis (each column block of S evolves on its own,
given the chunk's k, beta, g), so Dv is split into blocks of VALUE_BLOCK columns, one CTA per (batch, head,
value block). Every CTA recomputes the Dk-side chunk quantities (K K^T, the triangular inverse, W); the
backward is linear in the per-block adjoints, so each CTA writes partial dq, dk, dbeta, dg that are summed
outside the kernel, and its own dv and dS0 columns. D = 128 thus runs as two [128, 64] state blocks: half the
state registers and more CTAs for the SMs (B8 H8 gives 128 CTAs instead of 64).

Limits: all SMEM buffers must fit SMEM_BUDGET (`applies` sizes them; output tiles reuse the input staging
buffers): bf16 fits Dk <= 128 with 64-column value blocks (about 169 KiB forward, 177 KiB backward at
Dk = 128); fp32 fits Dk = 64 only, larger fp32 heads fall back to XLA.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from aira_jax.ops.dispatch import register_kernel
from pallas_kernels import common
from pallas_kernels.gated_delta_rule import chunk_math, vjp
from pallas_kernels.common import f32

CHUNK = 64
VALUE_BLOCK = 64  # value columns per CTA (Dv is split into Dv / VALUE_BLOCK blocks)
SMEM_BUDGET = 216 * 1024  # our estimate of dynamic SMEM (H100/H200 allow 227 KiB a CTA; estimates run ~3 KiB low)
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
        for role, x in (("lhs", a), ("rhs", b)):
            self.keys.update(_physical_keys(role, tuple(x.shape), dtype))
        return super().dot(a, b, ta=ta, tb=tb, dtype=dtype)


def _physical_keys(role: str, shape: tuple, dtype) -> list:
    """The bf16 SMEM buffers one wgmma operand takes: fp32 operands are split into a hi and a lo bf16 part."""
    if jnp.dtype(dtype) == f32:
        return [(role, shape, "bfloat16"), (role + "_lo", shape, "bfloat16")]
    return [(role, shape, jnp.dtype(dtype).name)]


def record_operand_keys(m: chunk_math.ChunkMath, fn, *structs) -> list:
    """The SMEM operand buffers fn(*arrays, math) needs, from a dry run (jax.eval_shape) on these shapes."""
    keys: set = set()
    rec = _Recorder(m, keys)
    jax.eval_shape(lambda *a: fn(*a, rec), *structs)
    return sorted(keys)


def _operand_keys(m: chunk_math.ChunkMath, c: int, dk: int, dv: int, backward: bool) -> list:
    mat = lambda r, k: jax.ShapeDtypeStruct((r, k), f32)  # noqa: E731
    vec = jax.ShapeDtypeStruct((c, 1), f32)
    args = [mat(c, dk), mat(c, dk), mat(c, dv), vec, vec if m.gated else None, mat(dk, dv)]
    if backward:
        return record_operand_keys(m, chunk_math.chunk_backward, *args, mat(c, dv), mat(dk, dv))
    return record_operand_keys(m, chunk_math.chunk_forward, *args)


def operand_bytes(keys) -> int:
    return sum(r * k * jnp.dtype(d).itemsize for _, (r, k), d in keys)


def _smem_bytes(keys, c, dk, dv, in_dtype, backward: bool) -> int:
    """Operand buffers plus the staging tiles _forward / _backward allocate: q, k, v (+ do); outputs reuse them."""
    operand = operand_bytes(keys)
    tiles = 2 * c * dk + (2 if backward else 1) * c * dv
    return operand + tiles * jnp.dtype(in_dtype).itemsize + dk * dv * 4 + 5 * c * 4


@dataclasses.dataclass(frozen=True)
class _GpuMath(chunk_math.ChunkMath):
    """chunk_math primitives for a Mosaic GPU warpgroup: wgmma through SMEM, 1-D vecs in the ROW layout."""
    bufs: Any = dataclasses.field(default=None, compare=False)
    vec_smem: Any = dataclasses.field(default=None, compare=False)

    def dot(self, a, b, *, ta=False, tb=False, dtype=f32):
        """a @ b (a^T if ta, b^T if tb: transposed SMEM views, never register shuffles), fp32 accumulation.

        fp32 operands are not run as tf32: tf32 wgmma takes only K-major operands (no transposed views) and
        keeps 10 mantissa bits. Each fp32 operand is split into bf16 hi + lo parts and three bf16 wgmmas
        accumulate hi·hi + hi·lo + lo·hi (about 16 bits, ~1e-5 relative), issued back to back.
        """
        m = a.shape[1] if ta else a.shape[0]
        n = b.shape[0] if tb else b.shape[1]
        parts = []
        for role, x in (("lhs", a), ("rhs", b)):
            bufs = [self.bufs[key] for key in _physical_keys(role, tuple(x.shape), dtype)]
            if len(bufs) == 1:
                bufs[0][...] = x.astype(bufs[0].dtype)
            else:
                x = x.astype(f32)
                hi = x.astype(jnp.bfloat16)
                bufs[0][...] = hi
                bufs[1][...] = (x - hi.astype(f32)).astype(jnp.bfloat16)
            parts.append(bufs)
        plgpu.commit_smem()  # make the register stores visible to the async (wgmma) proxy
        view = lambda ref, t: ref.T if t else ref  # noqa: E731
        (a_hi, *a_lo), (b_hi, *b_lo) = parts
        pairs = [(a_hi, b_hi)] + ([(a_hi, b_lo[0]), (a_lo[0], b_hi)] if a_lo else [])

        def run(acc):
            for x_s, y_s in pairs:
                plgpu.wgmma(acc, view(x_s, ta), view(y_s, tb))
            return acc[...]  # reading the accumulator waits for the wgmmas, so the buffers are free again

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


def _program_ids(blocks: int):
    """(row of the per-value-block arrays, row of the per-head arrays q, k, g, beta) of this CTA."""
    bhv = lax.axis_index("bh")
    return bhv, (bhv if blocks == 1 else lax.div(bhv, blocks))


def _forward_kernel(*refs, m, keys, save_states, num_chunks, blocks):
    it = iter(refs)
    q_ref, k_ref, v_ref = next(it), next(it), next(it)
    g_ref = next(it) if m.gated else None
    beta_ref, s0_ref = next(it), next(it)
    o_ref, sfin_ref = next(it), next(it)
    states_ref = next(it) if save_states else None
    bufs = {key: next(it) for key in keys}
    q_s, k_s, v_s, g_s, b_s, st_s, vec_s, bar = (next(it) for _ in range(8))
    o_s = v_s  # v is in registers once the chunk math has started: its tile stages the output
    bhv, bh = _program_ids(blocks)
    gm = _GpuMath(m.gated, m.scale, m.mm_dtype, bufs=bufs, vec_smem=vec_s)
    c = CHUNK

    plgpu.copy_gmem_to_smem(s0_ref.at[bhv], st_s, bar.at[0])
    plgpu.barrier_wait(bar.at[0])
    s0 = plgpu.load(st_s, layout=plgpu.Layout.WGMMA)

    def step(n, s):
        rows = pl.ds(n * c, c)
        loads = [(q_ref.at[bh, rows], q_s), (k_ref.at[bh, rows], k_s), (v_ref.at[bhv, rows], v_s),
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
        o, s_new = chunk_math.chunk_forward(q_s[...], k_s[...], v_s[...], beta, g, s, gm)
        o_s[...] = o.astype(o_s.dtype)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(o_s, o_ref.at[bhv, rows])
        plgpu.wait_smem_to_gmem(0)  # v_s (o) / st_s are refilled next step
        return s_new

    s_fin = lax.fori_loop(0, num_chunks, step, s0)
    st_s[...] = s_fin
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(st_s, sfin_ref.at[bhv])
    plgpu.wait_smem_to_gmem(0)


def _backward_kernel(*refs, m, keys, num_chunks, blocks):
    it = iter(refs)
    q_ref, k_ref, v_ref = next(it), next(it), next(it)
    g_ref = next(it) if m.gated else None
    beta_ref, states_ref, do_ref, dsfin_ref = next(it), next(it), next(it), next(it)
    dq_ref, dk_ref, dv_ref = next(it), next(it), next(it)
    dg_ref = next(it) if m.gated else None
    dbeta_ref, ds0_ref = next(it), next(it)
    bufs = {key: next(it) for key in keys}
    q_s, k_s, v_s, do_s, g_s, b_s, st_s, vo_s, vec_s, bar = (next(it) for _ in range(10))
    dq_s, dk_s, dv_s = q_s, k_s, v_s  # the inputs are in registers once the chunk math runs: reuse their tiles
    bhv, bh = _program_ids(blocks)
    gm = _GpuMath(m.gated, m.scale, m.mm_dtype, bufs=bufs, vec_smem=vec_s)
    c = CHUNK

    plgpu.copy_gmem_to_smem(dsfin_ref.at[bhv], st_s, bar.at[0])
    plgpu.barrier_wait(bar.at[0])
    ds_fin = plgpu.load(st_s, layout=plgpu.Layout.WGMMA)

    def step(i, ds_next):
        n = num_chunks - 1 - i
        rows = pl.ds(n * c, c)
        loads = [(q_ref.at[bh, rows], q_s), (k_ref.at[bh, rows], k_s), (v_ref.at[bhv, rows], v_s),
                 (do_ref.at[bhv, rows], do_s), (beta_ref.at[bh, rows], b_s), (states_ref.at[bhv, n], st_s)]
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
        store_tiles([(dq, dq_s, dq_ref.at[bhv, rows]), (dk, dk_s, dk_ref.at[bhv, rows]),
                     (dv, dv_s, dv_ref.at[bhv, rows]), (dbeta, vo_s.at[0], dbeta_ref.at[bhv, rows])]
                    + ([(dg, vo_s.at[1], dg_ref.at[bhv, rows])] if m.gated else []))
        return ds

    ds0 = lax.fori_loop(0, num_chunks, step, ds_fin)
    st_s[...] = ds0
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(st_s, ds0_ref.at[bhv])
    plgpu.wait_smem_to_gmem(0)


def store_tiles(outs):
    """(value, SMEM tile, global destination) triples: registers -> tiles -> TMA out, then wait for the copies."""
    for val, buf, _ in outs:
        buf[...] = val.astype(buf.dtype)
    plgpu.commit_smem()
    for _, buf, dst in outs:
        plgpu.copy_smem_to_gmem(buf, dst)
    plgpu.wait_smem_to_gmem(0)


def _heads_first(x):
    """[B, T, H, ...] -> [B*H, T, ...] (one CTA per (batch, head) reads contiguous rows)."""
    x = jnp.swapaxes(x, 1, 2)
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def _heads_back(y, b, h):
    y = y.reshape(b, h, *y.shape[1:])
    return jnp.swapaxes(y, 1, 2)


def _values_first(x, blocks: int):
    """v-like [B, T, H, Dv] -> [B*H*blocks, T, Dv/blocks]: one row per (batch, head, value block)."""
    b, t, h, dv = x.shape
    x = x.reshape(b, t, h, blocks, dv // blocks).transpose(0, 2, 3, 1, 4)
    return x.reshape(b * h * blocks, t, dv // blocks)


def _values_back(y, b, h):
    """Inverse of _values_first: [B*H*blocks, T, Dv/blocks] -> [B, T, H, Dv]."""
    blocks = y.shape[0] // (b * h)
    y = y.reshape(b, h, blocks, y.shape[1], y.shape[2]).transpose(0, 3, 1, 2, 4)
    return y.reshape(b, y.shape[1], h, blocks * y.shape[4])


def _state_first(s, blocks: int):
    """[B, H, Dk, Dv] -> [B*H*blocks, Dk, Dv/blocks]."""
    b, h, dk, dv = s.shape
    s = s.reshape(b, h, dk, blocks, dv // blocks).transpose(0, 1, 3, 2, 4)
    return s.reshape(b * h * blocks, dk, dv // blocks)


def _state_back(y, b, h):
    blocks = y.shape[0] // (b * h)
    y = y.reshape(b, h, blocks, y.shape[1], y.shape[2]).transpose(0, 1, 3, 2, 4)
    return y.reshape(b, h, y.shape[2], blocks * y.shape[4])


def _sum_blocks(y, b, h):
    """Partial gradients [B*H*blocks, T, ...] of the value blocks -> their fp32 sum in the op layout [B, T, H, ...]."""
    y = y.reshape(b * h, y.shape[0] // (b * h), *y.shape[1:]).astype(f32).sum(axis=1)
    return _heads_back(y, b, h)


def value_blocks(dv: int) -> int:
    return max(1, dv // VALUE_BLOCK)


def _call(body, args, out_shape, scratch, *, interpret, name):
    """One CTA per row of the outputs' leading (batch*heads*value blocks) axis; the same under the interpreter."""
    rows = out_shape[0].shape[0]
    kw = dict(interpret=interpret) if interpret else dict(compiler_params=plgpu.CompilerParams())
    return plgpu.kernel(body, out_type=out_shape, scratch_types=scratch, grid=(rows,), grid_names=("bh",),
                        kernel_name=name, **kw)(*args)


def _forward(q, k, v, g, beta, s0, *, m, interpret, save_states):
    bsz, tp, heads, dk = q.shape
    blocks = value_blocks(v.shape[-1])
    dv = v.shape[-1] // blocks  # columns per CTA
    c, nc, rows = CHUNK, tp // CHUNK, bsz * heads * blocks
    keys = _operand_keys(m, c, dk, dv, backward=False)
    per_head = [_heads_first(q), _heads_first(k)] + ([_heads_first(g)] if m.gated else []) + [_heads_first(beta)]
    args = per_head[:2] + [_values_first(v, blocks)] + per_head[2:] + [_state_first(s0, blocks)]
    out_shape = [jax.ShapeDtypeStruct((rows, tp, dv), v.dtype), jax.ShapeDtypeStruct((rows, dk, dv), f32)]
    if save_states:
        out_shape.append(jax.ShapeDtypeStruct((rows, nc, dk, dv), f32))
    scratch = _scratch(keys, [plgpu.SMEM((c, dk), q.dtype), plgpu.SMEM((c, dk), k.dtype), plgpu.SMEM((c, dv), v.dtype),
                              plgpu.SMEM((c,), f32), plgpu.SMEM((c,), f32), plgpu.SMEM((dk, dv), f32),
                              plgpu.SMEM((c,), f32), plgpu.Barrier(num_barriers=5)])
    body = functools.partial(_forward_kernel, m=m, keys=keys, save_states=save_states, num_chunks=nc, blocks=blocks)
    outs = _call(body, args, out_shape, scratch, interpret=interpret,
                 name="gated_delta_rule_fwd" if m.gated else "delta_rule_fwd")
    o = _values_back(outs[0], bsz, heads)
    return o, _state_back(outs[1], bsz, heads), (outs[2] if save_states else None)


def _backward(q, k, v, g, beta, states, do, ds_final, *, m, interpret):
    bsz, tp, heads, dk = q.shape
    blocks = value_blocks(v.shape[-1])
    dv = v.shape[-1] // blocks
    c, nc, rows = CHUNK, tp // CHUNK, bsz * heads * blocks
    keys = _operand_keys(m, c, dk, dv, backward=True)
    per_head = [_heads_first(q), _heads_first(k)] + ([_heads_first(g)] if m.gated else []) + [_heads_first(beta)]
    args = per_head[:2] + [_values_first(v, blocks)] + per_head[2:] \
        + [states, _values_first(do.astype(v.dtype), blocks), _state_first(ds_final, blocks)]
    # With value blocks, dq, dk, dg, dbeta are per-block partials (summed below in fp32).
    out_shape = [jax.ShapeDtypeStruct((rows, tp, dk), q.dtype), jax.ShapeDtypeStruct((rows, tp, dk), k.dtype),
                 jax.ShapeDtypeStruct((rows, tp, dv), v.dtype)] \
        + ([jax.ShapeDtypeStruct((rows, tp), f32)] if m.gated else []) \
        + [jax.ShapeDtypeStruct((rows, tp), f32), jax.ShapeDtypeStruct((rows, dk, dv), f32)]
    scratch = _scratch(keys, [
        plgpu.SMEM((c, dk), q.dtype), plgpu.SMEM((c, dk), k.dtype), plgpu.SMEM((c, dv), v.dtype),
        plgpu.SMEM((c, dv), v.dtype), plgpu.SMEM((c,), f32), plgpu.SMEM((c,), f32), plgpu.SMEM((dk, dv), f32),
        plgpu.SMEM((2, c), f32), plgpu.SMEM((c,), f32), plgpu.Barrier(num_barriers=7)])
    body = functools.partial(_backward_kernel, m=m, keys=keys, num_chunks=nc, blocks=blocks)
    outs = iter(_call(body, args, out_shape, scratch, interpret=interpret,
                      name="gated_delta_rule_bwd" if m.gated else "delta_rule_bwd"))
    dq, dk_ = (_sum_blocks(next(outs), bsz, heads) for _ in range(2))
    dv_ = _values_back(next(outs), bsz, heads)
    dg = _sum_blocks(next(outs), bsz, heads) if m.gated else None
    dbeta = _sum_blocks(next(outs), bsz, heads)
    return dq, dk_, dv_, dg, dbeta, _state_back(next(outs), bsz, heads)


@functools.lru_cache(maxsize=None)
def _pair(gated: bool, scale: float, dtype, interpret, scheme: str) -> vjp.KernelPair:
    m = chunk_math.ChunkMath(gated=gated, scale=scale, mm_dtype=jnp.dtype(dtype))
    if scheme == "chunked":
        from pallas_kernels.gated_delta_rule import gpu_chunked  # imports this module: loaded on first use
        fwd, bwd = gpu_chunked._forward, gpu_chunked._backward
    else:
        fwd, bwd = _forward, _backward
    return vjp.KernelPair(functools.partial(fwd, m=m, interpret=interpret),
                          functools.partial(bwd, m=m, interpret=interpret))


GPU_HEAD_DIMS = (64, 128)  # smaller head dims are zero-padded to 64 by vjp.run
SCHEMES = ("chunked", "fused")
# "chunked" (gpu_chunked.py): only the state recurrence is sequential, the rest runs one CTA per (head, chunk).
# "fused" (this file): one sweep per head does everything; fewer launches, longer sequential path.
DEFAULT_SCHEME = os.environ.get("AIRA_GPU_DELTA_SCHEME", "chunked")


def chunk_gated_delta_rule_gpu(q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=False,
                               chunk_size=CHUNK, interpret=None, scheme=None):
    """Gated delta rule on a Hopper GPU (g=None: the plain delta rule, decay math compiled out).

    interpret: None on the GPU; plgpu.InterpretGPUParams() runs the same kernels on CPU for tests.
    scheme: "chunked" or "fused" (default DEFAULT_SCHEME, set by the AIRA_GPU_DELTA_SCHEME environment variable).
    """
    scheme = scheme or DEFAULT_SCHEME
    if scheme not in SCHEMES:
        raise ValueError(f"delta rule GPU kernel: unknown scheme {scheme!r}; choose from {SCHEMES} "
                         "(AIRA_GPU_DELTA_SCHEME)")
    make = lambda gated, sc, dt: _pair(gated, sc, dt, interpret, scheme)  # noqa: E731
    return vjp.run(make, q, k, v, g, beta, scale=scale, initial_state=initial_state,
                   output_final_state=output_final_state, chunk_size=chunk_size, head_dims=GPU_HEAD_DIMS)


@functools.lru_cache(maxsize=None)
def fits_smem(gated: bool, dk: int, dv: int, dtype, scheme: str | None = None) -> bool:
    """Whether the scheme's kernels' SMEM for head dims (dk, dv) fits SMEM_BUDGET (per value block)."""
    if (scheme or DEFAULT_SCHEME) == "chunked":
        from pallas_kernels.gated_delta_rule import gpu_chunked
        return gpu_chunked.fits_smem(gated, dk, dv, dtype)
    m = chunk_math.ChunkMath(gated=gated, scale=1.0, mm_dtype=jnp.dtype(dtype))
    dv = dv // value_blocks(dv)
    return all(_smem_bytes(_operand_keys(m, CHUNK, dk, dv, bwd), CHUNK, dk, dv, dtype, bwd) <= SMEM_BUDGET
               for bwd in (False, True))


def applies(q, k, v, g, beta, *, check_device=True, **kwargs) -> bool:
    if not vjp.applies(q, k, v, g, beta, head_dims=GPU_HEAD_DIMS, **kwargs):
        return False
    if check_device and not common.is_hopper():
        return False
    dk, dv = (vjp.common.kernel_head_dim(d, GPU_HEAD_DIMS) for d in (q.shape[-1], v.shape[-1]))
    return fits_smem(g is not None, dk, dv, jnp.dtype(q.dtype))


register_kernel("gated_delta_rule", "gpu", chunk_gated_delta_rule_gpu, applies)
