"""Chunked simple GLA / SSD (Mamba2's scalar-decay scan) in pure JAX.

Recurrence: S_t = exp(g_t) S_{t-1} + k_t v_t^T ; o_t = scale * q_t^T S_t  (g: per-head log decay, <= 0).
Within a chunk from S_0 (G = cumsum g, gamma = exp(G)):
    O   = (Q * gamma) S_0 + tril(Q K^T * exp(G_t - G_j)) V
    S_C = gamma_C S_0 + (K * exp(G_C - G))^T V
The intra-chunk part runs for all chunks at once; only the state product is scanned.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from pallas_kernels import common
from pallas_kernels.common import f32


def chunk_simple_gla(q, k, v, g, *, scale=None, initial_state=None, output_final_state=False, chunk_size: int = 64):
    common.check_qkv("simple_gla", q, k, v, ("g", g))
    common.check_state("simple_gla", initial_state, q, v)
    out_dtype = v.dtype
    bsz, seqlen, heads, dk = q.shape
    dv = v.shape[-1]
    c = chunk_size
    prec = common.precision_for(q.dtype)
    scale = common.default_scale(q, scale)

    qc = common.to_chunks(common.pad_time(q, c), c)
    kc = common.to_chunks(common.pad_time(k, c), c)
    vc = common.to_chunks(common.pad_time(v, c), c)
    gcum = jnp.cumsum(common.to_chunks(common.pad_time(g.astype(f32), c), c), axis=-1)  # [B,H,N,C]
    incl = jnp.tril(jnp.ones((c, c), bool))
    decay = jnp.exp(jnp.where(incl, gcum[..., :, None] - gcum[..., None, :], -jnp.inf))
    scores = common.mm("bhnik,bhnjk->bhnij", qc, kc, prec) * (decay * scale)
    o_intra = common.mm("bhnij,bhnjv->bhniv", scores.astype(vc.dtype) if vc.dtype != f32 else scores, vc, prec)

    q_in = qc.astype(f32) * (jnp.exp(gcum) * scale)[..., None]
    k_out = kc.astype(f32) * jnp.exp(gcum[..., -1:] - gcum)[..., None]
    chunk_decay = jnp.exp(gcum[..., -1])
    s0 = jnp.zeros((bsz, heads, dk, dv), f32) if initial_state is None else initial_state.astype(f32)

    def step(s, xs):
        q_i, k_i, v_i, d_i = xs
        o = common.mm("bhck,bhkv->bhcv", q_i, s, prec)
        s = s * d_i[..., None, None] + common.mm("bhck,bhcv->bhkv", k_i, v_i.astype(f32), prec)
        return s, o

    xs = tuple(jnp.moveaxis(t, 2, 0) for t in (q_in, k_out, vc, chunk_decay))
    s_final, o_inter = lax.scan(step, s0, xs)
    o = o_intra + jnp.moveaxis(o_inter, 0, 2)
    o = common.from_chunks(o)[:, :seqlen].astype(out_dtype)
    return (o, s_final) if output_final_state else o
