"""Float32 naive oracle for the short causal depthwise convolution: one output step at a time."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.common import f32


def naive_short_conv(x, weight, bias=None, *, activation="silu", initial_state=None, output_final_state=False):
    """y_t = act(b + sum_i weight[i] * x_{t-K+1+i}); inputs before t=0 come from initial_state (else zeros)."""
    ksize = weight.shape[0]
    xf = x.astype(f32)
    hist = (jnp.zeros((x.shape[0], ksize - 1, x.shape[2]), f32) if initial_state is None
            else initial_state.astype(f32))
    full = jnp.concatenate([hist, xf], axis=1)
    outs = []
    for t in range(x.shape[1]):
        window = full[:, t:t + ksize]  # the K inputs ending at step t
        y = jnp.sum(window * weight.astype(f32)[None], axis=1)
        if bias is not None:
            y = y + bias.astype(f32)
        outs.append(y)
    y = jnp.stack(outs, axis=1)
    if activation == "silu":
        y = jax.nn.silu(y)
    y = y.astype(x.dtype)
    return (y, full[:, full.shape[1] - (ksize - 1):].astype(x.dtype)) if output_final_state else y
