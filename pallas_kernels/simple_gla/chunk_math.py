"""One chunk of simple GLA, forward and backward, on values already loaded into a kernel (C rows, fp32 state).

Shared by the Mosaic TPU kernels (and by anything else whose kernel body works on plain arrays). With b the
chunk-local cumulative log decay, e = exp(b), r = exp(b_C - b), D_ij = exp(b_i - b_j) for i >= j else 0:
    A   = scale * (Q K^T) * D                       O   = A V + scale * (Q * e) S
    S'  = exp(b_C) S + (K * r)^T V
and, given dO and dS' (gradient of the state leaving the chunk), with dA = scale * (dO V^T) * D:
    dQ  = dA K + scale * e * (dO S^T)               dK  = dA^T Q + r * (V dS'^T)
    dV  = A^T dO + (K * r) dS'                      dS  = exp(b_C) dS' + scale * (Q * e)^T dO
The log decay g_t scales every (reader i >= t, writer j < t) pair, so its gradient is the sum of the pair
terms crossing t, taken per chunk in fp32 without cancellation (the global identity dg_t = sum_{s>=t}
q.dq - k.dk cancels badly in bf16):
    dg_t = sum_{i>=t, j<t} A_ij (dO V^T)_ij          (intra-chunk pairs)
         + sum_{i>=t} q_i . dQinter_i                (readers in the chunk, writers before it)
         + sum_{j<t} k_j . dKinter_j                 (writers in the chunk, readers after it)
         + <dS', exp(b_C) S>                          (writers before, readers after the chunk)
Matmul operands are cast to the input dtype (bf16 goes to the MXU / tensor cores as bf16, like the XLA path),
accumulation and the state stay fp32; fp32 inputs use full-precision matmuls.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from pallas_kernels.common import f32


class Dots:
    """Matmuls with fp32 accumulation whose operands are first cast to the compute dtype."""

    def __init__(self, dtype):
        self.dtype = jnp.dtype(dtype)
        self.prec = lax.Precision.HIGHEST if self.dtype == jnp.dtype(f32) else lax.Precision.DEFAULT

    def _c(self, x):
        return x if x.dtype == self.dtype else x.astype(self.dtype)

    def nn(self, a, b):  # a @ b
        return lax.dot_general(self._c(a), self._c(b), (((1,), (0,)), ((), ())), precision=self.prec,
                               preferred_element_type=f32)

    def nt(self, a, b):  # a @ b^T
        return lax.dot_general(self._c(a), self._c(b), (((1,), (1,)), ((), ())), precision=self.prec,
                               preferred_element_type=f32)

    def tn(self, a, b):  # a^T @ b; the transpose happens in fp32, the layout Mosaic transposes best
        return self.nn(a.astype(f32).T, b)


def decay_matrix(bc, br):
    """D [C, C] = exp(b_i - b_j) on i >= j, 0 above, from bc [C, 1] and br [1, C] (the same cumulative decays as
    a column and a row)."""
    c = bc.shape[0]
    rows = lax.broadcasted_iota(jnp.int32, (c, c), 0)
    cols = lax.broadcasted_iota(jnp.int32, (c, c), 1)
    # min(., 0) keeps exp finite above the diagonal before the mask zeroes it (no inf * 0).
    return jnp.where(rows >= cols, jnp.exp(jnp.minimum(bc - br, 0.0)), 0.0)


def state_decays(bc, br):
    """r [C, 1] = exp(b_C - b) (a step's decay to the chunk's end) and exp(b_C) [1, 1]."""
    b_last = br[:, bc.shape[0] - 1:]  # [1, 1]
    return jnp.exp(b_last - bc), jnp.exp(b_last)


def decay_terms(bc, br):
    """D, e = exp(b), r, exp(b_C): everything the output and the backward need."""
    return (decay_matrix(bc, br), jnp.exp(bc), *state_decays(bc, br))


def chunk_forward(q, k, v, bc, br, s, scale, dots: Dots, *, want_output=True):
    """Returns (O [C, Dv] fp32 or None, S' [Dk, Dv] fp32). Without the output (the states pass) no C x C decay
    matrix is formed."""
    r, e_last = state_decays(bc, br)
    o = None
    if want_output:
        a = dots.nt(q, k) * (decay_matrix(bc, br) * scale)
        o = dots.nn(a, v) + dots.nn(q.astype(f32) * (jnp.exp(bc) * scale), s)
    s_new = s * e_last + dots.tn(k.astype(f32) * r, v)
    return o, s_new


def chunk_backward(q, k, v, bc, br, s, do, ds, scale, dots: Dots):
    """s: state entering the chunk; ds: gradient of the state leaving it. Returns dq, dk, dv (fp32), the log
    decay gradient as a row dg [1, C] (fp32) and the gradient of the entering state."""
    c = bc.shape[0]
    dmat, e, r, e_last = decay_terms(bc, br)
    qf, kf = q.astype(f32), k.astype(f32)
    a = dots.nt(q, k) * (dmat * scale)
    dov = dots.nt(do, v)
    da = dov * (dmat * scale)
    dq_inter = dots.nt(do, s) * (e * scale)
    dk_inter = dots.nt(v, ds) * r
    dq = dots.nn(da, k) + dq_inter
    dk = dots.tn(da, q) + dk_inter
    dv = dots.tn(a, do) + dots.nn(kf * r, ds)
    ds_prev = ds * e_last + dots.tn(qf * (e * scale), do)

    rows = lax.broadcasted_iota(jnp.int32, (c, c), 0)
    cols = lax.broadcasted_iota(jnp.int32, (c, c), 1)
    # w[i, t] = sum_{j < t} (A * dO V^T)_ij, an fp32 matmul with the strictly-upper ones matrix.
    w = lax.dot_general(a * dov, jnp.where(rows < cols, 1.0, 0.0).astype(f32), (((1,), (0,)), ((), ())),
                        precision=lax.Precision.HIGHEST, preferred_element_type=f32)
    reads = jnp.sum(qf * dq_inter, axis=-1, keepdims=True)   # [C, 1]
    writes = jnp.sum(kf * dk_inter, axis=-1, keepdims=True)  # [C, 1]
    through = jnp.sum(ds * s, keepdims=True) * e_last        # [1, 1]
    dg = jnp.sum(jnp.where(rows >= cols, w + reads, 0.0) + jnp.where(rows < cols, writes, 0.0), axis=0,
                 keepdims=True) + through
    return dq, dk, dv, dg, ds_prev
