"""Float32 naive recurrent oracle for simple GLA / SSD."""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from pallas_kernels import common
from pallas_kernels.common import f32


def recurrent_simple_gla(q, k, v, g, *, scale=None, initial_state=None, output_final_state=False):
    """S_t = exp(g_t) S_{t-1} + k_t v_t^T ; o_t = scale q_t^T S_t."""
    scale = common.default_scale(q, scale)
    bsz, _, heads, dk = q.shape
    dv = v.shape[-1]
    hi = lax.Precision.HIGHEST
    q = q.astype(f32) * scale
    k, v, g = k.astype(f32), v.astype(f32), g.astype(f32)

    def step(s, xs):
        q_t, k_t, v_t, g_t = xs
        s = s * jnp.exp(g_t)[..., None, None] + jnp.einsum("bhk,bhv->bhkv", k_t, v_t, precision=hi)
        return s, jnp.einsum("bhk,bhkv->bhv", q_t, s, precision=hi)

    s0 = jnp.zeros((bsz, heads, dk, dv), f32) if initial_state is None else initial_state.astype(f32)
    s_final, o = lax.scan(step, s0, tuple(jnp.moveaxis(t, 1, 0) for t in (q, k, v, g)))
    o = jnp.moveaxis(o, 0, 1)
    return (o, s_final) if output_final_state else o
