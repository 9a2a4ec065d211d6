"""Causal softmax attention through `jax.nn.dot_product_attention` (cuDNN flash attention where it applies)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.attention.reference import _cache


def cudnn_applies(q, k, sliding_window) -> bool:
    """cuDNN's fused attention: GPU, 16-bit inputs, head dim a multiple of 8 up to 128 (256 on newer cuDNN)."""
    return (jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
            and q.shape[-1] % 8 == 0 and q.shape[-1] <= 128 and q.shape[1] == k.shape[1])


def blocked_sliding_window(q, k, v, window: int, scale: float) -> jax.Array:
    """Causal sliding-window attention in O(T * W): blocks of W queries see their own and the previous block.

    Dense masked attention (what dot_product_attention does with a window off cuDNN) still costs O(T^2); this
    computes only the 2W-wide band. GQA is handled by grouping query heads, never by repeating k and v.
    """
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    g = hq // hkv
    w = int(window)
    n = -(-t // w)
    pad = [(0, 0), (0, n * w - t), (0, 0), (0, 0)]
    qb = jnp.pad(q, pad).reshape(b, n, w, hkv, g, d)
    kb, vb = (jnp.pad(a, pad).reshape(b, n, w, hkv, a.shape[-1]) for a in (k, v))

    def with_previous(a):  # [B, n, w, ...] -> [B, n, 2w, ...]: previous block then own block
        prev = jnp.concatenate([jnp.zeros_like(a[:, :1]), a[:, :-1]], axis=1)
        return jnp.concatenate([prev, a], axis=2)

    kk, vv = with_previous(kb), with_previous(vb)
    prec = jax.lax.Precision.HIGHEST if q.dtype == jnp.float32 else None
    logits = jnp.einsum("bnqhgd,bnkhd->bnhgqk", qb, kk, precision=prec,
                        preferred_element_type=jnp.float32) * scale
    qpos = jnp.arange(w)[:, None] + w          # query i of a block sits at 2w-band position w + i
    kpos = jnp.arange(2 * w)[None, :]
    band = (kpos <= qpos) & (kpos > qpos - w)  # [w, 2w], the same for every block
    first = jnp.arange(n)[:, None, None] == 0  # the first block has no previous block
    mask = band[None] & ~(first & (kpos < w)[None])
    logits = jnp.where(mask[None, :, None, None], logits, -jnp.inf)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bnhgqk,bnkhd->bnqhgd", probs.astype(v.dtype) if v.dtype != jnp.float32 else probs, vv,
                     precision=prec, preferred_element_type=jnp.float32)
    return out.reshape(b, n * w, hq, v.shape[-1])[:, :t].astype(v.dtype)


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
    elif (causal and sliding_window is not None and 2 * sliding_window <= q.shape[1] and q.shape[1] == k.shape[1]
          and implementation != "cudnn" and not cudnn_applies(q, k, sliding_window)):
        # Long sequence, short window, no fused kernel: the banded form is O(T W) instead of O(T^2).
        k_all, v_all = k, v
        o = blocked_sliding_window(q, k, v, sliding_window, scale)
    else:
        k_all, v_all = k, v
        window = None if sliding_window is None else (sliding_window - 1, 0 if causal else sliding_window - 1)
        if implementation is None:
            implementation = "cudnn" if cudnn_applies(q, k, sliding_window) else "xla"
        o = jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=causal, local_window_size=window,
                                         implementation=implementation)
    o = o.astype(v.dtype)
    return (o, _cache(k_all, v_all, sliding_window)) if output_final_state else o
