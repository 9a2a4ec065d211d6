"""Short causal depthwise convolution as a sum of K shifted slices (K is 2-8 in practice; fuses well in XLA)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.common import f32

ACTIVATIONS = (None, "silu", "identity")


def short_conv(x, weight, bias=None, *, activation="silu", initial_state=None, output_final_state=False):
    """x [B,T,C]; weight [K,C]; state = the last K-1 inputs [B,K-1,C]."""
    if x.ndim != 3 or weight.ndim != 2 or weight.shape[1] != x.shape[2]:
        raise ValueError(f"short_conv: x must be [B,T,C] and weight [K,C]; got {x.shape} and {weight.shape}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"short_conv: activation must be one of {ACTIVATIONS}, got {activation!r}")
    ksize, t = weight.shape[0], x.shape[1]
    if initial_state is None:
        hist = jnp.zeros((x.shape[0], ksize - 1, x.shape[2]), x.dtype)
    else:
        if initial_state.shape != (x.shape[0], ksize - 1, x.shape[2]):
            raise ValueError(f"short_conv: initial_state must be {(x.shape[0], ksize - 1, x.shape[2])}, "
                             f"got {initial_state.shape}")
        hist = initial_state.astype(x.dtype)
    full = jnp.concatenate([hist, x], axis=1)
    w = weight.astype(f32)
    y = sum(full[:, i:i + t].astype(f32) * w[i] for i in range(ksize))
    if bias is not None:
        y = y + bias.astype(f32)
    if activation == "silu":
        y = jax.nn.silu(y)
    y = y.astype(x.dtype)
    return (y, full[:, full.shape[1] - (ksize - 1):]) if output_final_state else y
