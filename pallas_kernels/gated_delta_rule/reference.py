"""Float32 naive recurrent oracle for the gated delta rule (one time step at a time)."""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from pallas_kernels import common
from pallas_kernels.common import f32


def recurrent_gated_delta_rule(q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=False):
    """S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T ; o_t = scale q_t^T S_t. g=None: no decay."""
    scale = common.default_scale(q, scale)
    bsz, _, heads, dk = q.shape
    dv = v.shape[-1]
    hi = lax.Precision.HIGHEST
    q = q.astype(f32) * scale
    k, v, beta = k.astype(f32), v.astype(f32), beta.astype(f32)
    g = jnp.zeros_like(beta) if g is None else g.astype(f32)

    def step(s, xs):
        q_t, k_t, v_t, g_t, b_t = xs
        s = s * jnp.exp(g_t)[..., None, None]
        pred = jnp.einsum("bhk,bhkv->bhv", k_t, s, precision=hi)
        u = b_t[..., None] * (v_t - pred)
        s = s + jnp.einsum("bhk,bhv->bhkv", k_t, u, precision=hi)
        return s, jnp.einsum("bhk,bhkv->bhv", q_t, s, precision=hi)

    s0 = jnp.zeros((bsz, heads, dk, dv), f32) if initial_state is None else initial_state.astype(f32)
    xs = tuple(jnp.moveaxis(t, 1, 0) for t in (q, k, v, g, beta))
    s_final, o = lax.scan(step, s0, xs)
    o = jnp.moveaxis(o, 0, 1)
    return (o, s_final) if output_final_state else o
