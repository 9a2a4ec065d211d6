"""Per-chunk forward and backward math of the (gated) delta rule, written once for every kernel body.

Each function works on one chunk of one head, on arrays already loaded from refs: q, k [C, Dk], v [C, Dv],
the per-step scalars beta and g as per-time vectors ("vecs"), and the fp32 state S [Dk, Dv] at the start of
the chunk. Matmuls, iota masks and everything that touches a vec's layout go through `ChunkMath` methods, so
the Mosaic TPU body (vecs are [C, 1] columns) and the Mosaic GPU body (1-D vecs, wgmma matmuls) share it.

Forward of one chunk (see xla.py for the derivation; G = cumsum(g), gamma = exp(G), Gam_ij = exp(G_i - G_j)):
    A  = strict_tril(beta_i (k_i . k_j) Gam_ij),      T = (I + A)^-1
    W  = T (beta gamma K),   U' = T (beta V),         U = U' - W S
    P  = tril(scale (Q K^T) * Gam),                   O = (scale gamma Q) S + P U
    S' = gamma_C S + (K * exp(G_C - G))^T U
The backward is the hand-written adjoint of exactly these lines (no autodiff inside kernels).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

f32 = jnp.float32


def default_dot(a, b, *, ta: bool = False, tb: bool = False, dtype=f32) -> jax.Array:
    """a @ b (a^T if ta, b^T if tb) with operands cast to `dtype` and fp32 accumulation.

    fp32 operands ask for the full-precision MXU passes; bf16 operands are one pass, the same numerics the
    hardware gives, so interpret-mode tests on CPU see the rounding the TPU will apply.
    """
    a, b = a.astype(dtype), b.astype(dtype)
    dims = (((0 if ta else 1,), (1 if tb else 0,)), ((), ()))
    prec = lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else lax.Precision.DEFAULT
    return lax.dot_general(a, b, dims, precision=prec, preferred_element_type=f32)


def _iota(c: int):
    return lax.broadcasted_iota(jnp.int32, (c, c), 0), lax.broadcasted_iota(jnp.int32, (c, c), 1)


def col_from_row(x_row: jax.Array) -> jax.Array:
    """[1, C] -> [C, 1] without a transpose op: broadcast over sublanes, keep the diagonal, sum over lanes."""
    c = x_row.shape[1]
    r, cc = _iota(c)
    return jnp.sum(jnp.where(r == cc, jnp.broadcast_to(x_row, (c, c)), 0.0), axis=1, keepdims=True)


def row_from_col(x_col: jax.Array) -> jax.Array:
    """[C, 1] -> [1, C] (the inverse of col_from_row)."""
    c = x_col.shape[0]
    r, cc = _iota(c)
    return jnp.sum(jnp.where(r == cc, jnp.broadcast_to(x_col, (c, c)), 0.0), axis=0, keepdims=True)


@dataclasses.dataclass(frozen=True)
class ChunkMath:
    """Static configuration of one kernel body plus the few layout-dependent primitives it needs.

    Here (Mosaic TPU) a vec is a [C, 1] column: it broadcasts against [C, D] rows for free, and only 2-D ops
    that Mosaic lowers are used. The Mosaic GPU body subclasses this with 1-D vecs and wgmma-backed matmuls.
    """
    gated: bool
    scale: float
    mm_dtype: jnp.dtype = f32  # bf16 for bf16 inputs: big matmuls take bf16 operands, accumulate in fp32

    def dot(self, a, b, *, ta=False, tb=False, dtype=f32):
        return default_dot(a, b, ta=ta, tb=tb, dtype=dtype)

    def mm(self, a, b, ta=False, tb=False):
        return self.dot(a, b, ta=ta, tb=tb, dtype=self.mm_dtype)

    def mm32(self, a, b, ta=False, tb=False):
        # The triangular inverse and its adjoint stay in fp32: they are where cancellation happens.
        return self.dot(a, b, ta=ta, tb=tb, dtype=f32)

    def iota(self, c: int):
        return _iota(c)

    def ecol(self, vec, width: int):
        """vec -> [C, width] with x[i, :] = vec[i]."""
        return jnp.broadcast_to(vec, (vec.shape[0], width))

    def erow(self, vec, height: int):
        """vec -> [height, C] with x[:, j] = vec[j]."""
        return jnp.broadcast_to(row_from_col(vec), (height, vec.shape[0]))

    def rowsum(self, x):
        return jnp.sum(x, axis=1, keepdims=True)

    def colsum(self, x):
        return col_from_row(jnp.sum(x, axis=0, keepdims=True))

    def total(self, x):
        """Sum of a vec or matrix as something that broadcasts against any array ([1, 1]: no rank-0 vectors)."""
        return jnp.sum(jnp.sum(x, axis=1, keepdims=True), axis=0, keepdims=True)


def unit_lower_inverse(a: jax.Array, m: ChunkMath) -> jax.Array:
    """(I + A)^-1 for strictly lower-triangular A [C, C] in fp32, with matmuls and masks only.

    Forward substitution inside 16-row diagonal blocks (all blocks at once: step r finalises row r of every
    block), then blocks are merged pairwise: if T_s inverts the block-diagonal part and L holds the blocks
    just below it, (I + D + L)^-1 = T_s - T_s L T_s exactly, because L T_s L = 0. 15 + 2 log2(C/16) matmuls.
    """
    c = a.shape[0]
    b = min(16, c)
    row, col = m.iota(c)
    # lax.div / lax.rem, not // and %: the floor semantics of the latter lower through sign ops (indices >= 0).
    div, rem = lax.div, lax.rem
    eye = (row == col).astype(f32)
    a_diag = jnp.where(div(row, b) == div(col, b), a, 0.0)
    t = eye
    for r in range(1, b):
        t = jnp.where(rem(row, b) == r, eye - m.mm32(a_diag, t), t)
    s = b
    while s < c:
        below = (div(row, s) == div(col, s) + 1) & (rem(div(row, s), 2) == 1)
        t = t - m.mm32(t, m.mm32(jnp.where(below, a, 0.0), t))
        s *= 2
    return t


@dataclasses.dataclass
class _Prep:
    """State-independent quantities of one chunk, shared by forward and backward (None: no decay)."""
    beta: jax.Array               # vec
    gamma: jax.Array | None       # vec exp(G)
    decay_out: jax.Array | None   # vec exp(G_C - G)
    gamma_c: jax.Array | None     # exp(G_C), broadcastable
    gam: jax.Array | None         # [C, C] exp(G_i - G_j) on i >= j, 0 above
    kk: jax.Array                 # [C, C] K K^T
    a: jax.Array                  # [C, C] strict lower system matrix
    t: jax.Array                  # [C, C] (I + A)^-1
    kb: jax.Array                 # [C, Dk] beta gamma K
    vb: jax.Array                 # [C, Dv] beta V
    w: jax.Array                  # [C, Dk] T kb
    u_free: jax.Array             # [C, Dv] T vb
    p: jax.Array                  # [C, C] tril(scale Q K^T * Gam)


def decay_terms(g, c: int, m: ChunkMath):
    """Per-chunk decay quantities from the per-step log decays g (a vec):
    (G = cumsum(g) vec, G_C broadcastable, Gam [C, C] = exp(G_i - G_j) on i >= j else 0, gamma = exp(G) vec,
     decay_out = exp(G_C - G) vec, gamma_C = exp(G_C) broadcastable)."""
    row, col = m.iota(c)
    incl = row >= col
    g = g.astype(f32)
    # Cumulative log decay by a masked sum (no cumsum inside the kernel).
    gcum = m.rowsum(jnp.where(col <= row, m.erow(g, c), 0.0))
    g_tot = m.total(g)
    # Masked before exp so entries above the diagonal (positive exponents) never overflow.
    diff = m.ecol(gcum, c) - m.erow(gcum, c)
    gam = jnp.where(incl, jnp.exp(jnp.where(incl, diff, 0.0)), 0.0)
    return gcum, g_tot, gam, jnp.exp(gcum), jnp.exp(g_tot - gcum), jnp.exp(g_tot)


def _prep(q, k, v, beta, g, m: ChunkMath, t=None) -> _Prep:
    """The state-independent quantities; q None skips P, v None skips U' (for the chunk-parallel kernels); t: the
    chunk's (I + A)^-1 when the forward kept it (the inverse is then not recomputed)."""
    c, dk = k.shape
    row, col = m.iota(c)
    strict, incl = row > col, row >= col
    kk = m.mm(k, k, tb=True)
    qk = None if q is None else m.mm(q, k, tb=True) * m.scale
    beta = beta.astype(f32)
    p = None
    if m.gated:
        _, _, gam, gamma, decay_out, gamma_c = decay_terms(g, c, m)
        a = jnp.where(strict, kk * gam, 0.0) * m.ecol(beta, c)
        if qk is not None:
            p = qk * gam
        kb = k.astype(f32) * m.ecol(beta * gamma, dk)
    else:
        gam = gamma = decay_out = gamma_c = None
        a = jnp.where(strict, kk, 0.0) * m.ecol(beta, c)
        if qk is not None:
            p = jnp.where(incl, qk, 0.0)
        kb = k.astype(f32) * m.ecol(beta, dk)
    t = unit_lower_inverse(a, m) if t is None else t.astype(f32)
    vb = None if v is None else v.astype(f32) * m.ecol(beta, v.shape[1])
    return _Prep(beta=beta, gamma=gamma, decay_out=decay_out, gamma_c=gamma_c, gam=gam, kk=kk, a=a, t=t,
                 kb=kb, vb=vb, w=m.mm(t, kb), u_free=None if v is None else m.mm(t, vb), p=p)


def chunk_forward(q, k, v, beta, g, s, m: ChunkMath, with_t: bool = False):
    """One chunk from state s [Dk, Dv] fp32; beta, g are vecs (g None when not gated).

    Returns (o [C, Dv] fp32, the state at the chunk's end [Dk, Dv] fp32), and with_t the chunk's (I + A)^-1
    [C, C] fp32 as a third element (for a backward that then skips the inverse).
    """
    dk = k.shape[1]
    pr = _prep(q, k, v, beta, g, m)
    u = pr.u_free - m.mm(pr.w, s)
    if m.gated:
        qs = q.astype(f32) * m.ecol(pr.gamma * m.scale, dk)
        kd = k.astype(f32) * m.ecol(pr.decay_out, dk)
        s_dec = s * pr.gamma_c
    else:
        qs, kd, s_dec = q.astype(f32) * m.scale, k, s
    o = m.mm(qs, s) + m.mm(pr.p, u)
    s_new = s_dec + m.mm(kd, u, ta=True)
    return (o, s_new, pr.t) if with_t else (o, s_new)


def chunk_backward(q, k, v, beta, g, s, do, ds_next, m: ChunkMath, t=None):
    """Adjoint of chunk_forward given the chunk's start state s, dO [C, Dv] and dL/d(end state) [Dk, Dv]; t: the
    chunk's (I + A)^-1 if the forward kept it (chunk_wu returns it), else it is recomputed.

    Returns (dq [C,Dk], dk [C,Dk], dv [C,Dv], dbeta vec, dg vec or None, dL/ds [Dk,Dv]), all fp32.
    """
    c, dk_dim = k.shape
    dv_dim = v.shape[1]
    row, col = m.iota(c)
    strict, incl = row > col, row >= col
    pr = _prep(q, k, v, beta, g, m, t)
    qf, kf, vf = q.astype(f32), k.astype(f32), v.astype(f32)
    do = do.astype(f32)
    u = pr.u_free - m.mm(pr.w, s)
    if m.gated:
        q_coef = m.ecol(pr.gamma * m.scale, dk_dim)
        kd = kf * m.ecol(pr.decay_out, dk_dim)
        ds = ds_next * pr.gamma_c
    else:
        q_coef, kd, ds = m.scale, kf, ds_next
    qs = qf * q_coef

    # S' = gamma_C S + Kd^T U
    d_kd = m.mm(u, ds_next, tb=True)
    du = m.mm(kd, ds_next) + m.mm(pr.p, do, ta=True)
    # O = Qs S + P U
    d_qs = m.mm(do, s, tb=True)
    dp = jnp.where(incl, m.mm(do, u, tb=True), 0.0)
    # U = U' - W S
    ds = ds + m.mm(qs, do, ta=True) - m.mm(pr.w, du, ta=True)
    dw = -m.mm(du, s, tb=True)
    # U' = T vb, W = T kb, T = (I + A)^-1  =>  dA = -T^T dT T^T on the strict lower part
    dt = m.mm(du, pr.vb, tb=True) + m.mm(dw, pr.kb, tb=True)
    dvb = m.mm(pr.t, du, ta=True)
    dkb = m.mm(pr.t, dw, ta=True)
    da = jnp.where(strict, -m.mm32(m.mm32(pr.t, dt, ta=True), pr.t, tb=True), 0.0)

    # A = beta_i KK^T Gam (strict), P = scale QK^T Gam (incl)
    dkk = da * m.ecol(pr.beta, c)
    dqk = dp * m.scale
    if m.gated:
        dkk, dqk = dkk * pr.gam, dqk * pr.gam
    dbeta = m.rowsum(da * (pr.kk * pr.gam if m.gated else pr.kk)) + m.rowsum(dvb * vf)
    dq = d_qs * q_coef + m.mm(dqk, k)
    dk = m.mm(dkk, k) + m.mm(dkk, k, ta=True) + m.mm(dqk, q, ta=True)
    dv = dvb * m.ecol(pr.beta, dv_dim)
    kb_dot = m.rowsum(dkb * kf)
    if not m.gated:
        return dq, dk + d_kd + dkb * m.ecol(pr.beta, dk_dim), dv, dbeta + kb_dot, None, ds

    dk = dk + d_kd * m.ecol(pr.decay_out, dk_dim) + dkb * m.ecol(pr.beta * pr.gamma, dk_dim)
    dbeta = dbeta + kb_dot * pr.gamma
    # d/dG_t of the cumulative log decay: row sums of the [C, C] adjoints minus their column sums (the -G_j of
    # Gam_ij), plus the gamma and exp(G_C - G) terms.
    z = da * pr.a + dp * pr.p
    d_gamma = m.rowsum(d_qs * qf) * m.scale + kb_dot * pr.beta
    de = m.rowsum(d_kd * kf) * pr.decay_out
    d_gcum = m.rowsum(z) - m.colsum(z) + d_gamma * pr.gamma - de
    # G_C = sum of all g in the chunk: through exp(G_C - G) and the state decay gamma_C.
    d_gtot = m.total(de) + m.total(s * ds_next) * pr.gamma_c
    # dg_i = sum_{t >= i} dG_t + dG_C (a reverse cumulative sum, as a masked column sum).
    dg = m.colsum(jnp.where(row >= col, m.ecol(d_gcum, c), 0.0)) + d_gtot
    return dq, dk, dv, dbeta, dg, ds


# ---------------------------------------------------------------------------------------------- chunk-parallel
# The same forward and backward split so that only the state recurrence is sequential (the GPU's chunk-parallel
# scheme): W and U' of every chunk in parallel, then S_{n+1} = gamma_C S_n + Kd^T (U' - W S_n) in order, then
# every chunk's output from its start state in parallel; backward: dS in reverse order, then chunk_backward of
# every chunk in parallel from (S_n, dS_{n+1}) and the forward's T (no second inverse).

def chunk_wu(k, vs, beta, g, m: ChunkMath):
    """W [C, Dk], U' = T (beta V) for each value block in `vs` (a list of [C, Dv_j]) and T = (I + A)^-1 [C, C]
    (kept for the backward, which then skips the inverse), all fp32."""
    pr = _prep(None, k, None, beta, g, m)
    return pr.w, [m.mm(pr.t, v.astype(f32) * m.ecol(pr.beta, v.shape[1])) for v in vs], pr.t


def _out_decay(k, g, s, m: ChunkMath):
    """(Kd = K exp(G_C - G), gamma_C S): how a chunk's keys write into, and its decay shrinks, the state."""
    if not m.gated:
        return k, s
    _, _, _, _, decay_out, gamma_c = decay_terms(g, k.shape[0], m)
    return k.astype(f32) * m.ecol(decay_out, k.shape[1]), s * gamma_c


def chunk_state_step(k, w, u_free, g, s, m: ChunkMath):
    """The state at the chunk's end from the state s at its start: gamma_C s + Kd^T (U' - W s)."""
    kd, s_dec = _out_decay(k, g, s, m)
    return s_dec + m.mm(kd, u_free - m.mm(w, s), ta=True)


def chunk_output(q, k, w, u_free, g, s, m: ChunkMath):
    """The chunk's output from its start state: (scale gamma Q) s + P (U' - W s), P = tril(scale Q K^T Gam)."""
    c, dk = k.shape
    row, col = m.iota(c)
    qk = m.mm(q, k, tb=True) * m.scale
    if m.gated:
        _, _, gam, gamma, _, _ = decay_terms(g, c, m)
        p, qs = qk * gam, q.astype(f32) * m.ecol(gamma * m.scale, dk)
    else:
        p, qs = jnp.where(row >= col, qk, 0.0), q.astype(f32) * m.scale
    return m.mm(qs, s) + m.mm(p, u_free - m.mm(w, s))


def chunk_state_grad(q, k, w, g, do, ds_next, m: ChunkMath):
    """dL/dS at the chunk's start from dL/dS at its end (the adjoint recurrence of chunk_state_step/_output):
    dU = Kd dS' + P^T dO,  dS = gamma_C dS' + Qs^T dO - W^T dU."""
    c, dk = k.shape
    row, col = m.iota(c)
    qk = m.mm(q, k, tb=True) * m.scale
    kd, ds = _out_decay(k, g, ds_next, m)
    if m.gated:
        _, _, gam, gamma, _, _ = decay_terms(g, c, m)
        p, qs = qk * gam, q.astype(f32) * m.ecol(gamma * m.scale, dk)
    else:
        p, qs = jnp.where(row >= col, qk, 0.0), q.astype(f32) * m.scale
    du = m.mm(kd, ds_next) + m.mm(p, do, ta=True)
    return ds + m.mm(qs, do, ta=True) - m.mm(w, du, ta=True)
