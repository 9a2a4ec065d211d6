"""Chunk-parallel Mosaic GPU scheme for the (gated) delta rule: only the state recurrence runs in chunk order.

The fused scheme (gpu_fused.py) walks the chunks of a head in order and does all of a chunk's work on the way, so
the triangular inverse (about twenty dependent matmuls) sits on the sequential path and a long sequence with
few heads leaves most SMs idle. Here that work moves into kernels with one CTA per (head, chunk):

  forward   wu      grid (B*H, N)         W, U' (per value block) and T = (I + A)^-1 of every chunk
            states  grid (B*H*blocks,)    S_{n+1} = gamma_C S_n + Kd^T (U' - W S_n): two wgmmas a chunk, in
                                          order (the next chunk's tiles load meanwhile); writes the state
                                          entering every chunk
            output  grid (B*H*blocks, N)  o = (scale gamma Q) S_n + P (U' - W S_n), every chunk at once
  backward  dstates grid (B*H*blocks,)    dS in reverse order: dU = Kd dS' + P^T dO, dS = gamma_C dS'
                                          + Qs^T dO - W^T dU (no inverse); writes dS leaving every chunk
            grads   grid (B*H*blocks, N)  chunk_backward of every chunk from (S_n, dS_{n+1}, T) at once: partial
                                          dq, dk, dbeta, dg per value block (summed outside), dv

W (in the input dtype) and T (fp32, [C, C] per chunk: the size of one more [C, 128] bf16 tensor) are kept from the
forward for the backward with the per-chunk start states (fp32), so the backward never inverts again: the
inverse is the longest dependent chain of a chunk's math (19 dependent fp32 matmuls), and at Dv = 128 the grads
kernel would otherwise redo it in each of the two value-block CTAs. (flash-linear-attention keeps its inverse
for the backward too.) The math is chunk_math.py's chunk-parallel functions; the wgmma, vec
and value-block machinery is gpu_common.py's.
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

CHUNK = gc.CHUNK
ROW = gc.ROW
WGMMA = plgpu.Layout.WGMMA


def _loader(bar):
    """Issue TMA copies (src ref slice -> SMEM) on barriers 0, 1, ... and wait for all of them."""
    def load(pairs):
        for i, (src, dst) in enumerate(pairs):
            plgpu.copy_gmem_to_smem(src, dst, bar.at[i])
        for i in range(len(pairs)):
            plgpu.barrier_wait(bar.at[i])
    return load


def _vecs(m, b_s, g_s):
    return plgpu.load(b_s, layout=ROW) if b_s is not None else None, \
        plgpu.load(g_s, layout=ROW) if m.gated else None


# ------------------------------------------------------------------------------------------------ kernels
def _wu_kernel(*refs, m, keys, heads, blocks, keep_t):
    it = iter(refs)
    k_ref, v_ref, beta_ref = next(it), next(it), next(it)
    g_ref = next(it) if m.gated else None
    w_ref, uf_ref = next(it), next(it)
    t_ref = next(it) if keep_t else None
    bufs = {key: next(it) for key in keys}
    k_s, b_s, g_s, vec_s, bar = (next(it) for _ in range(5))
    v_bufs = [next(it) for _ in range(blocks)]
    t_s = next(it) if keep_t else None
    bh, n = lax.axis_index("bh"), lax.axis_index("n")
    rows = pl.ds(n * CHUNK, CHUNK)
    op = gc.OpSlices(bh, heads, blocks)
    gm = gc.GpuMath(m.gated, m.scale, m.mm_dtype, bufs=bufs, vec_smem=vec_s)
    _loader(bar)([(op.head(k_ref, rows), k_s), (beta_ref.at[bh, rows], b_s)]
                 + [(op.value(v_ref, rows, j), v_bufs[j]) for j in range(blocks)]
                 + ([(g_ref.at[bh, rows], g_s)] if m.gated else []))
    beta, g = _vecs(m, b_s, g_s)
    vs = [buf[...] for buf in v_bufs]  # in registers before the tiles are reused for U'
    w, us, t = chunk_math.chunk_wu(k_s[...], vs, beta, g, gm)
    gc.store_tiles([(w, k_s, w_ref.at[bh, rows])] + ([(t, t_s, t_ref.at[bh, rows])] if keep_t else [])
                   + [(u, v_bufs[j], uf_ref.at[bh * blocks + j, rows]) for j, u in enumerate(us)])


class _Prefetch:
    """Double-buffered TMA loads for the sequential kernels: chunk n's tiles sit in slot n % 2 while chunk n+1's
    are already on their way into the other slot (one barrier per slot and operand).

    srcs(n) -> the global ref slices of chunk n, in the order of `bufs` (each buf is [2, ...]: one per slot).
    """

    def __init__(self, srcs, bufs, bar):
        self.srcs, self.bufs, self.bar = srcs, bufs, bar

    def issue(self, n, slot):
        for i, (src, buf) in enumerate(zip(self.srcs(n), self.bufs)):
            plgpu.copy_gmem_to_smem(src, buf.at[slot], self.bar.at[slot * len(self.bufs) + i])

    def wait(self, slot):
        for i in range(len(self.bufs)):
            plgpu.barrier_wait(self.bar.at[slot * len(self.bufs) + i])
        return [buf.at[slot] for buf in self.bufs]


def _sequential(num_chunks, reverse, pre: _Prefetch, body, init):
    """fori_loop over the chunks (in reverse for the backward) with chunk i+1's loads issued before chunk i's math.

    body(n, tiles, carry) -> carry, where tiles are this chunk's SMEM slot views.
    """
    chunk = (lambda i: num_chunks - 1 - i) if reverse else (lambda i: i)  # noqa: E731
    pre.issue(chunk(0), 0)

    def step(i, carry):
        slot = lax.rem(i, 2)
        tiles = pre.wait(slot)

        @pl.when(i + 1 < num_chunks)
        def _():
            pre.issue(chunk(i + 1), 1 - slot)

        return body(chunk(i), tiles, carry)

    return lax.fori_loop(0, num_chunks, step, init)


def _states_kernel(*refs, m, keys, heads, blocks, num_chunks):
    it = iter(refs)
    k_ref, w_ref, uf_ref = next(it), next(it), next(it)
    g_ref = next(it) if m.gated else None
    s0_ref, states_ref, sfin_ref = next(it), next(it), next(it)
    bufs = {key: next(it) for key in keys}
    k_s, w_s, u_s, g_s, st_s, vec_s, bar0, bar = (next(it) for _ in range(8))
    op = gc.OpSlices.of_cta(heads, blocks)
    bhv, bh = op.row, op.bh
    gm = gc.GpuMath(m.gated, m.scale, m.mm_dtype, bufs=bufs, vec_smem=vec_s)
    _loader(bar0)([(op.state(s0_ref), st_s)])
    s0 = plgpu.load(st_s, layout=WGMMA)

    def srcs(n):
        rows = pl.ds(n * CHUNK, CHUNK)
        return [op.head(k_ref, rows), w_ref.at[bh, rows], uf_ref.at[bhv, rows]] \
            + ([g_ref.at[bh, rows]] if m.gated else [])

    def body(n, tiles, s):
        plgpu.wait_smem_to_gmem(0)  # the previous state's copy out of st_s is done before it is rewritten
        st_s[...] = s
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(st_s, states_ref.at[bhv, n])  # the state entering chunk n; overlaps the math
        g = plgpu.load(tiles[3], layout=ROW) if m.gated else None
        return chunk_math.chunk_state_step(tiles[0][...], tiles[1][...], tiles[2][...], g, s, gm)

    pre = _Prefetch(srcs, [k_s, w_s, u_s] + ([g_s] if m.gated else []), bar)
    s_fin = _sequential(num_chunks, False, pre, body, s0)
    plgpu.wait_smem_to_gmem(0)
    gc.store_tiles([(s_fin, st_s, op.state(sfin_ref))])


def _output_kernel(*refs, m, keys, heads, blocks):
    it = iter(refs)
    q_ref, k_ref, w_ref, uf_ref = next(it), next(it), next(it), next(it)
    g_ref = next(it) if m.gated else None
    states_ref, o_ref = next(it), next(it)
    bufs = {key: next(it) for key in keys}
    q_s, k_s, w_s, u_s, g_s, st_s, vec_s, bar = (next(it) for _ in range(8))
    op = gc.OpSlices.of_cta(heads, blocks)
    bhv, bh = op.row, op.bh
    n = lax.axis_index("n")
    rows = pl.ds(n * CHUNK, CHUNK)
    gm = gc.GpuMath(m.gated, m.scale, m.mm_dtype, bufs=bufs, vec_smem=vec_s)
    _loader(bar)([(op.head(q_ref, rows), q_s), (op.head(k_ref, rows), k_s), (w_ref.at[bh, rows], w_s),
                  (uf_ref.at[bhv, rows], u_s), (states_ref.at[bhv, n], st_s)]
                 + ([(g_ref.at[bh, rows], g_s)] if m.gated else []))
    _, g = _vecs(m, None, g_s)
    s = plgpu.load(st_s, layout=WGMMA)
    o = chunk_math.chunk_output(q_s[...], k_s[...], w_s[...], u_s[...], g, s, gm)
    gc.store_tiles([(o, u_s, op.value(o_ref, rows))])


def _dstates_kernel(*refs, m, keys, heads, blocks, num_chunks):
    it = iter(refs)
    q_ref, k_ref, w_ref = next(it), next(it), next(it)
    g_ref = next(it) if m.gated else None
    do_ref, dsf_ref, dstates_ref, ds0_ref = next(it), next(it), next(it), next(it)
    bufs = {key: next(it) for key in keys}
    q_s, k_s, w_s, do_s, g_s, st_s, vec_s, bar0, bar = (next(it) for _ in range(9))
    op = gc.OpSlices.of_cta(heads, blocks)
    bhv, bh = op.row, op.bh
    gm = gc.GpuMath(m.gated, m.scale, m.mm_dtype, bufs=bufs, vec_smem=vec_s)
    _loader(bar0)([(op.state(dsf_ref), st_s)])
    ds_fin = plgpu.load(st_s, layout=WGMMA)

    def srcs(n):
        rows = pl.ds(n * CHUNK, CHUNK)
        return [op.head(q_ref, rows), op.head(k_ref, rows), w_ref.at[bh, rows], op.value(do_ref, rows)] \
            + ([g_ref.at[bh, rows]] if m.gated else [])

    def body(n, tiles, ds_next):
        plgpu.wait_smem_to_gmem(0)
        st_s[...] = ds_next
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(st_s, dstates_ref.at[bhv, n])  # dL/dS leaving chunk n
        g = plgpu.load(tiles[4], layout=ROW) if m.gated else None
        return chunk_math.chunk_state_grad(tiles[0][...], tiles[1][...], tiles[2][...], g, tiles[3][...], ds_next,
                                           gm)

    pre = _Prefetch(srcs, [q_s, k_s, w_s, do_s] + ([g_s] if m.gated else []), bar)
    ds0 = _sequential(num_chunks, True, pre, body, ds_fin)
    plgpu.wait_smem_to_gmem(0)
    gc.store_tiles([(ds0, st_s, op.state(ds0_ref))])


def _grads_kernel(*refs, m, keys, heads, blocks):
    it = iter(refs)
    q_ref, k_ref, v_ref, beta_ref = next(it), next(it), next(it), next(it)
    g_ref = next(it) if m.gated else None
    states_ref, dstates_ref, do_ref, t_ref = next(it), next(it), next(it), next(it)
    dq_ref, dk_ref, dv_ref = next(it), next(it), next(it)
    dg_ref = next(it) if m.gated else None
    dbeta_ref = next(it)
    bufs = {key: next(it) for key in keys}
    q_s, k_s, v_s, do_s, b_s, g_s, st_s, dst_s, vo_s, vec_s, t_s, bar = (next(it) for _ in range(12))
    op = gc.OpSlices.of_cta(heads, blocks)
    bhv, bh = op.row, op.bh
    n = lax.axis_index("n")
    rows = pl.ds(n * CHUNK, CHUNK)
    gm = gc.GpuMath(m.gated, m.scale, m.mm_dtype, bufs=bufs, vec_smem=vec_s)
    _loader(bar)([(op.head(q_ref, rows), q_s), (op.head(k_ref, rows), k_s), (op.value(v_ref, rows), v_s),
                  (op.value(do_ref, rows), do_s), (beta_ref.at[bh, rows], b_s), (states_ref.at[bhv, n], st_s),
                  (dstates_ref.at[bhv, n], dst_s), (t_ref.at[bh, rows], t_s)]
                 + ([(g_ref.at[bh, rows], g_s)] if m.gated else []))
    beta, g = _vecs(m, b_s, g_s)
    s, ds_next = plgpu.load(st_s, layout=WGMMA), plgpu.load(dst_s, layout=WGMMA)
    dq, dk, dv, dbeta, dg, _ = chunk_math.chunk_backward(q_s[...], k_s[...], v_s[...], beta, g, s, do_s[...],
                                                         ds_next, gm, t=plgpu.load(t_s, layout=WGMMA))
    # dq, dk, dv go out through the q, k, v tiles (their values are in registers by now).
    gc.store_tiles([(dq, q_s, op.partial(dq_ref, rows)), (dk, k_s, op.partial(dk_ref, rows)),
                    (dv, v_s, op.value(dv_ref, rows)), (dbeta, vo_s.at[0], dbeta_ref.at[bhv, rows])]
                   + ([(dg, vo_s.at[1], dg_ref.at[bhv, rows])] if m.gated else []))


# ------------------------------------------------------------------------------------------------ launch
def _mat(r, k):
    return jax.ShapeDtypeStruct((r, k), f32)


@functools.lru_cache(maxsize=None)  # a dry run of the chunk math: once per configuration
def _keys(m, which: str, dk: int, bv: int, blocks: int) -> list:
    """SMEM operand buffers of one kernel's chunk math (a dry run on its shapes)."""
    c = CHUNK
    vec = jax.ShapeDtypeStruct((c, 1), f32)
    g = vec if m.gated else None
    if which == "wu":
        return gc.record_operand_keys(m, lambda k, beta, g, mm: chunk_math.chunk_wu(
            k, [jnp.zeros((c, bv), f32)] * blocks, beta, g, mm), _mat(c, dk), vec, g)
    if which == "grads":  # chunk_backward given the forward's T
        return gc.record_operand_keys(
            m, lambda q, k, v, beta, g, s, do, dsn, t, mm: chunk_math.chunk_backward(q, k, v, beta, g, s, do, dsn,
                                                                                    mm, t=t),
            _mat(c, dk), _mat(c, dk), _mat(c, bv), vec, g, _mat(dk, bv), _mat(c, bv), _mat(dk, bv), _mat(c, c))
    if which == "states":
        return gc.record_operand_keys(m, chunk_math.chunk_state_step, _mat(c, dk), _mat(c, dk), _mat(c, bv),
                                         g, _mat(dk, bv))
    if which == "output":
        return gc.record_operand_keys(m, chunk_math.chunk_output, _mat(c, dk), _mat(c, dk), _mat(c, dk),
                                         _mat(c, bv), g, _mat(dk, bv))
    if which == "dstates":
        return gc.record_operand_keys(m, chunk_math.chunk_state_grad, _mat(c, dk), _mat(c, dk), _mat(c, dk),
                                         g, _mat(c, bv), _mat(dk, bv))
    raise ValueError(f"unknown chunked-scheme kernel {which!r}")


def smem_bytes(m, which: str, dk: int, bv: int, blocks: int, in_dtype) -> int:
    """Operand buffers + staging tiles + state buffers of one kernel (mirrors the scratch lists below)."""
    c, isz = CHUNK, jnp.dtype(in_dtype).itemsize
    tiles = {"wu": c * dk + blocks * c * bv, "states": 2 * (2 * c * dk + c * bv), "output": 3 * c * dk + c * bv,
             "dstates": 2 * (3 * c * dk + c * bv), "grads": 2 * c * dk + 2 * c * bv}[which]  # sequential: 2 slots
    states = {"wu": 0, "states": 1, "output": 1, "dstates": 1, "grads": 2}[which] * dk * bv * 4
    inverse = c * c * 4 if which in ("wu", "grads") else 0  # T's fp32 tile (out of wu, into grads)
    return gc.operand_bytes(_keys(m, which, dk, bv, blocks)) + tiles * isz + states + inverse + 6 * c * 4


KERNELS = ("wu", "states", "output", "dstates", "grads")


@functools.lru_cache(maxsize=None)
def fits_smem(gated: bool, dk: int, dv: int, dtype) -> bool:
    m = chunk_math.ChunkMath(gated=gated, scale=1.0, mm_dtype=jnp.dtype(dtype))
    blocks = gc.value_blocks(dv)
    return all(smem_bytes(m, w, dk, dv // blocks, blocks, dtype) <= gc.SMEM_BUDGET for w in KERNELS)


def _wu(k, v, gh, bh_beta, *, m, blocks, interpret, keep_t):
    """W, U' and (keep_t: for a backward) T of every chunk, from k, v in the op layout."""
    bsz, tp, heads, dk = k.shape
    bh, rows, bv, c = bsz * heads, bsz * heads * blocks, v.shape[-1] // blocks, CHUNK
    keys = _keys(m, "wu", dk, bv, blocks)
    args = [k, v, bh_beta] + ([gh] if m.gated else [])
    out = [jax.ShapeDtypeStruct((bh, tp, dk), k.dtype), jax.ShapeDtypeStruct((rows, tp, bv), v.dtype)] \
        + ([jax.ShapeDtypeStruct((bh, tp, c), f32)] if keep_t else [])
    scratch = gc.scratch(keys, [plgpu.SMEM((c, dk), k.dtype), plgpu.SMEM((c,), f32), plgpu.SMEM((c,), f32),
                                plgpu.SMEM((c,), f32), plgpu.Barrier(num_barriers=3 + blocks)]
                         + [plgpu.SMEM((c, bv), v.dtype)] * blocks
                         + ([plgpu.SMEM((c, c), f32)] if keep_t else []))
    body = functools.partial(_wu_kernel, m=m, keys=keys, heads=heads, blocks=blocks, keep_t=keep_t)
    return gc.launch(body, args, out, scratch, grid=(bh, tp // c), interpret=interpret,
                     name=gc.kernel_name(m, "wu", dk, bv, k.dtype))


def _forward(q, k, v, g, beta, s0, *, m, interpret, save_states):
    bsz, tp, heads, dk = q.shape
    blocks = gc.value_blocks(v.shape[-1])
    gh, bh_beta = gc.row_vectors(g, beta)
    rows, bv = bsz * heads * blocks, v.shape[-1] // blocks
    c, nc = CHUNK, tp // CHUNK
    w, uf, *t = _wu(k, v, gh, bh_beta, m=m, blocks=blocks, interpret=interpret, keep_t=save_states)
    gl = [gh] if m.gated else []

    keys = _keys(m, "states", dk, bv, blocks)
    scratch = gc.scratch(keys, [plgpu.SMEM((2, c, dk), k.dtype), plgpu.SMEM((2, c, dk), w.dtype),
                                plgpu.SMEM((2, c, bv), uf.dtype), plgpu.SMEM((2, c), f32),
                                plgpu.SMEM((dk, bv), f32), plgpu.SMEM((c,), f32), plgpu.Barrier(num_barriers=1),
                                plgpu.Barrier(num_barriers=2 * (4 if m.gated else 3))])
    states, s_fin = gc.launch(
        functools.partial(_states_kernel, m=m, keys=keys, heads=heads, blocks=blocks, num_chunks=nc),
        [k, w, uf] + gl + [s0],
        [jax.ShapeDtypeStruct((rows, nc, dk, bv), f32), jax.ShapeDtypeStruct(s0.shape, f32)],
        scratch, grid=(rows,), interpret=interpret, name=gc.kernel_name(m, "states", dk, bv, k.dtype))

    keys = _keys(m, "output", dk, bv, blocks)
    scratch = gc.scratch(keys, [plgpu.SMEM((c, dk), q.dtype), plgpu.SMEM((c, dk), k.dtype),
                                plgpu.SMEM((c, dk), w.dtype), plgpu.SMEM((c, bv), uf.dtype),
                                plgpu.SMEM((c,), f32), plgpu.SMEM((dk, bv), f32), plgpu.SMEM((c,), f32),
                                plgpu.Barrier(num_barriers=6)])
    (o,) = gc.launch(functools.partial(_output_kernel, m=m, keys=keys, heads=heads, blocks=blocks),
                     [q, k, w, uf] + gl + [states], [jax.ShapeDtypeStruct(v.shape, v.dtype)],
                     scratch, grid=(rows, nc), interpret=interpret,
                     name=gc.kernel_name(m, "output", dk, bv, q.dtype))
    residual = (states, w, t[0]) if save_states else None
    return o, s_fin, residual


def _backward(q, k, v, g, beta, residual, do, ds_final, *, m, interpret):
    states, w, t = residual
    bsz, tp, heads, dk = q.shape
    blocks = gc.value_blocks(v.shape[-1])
    gh, bh_beta = gc.row_vectors(g, beta)
    rows, bv = bsz * heads * blocks, v.shape[-1] // blocks
    c, nc = CHUNK, tp // CHUNK
    gl = [gh] if m.gated else []
    do = do.astype(v.dtype)

    keys = _keys(m, "dstates", dk, bv, blocks)
    scratch = gc.scratch(keys, [plgpu.SMEM((2, c, dk), q.dtype), plgpu.SMEM((2, c, dk), k.dtype),
                                plgpu.SMEM((2, c, dk), w.dtype), plgpu.SMEM((2, c, bv), do.dtype),
                                plgpu.SMEM((2, c), f32), plgpu.SMEM((dk, bv), f32), plgpu.SMEM((c,), f32),
                                plgpu.Barrier(num_barriers=1), plgpu.Barrier(num_barriers=2 * (5 if m.gated else 4))])
    dstates, ds0 = gc.launch(
        functools.partial(_dstates_kernel, m=m, keys=keys, heads=heads, blocks=blocks, num_chunks=nc),
        [q, k, w] + gl + [do, ds_final],
        [jax.ShapeDtypeStruct((rows, nc, dk, bv), f32), jax.ShapeDtypeStruct(ds_final.shape, f32)],
        scratch, grid=(rows,), interpret=interpret, name=gc.kernel_name(m, "dstates", dk, bv, q.dtype))

    keys = _keys(m, "grads", dk, bv, blocks)
    scratch = gc.scratch(keys, [
        plgpu.SMEM((c, dk), q.dtype), plgpu.SMEM((c, dk), k.dtype), plgpu.SMEM((c, bv), v.dtype),
        plgpu.SMEM((c, bv), do.dtype), plgpu.SMEM((c,), f32), plgpu.SMEM((c,), f32), plgpu.SMEM((dk, bv), f32),
        plgpu.SMEM((dk, bv), f32), plgpu.SMEM((2, c), f32), plgpu.SMEM((c,), f32), plgpu.SMEM((c, c), f32),
        plgpu.Barrier(num_barriers=9)])
    # dq, dk: one partial per value block, in the op layout (summed below); dv: written in place.
    out = [gc.partials_shape(q, blocks), gc.partials_shape(k, blocks), jax.ShapeDtypeStruct(v.shape, v.dtype)] \
        + ([jax.ShapeDtypeStruct((rows, tp), f32)] if m.gated else []) + [jax.ShapeDtypeStruct((rows, tp), f32)]
    outs = iter(gc.launch(functools.partial(_grads_kernel, m=m, keys=keys, heads=heads, blocks=blocks),
                          [q, k, v, bh_beta] + gl + [states, dstates, do, t], out, scratch,
                          grid=(rows, nc), interpret=interpret,
                          name=gc.kernel_name(m, "grads", dk, bv, q.dtype)))
    dq, dk_ = gc.sum_partials(next(outs)), gc.sum_partials(next(outs))
    dv = next(outs)
    dg = gc.sum_blocks(next(outs), bsz, heads) if m.gated else None
    dbeta = gc.sum_blocks(next(outs), bsz, heads)
    return dq, dk_, dv, dg, dbeta, ds0
