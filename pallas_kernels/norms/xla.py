"""RMSNorm, gated RMSNorm, L2 norm and rotary embeddings; computed in float32, returned in the input dtype."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.common import f32


def rms_norm(x, weight=None, *, eps=1e-6):
    xf = x.astype(f32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    if weight is not None:
        y = y * weight.astype(f32)
    return y.astype(x.dtype)


def gated_rms_norm(x, gate, weight=None, *, eps=1e-6):
    """rms_norm(x) * weight * silu(gate): the output norm of DeltaNet, Gated DeltaNet and Mamba2."""
    if gate.shape != x.shape:
        raise ValueError(f"gated_rms_norm: gate shape {gate.shape} must equal x shape {x.shape}")
    y = rms_norm(x.astype(f32), weight, eps=eps) * jax.nn.silu(gate.astype(f32))
    return y.astype(x.dtype)


def l2norm(x, *, eps=1e-6, axis=-1):
    xf = x.astype(f32)
    return (xf * jax.lax.rsqrt(jnp.sum(xf * xf, axis=axis, keepdims=True) + eps)).astype(x.dtype)


def rotary(x, positions=None, *, theta=10000.0):
    """Rotary embedding, half-split (rotate_half) layout. x [B,T,H,D]; positions [T] or [B,T] (default arange)."""
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"rotary: head dim must be even, got {d}")
    if positions is None:
        positions = jnp.arange(x.shape[1])
    positions = jnp.asarray(positions, f32)
    if positions.ndim == 1:
        positions = positions[None]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=f32) / d))
    ang = positions[..., None] * inv_freq  # [B|1, T, D/2]
    cos, sin = jnp.cos(ang)[:, :, None], jnp.sin(ang)[:, :, None]
    xf = x.astype(f32)
    x1, x2 = xf[..., : d // 2], xf[..., d // 2:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)
