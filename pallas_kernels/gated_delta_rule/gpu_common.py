"""Machinery shared by the Mosaic GPU (Hopper) delta-rule kernels of gpu_fused.py and gpu_chunked.py.

  * GpuMath: chunk_math's primitives on a warpgroup. Matmuls are wgmma with both operands stored to swizzled,
    tiled SMEM buffers (one per role, shape and dtype, sized by a dry run of the chunk math: record_operand_keys);
    transposes are SMEM views, never register shuffles. fp32 operands run as three bf16 wgmmas on a hi/lo split
    (tf32 wgmma takes no transposed views and keeps 10 mantissa bits). Per-time vecs are 1-D arrays in the
    WGMMA row layout; where one must run along the other axis it is re-laid out through a small SMEM buffer.
  * Value blocks: the recurrence is separable along the value axis (each column block of S evolves on its own,
    given the chunk's k, beta, g), so Dv is split into blocks of VALUE_BLOCK columns, one CTA per (batch, head,
    value block). The backward is linear in the per-block adjoints: each CTA writes partial dq, dk, dbeta, dg
    (sum_blocks adds them outside the kernel) and its own dv and dS columns.
  * OpSlices: a CTA's strided windows into the op layout [B, T, H, D] (TMA reads and writes q, k, v, o and the
    gradients in place); layout helpers for the per-time vectors and states, and launch().
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.common import f32
from pallas_kernels.gated_delta_rule import chunk_math

CHUNK = 64
VALUE_BLOCK = 64  # value columns per CTA (Dv is split into Dv / VALUE_BLOCK blocks)
SMEM_BUDGET = 216 * 1024  # our estimate of dynamic SMEM (H100/H200 allow 227 KiB a CTA; estimates run ~3 KiB low)
ROW = plgpu.Layout.WGMMA.reduce(1)  # a vec indexed by the row of a WGMMA-layout matrix
COL = plgpu.Layout.WGMMA.reduce(0)  # a vec indexed by its column


def mma_transforms(dtype, minor: int):
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
            self.keys.update(physical_keys(role, tuple(x.shape), dtype))
        return super().dot(a, b, ta=ta, tb=tb, dtype=dtype)


def physical_keys(role: str, shape: tuple, dtype) -> list:
    """The bf16 SMEM buffers one wgmma operand takes: fp32 operands are split into a hi and a lo bf16 part."""
    if jnp.dtype(dtype) == f32:
        return [(role, shape, "bfloat16"), (role + "_lo", shape, "bfloat16")]
    return [(role, shape, jnp.dtype(dtype).name)]


def record_operand_keys(m: chunk_math.ChunkMath, fn, *structs) -> list:
    """The SMEM operand buffers fn(*arrays, math) needs, from a dry run (jax.eval_shape) on these shapes."""
    keys: set = set()
    rec = _Recorder(m, keys)
    jax.eval_shape(lambda *a: fn(*a, rec), *structs)
    return tuple(sorted(keys))


def operand_bytes(keys) -> int:
    return sum(r * k * jnp.dtype(d).itemsize for _, (r, k), d in keys)


@dataclasses.dataclass(frozen=True)
class GpuMath(chunk_math.ChunkMath):
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
            bufs = [self.bufs[key] for key in physical_keys(role, tuple(x.shape), dtype)]
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
        """vec re-laid out through SMEM. Threads read what other threads wrote, so a warpgroup barrier (part of
        commit_smem) goes before the store (the previous relayout's reads are done) and after it (the writes are
        visible); the GPU interpreter would not notice their absence, the hardware would."""
        plgpu.commit_smem()
        self.vec_smem[...] = vec
        plgpu.commit_smem()
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


def scratch(keys, extra):
    bufs = [plgpu.SMEM(shape, jnp.dtype(d), transforms=mma_transforms(d, shape[1])) for _, shape, d in keys]
    return bufs + extra


class OpSlices:
    """One CTA's windows into arrays in the op layout [B, T, H, D], read and written in place by TMA.

    A head's rows of a time window are H*D elements apart in that layout; TMA takes the stride, so q, k, v, dO
    come in and o, dq, dk, dv go out without XLA transposing them to or from a head-major layout (each such
    copy reads and writes a whole [B, T, H, D] tensor: about 22 us at B8 T2048 H8 D128 bf16 on an H100, against
    a forward + backward of about 1.5 ms). Only the small per-time vectors (beta, g: the time axis is not
    contiguous there) and the kernels' own intermediates keep a row-per-CTA layout; states in and out are read and
    written in place too ([B, H, Dk, Dv]).

    bh: the (batch, head) row; j: the value block (a traced or static index); blocks: value blocks per head.
    row: the CTA's row of the per-value-block arrays (B*H*blocks rows; bh when there is one block).
    """

    def __init__(self, bh, heads: int, blocks: int, j=0, row=None):
        self.bh, self.row = bh, (bh if row is None else row)
        self.b, self.h = lax.div(bh, heads), lax.rem(bh, heads)
        self.blocks, self.j = blocks, j

    @classmethod
    def of_cta(cls, heads: int, blocks: int) -> "OpSlices":
        """This CTA's, on the per-value-block grid (axis "bh": batch*heads*blocks rows)."""
        row = lax.axis_index("bh")
        if blocks == 1:
            return cls(row, heads, 1)
        return cls(lax.div(row, blocks), heads, blocks, lax.rem(row, blocks), row)

    def head(self, ref, rows):
        """q-like [B, T, H, Dk] -> this head's [rows, Dk]."""
        return ref.at[self.b, rows, self.h]

    def value(self, ref, rows, j=None):
        """v-like [B, T, H, Dv] -> value block j's columns [rows, Dv / blocks] (default: this CTA's block)."""
        bv = ref.shape[-1] // self.blocks
        j = self.j if j is None else j
        return ref.at[self.b, rows, self.h, pl.ds(j * bv, bv)]

    def state(self, ref):
        """A state [B, H, Dk, Dv] (fp32) -> this CTA's value-block columns [Dk, Dv / blocks]."""
        bv = ref.shape[-1] // self.blocks
        return ref.at[self.b, self.h, :, pl.ds(self.j * bv, bv)]

    def partial(self, ref, rows):
        """Per-value-block partial gradients [blocks, B, T, H, Dk] -> this CTA's [rows, Dk]."""
        return ref.at[self.j, self.b, rows, self.h]


def partials_shape(x, blocks: int) -> jax.ShapeDtypeStruct:
    """Per-value-block partial gradients of a q-like x [B, T, H, D]: [blocks, B, T, H, D] (see OpSlices.partial)."""
    return jax.ShapeDtypeStruct((blocks, *x.shape), x.dtype)


def sum_partials(y):
    """[blocks, B, T, H, D] partials -> their sum (fp32 when there is more than one; one block is taken as is)."""
    return y[0] if y.shape[0] == 1 else y.astype(f32).sum(axis=0)


def store_tiles(outs):
    """(value, SMEM tile, global destination) triples: registers -> tiles -> TMA out, then wait for the copies."""
    for val, buf, _ in outs:
        buf[...] = val.astype(buf.dtype)
    plgpu.commit_smem()
    for _, buf, dst in outs:
        plgpu.copy_smem_to_gmem(buf, dst)
    plgpu.wait_smem_to_gmem(0)


def heads_first(x):
    """Per-time vectors [B, T, H] -> [B*H, T] (one CTA per (batch, head) reads contiguous rows)."""
    x = jnp.swapaxes(x, 1, 2)
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def row_vectors(g, beta):
    """(g or None, beta) in the kernels' row layout [B*H, Tp]: in the op layout a head's time steps are H apart,
    which TMA cannot read as a vector. (q, k, v, dO stay in the op layout: OpSlices.)"""
    return (heads_first(g) if g is not None else None), heads_first(beta)


def sum_blocks(y, b, h):
    """Per-value-block partial vectors [B*H*blocks, T] -> their fp32 sum in the op layout [B, T, H]."""
    y = y.reshape(b, h, y.shape[0] // (b * h), y.shape[1]).astype(f32).sum(axis=2)
    return jnp.swapaxes(y, 1, 2)


def value_blocks(dv: int) -> int:
    return max(1, dv // VALUE_BLOCK)


def kernel_name(m, stage: str, dk: int, bv: int, dtype) -> str:
    """A launch name that says the configuration (`gated_delta_rule_grads_k128_v64_bfloat16`): profiler traces and
    ptxas reports (bench/ptxas_report.py) then tell the kernels of one run apart."""
    return f"{'gated_' if m.gated else ''}delta_rule_{stage}_k{dk}_v{bv}_{jnp.dtype(dtype).name}"


def launch(body, args, out_shape, scratch, *, grid, interpret, name):
    """plgpu.kernel over `grid` (axes named "bh" and, for a 2-D grid, "n"); the same under the GPU interpreter."""
    names = ("bh", "n")[:len(grid)]
    kw = dict(interpret=interpret) if interpret else dict(compiler_params=plgpu.CompilerParams())
    return plgpu.kernel(body, out_type=out_shape, scratch_types=scratch, grid=grid, grid_names=names,
                        kernel_name=name, **kw)(*args)
