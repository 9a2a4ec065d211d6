"""Float32 naive oracle for causal softmax attention (GQA, sliding window, KV prefix), one query at a time."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels.common import f32


def naive_attention(q, k, v, *, causal=True, sliding_window=None, scale=None, initial_state=None,
                    output_final_state=False):
    """q [B,T,Hq,D]; k, v [B,S,Hkv,D]; initial_state = (k_prefix, v_prefix) seen before the first query."""
    hi = lax.Precision.HIGHEST
    out_dtype = v.dtype
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if initial_state is not None:
        k = jnp.concatenate([initial_state[0].astype(k.dtype), k], axis=1)
        v = jnp.concatenate([initial_state[1].astype(v.dtype), v], axis=1)
    q, kf, vf = q.astype(f32) * scale, k.astype(f32), v.astype(f32)
    groups = q.shape[2] // k.shape[2]
    kf, vf = jnp.repeat(kf, groups, axis=2), jnp.repeat(vf, groups, axis=2)
    offset = k.shape[1] - q.shape[1]
    key_pos = jnp.arange(k.shape[1])

    def one_query(i):
        s = jnp.einsum("bhd,bshd->bhs", q[:, i], kf, precision=hi)
        pos = i + offset
        ok = jnp.ones_like(key_pos, bool)
        if causal:
            ok = key_pos <= pos
        if sliding_window is not None:
            ok = ok & (key_pos > pos - sliding_window)
        s = jnp.where(ok, s, -jnp.inf)
        return jnp.einsum("bhs,bshd->bhd", jax.nn.softmax(s, axis=-1), vf, precision=hi)

    o = jnp.stack([one_query(i) for i in range(q.shape[1])], axis=1).astype(out_dtype)
    if output_final_state:
        return o, _cache(k, v, sliding_window)
    return o


def _cache(k, v, sliding_window):
    if sliding_window is not None:
        keep = max(sliding_window - 1, 0)
        return k[:, k.shape[1] - keep:], v[:, v.shape[1] - keep:]
    return k, v
