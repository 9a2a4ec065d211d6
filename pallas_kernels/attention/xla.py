"""Causal softmax attention through `jax.nn.dot_product_attention` (cuDNN flash attention where it applies)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.attention.reference import _cache


def cudnn_applies(q, k, sliding_window) -> bool:
    """cuDNN's fused attention: GPU, 16-bit inputs, head dim a multiple of 8 up to 128 (256 on newer cuDNN)."""
    return (jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
            and q.shape[-1] % 8 == 0 and q.shape[-1] <= 128 and q.shape[1] == k.shape[1])


def attention(q, k, v, *, causal=True, sliding_window=None, scale=None, initial_state=None,
              output_final_state=False, implementation=None):
    """q [B,T,Hq,D]; k, v [B,T,Hkv,D] with Hq a multiple of Hkv; sliding_window W: each query sees W keys.

    initial_state is a KV prefix (k_prefix, v_prefix); the final state is the KV cache a next call continues from
    (the last W-1 keys for a sliding window).
    """
    if q.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention: q [B,T,Hq,D], k and v [B,S,Hkv,D]; got {q.shape}, {k.shape}, {v.shape}")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"attention: query heads {q.shape[2]} must be a multiple of kv heads {k.shape[2]}")
    if sliding_window is not None and sliding_window < 1:
        raise ValueError(f"attention: sliding_window must be >= 1, got {sliding_window}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if initial_state is not None:
        k_all = jnp.concatenate([initial_state[0].astype(k.dtype), k], axis=1)
        v_all = jnp.concatenate([initial_state[1].astype(v.dtype), v], axis=1)
        # Queries sit at the end of the key sequence: build the mask explicitly.
        offset = k_all.shape[1] - q.shape[1]
        qpos = jnp.arange(q.shape[1])[:, None] + offset
        kpos = jnp.arange(k_all.shape[1])[None, :]
        mask = (kpos <= qpos) if causal else jnp.ones_like(kpos <= qpos)
        if sliding_window is not None:
            mask = mask & (kpos > qpos - sliding_window)
        o = jax.nn.dot_product_attention(q, k_all, v_all, scale=scale, mask=mask[None, None],
                                         implementation="xla")
    else:
        k_all, v_all = k, v
        window = None if sliding_window is None else (sliding_window - 1, 0 if causal else sliding_window - 1)
        if implementation is None:
            implementation = "cudnn" if cudnn_applies(q, k, sliding_window) else "xla"
        o = jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=causal, local_window_size=window,
                                         implementation=implementation)
    o = o.astype(v.dtype)
    return (o, _cache(k_all, v_all, sliding_window)) if output_final_state else o
