"""Chunked (WY-form) gated delta rule in pure JAX; with no decay it is the plain delta rule.

Recurrence (state S is [Dk, Dv], alpha_t = exp(g_t)):
    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,     o_t = scale * q_t^T S_t

Within a chunk that starts from S_0, let G_t = sum_{i<=t} g_i, gamma_t = exp(G_t) and
Gamma_tj = exp(G_t - G_j) (j <= t). Writing S_t = alpha_t S_{t-1} + k_t u_t^T with the "new values"
u_t = beta_t (v_t - alpha_t S_{t-1}^T k_t), the u of a whole chunk solve one unit lower-triangular system

    (I + diag(beta) strict_tril(K K^T * Gamma)) U = diag(beta) V - diag(beta * gamma) K S_0,

so U = U' - W S_0 with U' and W independent of the state (computed for all chunks at once). Then
    O   = (Q * gamma) S_0 + tril(Q K^T * Gamma) U
    S_C = gamma_C S_0 + (K * exp(G_C - G))^T U
and only these two small products run sequentially over chunks (lax.scan carrying the fp32 state).
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from pallas_kernels import common
from pallas_kernels.common import f32


def chunk_gated_delta_rule(q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=False,
                           chunk_size: int = 64):
    """q, k [B,T,H,Dk]; v [B,T,H,Dv]; g (log decay, or None for the plain delta rule) and beta [B,T,H].

    Returns o [B,T,H,Dv] in v's dtype, and the final fp32 state [B,H,Dk,Dv] when output_final_state.
    """
    name = "delta_rule" if g is None else "gated_delta_rule"
    common.check_qkv(name, q, k, v, ("beta", beta), *(() if g is None else (("g", g),)))
    common.check_state(name, initial_state, q, v)
    out_dtype = v.dtype
    bsz, seqlen, heads, dk = q.shape
    dv = v.shape[-1]
    c = chunk_size
    prec = common.precision_for(q.dtype)
    scale = common.default_scale(q, scale)

    # Operands of the big matmuls stay in the input dtype (bf16 on accelerators) with fp32 accumulation; the
    # triangular solve, decays and the carried state are fp32.
    qc = common.to_chunks(common.pad_time(q, c), c)
    kc = common.to_chunks(common.pad_time(k, c), c)
    vc = common.to_chunks(common.pad_time(v, c), c)
    bc = common.to_chunks(common.pad_time(beta.astype(f32), c), c)  # [B,H,N,C]
    lower = jnp.tril(jnp.ones((c, c), bool), -1)
    incl = jnp.tril(jnp.ones((c, c), bool))

    kk = common.mm("bhnik,bhnjk->bhnij", kc, kc, prec)
    qk = common.mm("bhnik,bhnjk->bhnij", qc, kc, prec) * scale
    if g is None:
        a_mat = jnp.where(lower, kk, 0.0) * bc[..., :, None]
        p_mat = jnp.where(incl, qk, 0.0)
        gamma = None
    else:
        gcum = jnp.cumsum(common.to_chunks(common.pad_time(g.astype(f32), c), c), axis=-1)  # [B,H,N,C]
        diff = gcum[..., :, None] - gcum[..., None, :]
        decay = jnp.exp(jnp.where(incl, diff, -jnp.inf))  # masked before exp: no overflow above the diagonal
        a_mat = jnp.where(lower, kk * decay, 0.0) * bc[..., :, None]
        p_mat = qk * decay
        gamma = jnp.exp(gcum)

    kf = kc.astype(f32)
    vb = vc.astype(f32) * bc[..., None]
    kb = kf * bc[..., None]
    if gamma is not None:
        kb = kb * gamma[..., None]
    rhs = jnp.concatenate([vb, kb], axis=-1)
    sol = common.mm("bhnij,bhnjd->bhnid", common.unit_lower_inverse(a_mat), rhs, lax.Precision.HIGHEST)
    u_free, w = sol[..., :dv], sol[..., dv:]  # U = u_free - W S_0

    qs = qc.astype(f32) * scale
    if gamma is None:
        k_out = kf
        chunk_decay = jnp.ones(qc.shape[:3], f32)
    else:
        qs = qs * gamma[..., None]
        k_out = kf * jnp.exp(gcum[..., -1:] - gcum)[..., None]
        chunk_decay = gamma[..., -1]

    s0 = jnp.zeros((bsz, heads, dk, dv), f32) if initial_state is None else initial_state.astype(f32)

    def step(s, xs):
        q_i, w_i, u_i, p_i, k_i, d_i = xs
        u = u_i - common.mm("bhck,bhkv->bhcv", w_i, s, prec)
        o = common.mm("bhck,bhkv->bhcv", q_i, s, prec) + common.mm("bhij,bhjv->bhiv", p_i, u, prec)
        s = s * d_i[..., None, None] + common.mm("bhck,bhcv->bhkv", k_i, u, prec)
        return s, o

    xs = tuple(jnp.moveaxis(t, 2, 0) for t in (qs, w, u_free, p_mat, k_out, chunk_decay))
    s_final, o = lax.scan(step, s0, xs)
    o = common.from_chunks(jnp.moveaxis(o, 0, 2))[:, :seqlen].astype(out_dtype)
    return (o, s_final) if output_final_state else o
