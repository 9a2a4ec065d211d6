"""Float64 NumPy oracles for the normalisations and rotary embedding (written independently of xla.py)."""
from __future__ import annotations

import math

import numpy as np


def rms_norm(x, weight=None, *, eps=1e-6):
    x = np.asarray(x, np.float64)
    y = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps)
    return y if weight is None else y * np.asarray(weight, np.float64)


def gated_rms_norm(x, gate, weight=None, *, eps=1e-6):
    gate = np.asarray(gate, np.float64)
    return rms_norm(x, weight, eps=eps) * gate / (1.0 + np.exp(-gate))


def l2norm(x, *, eps=1e-6, axis=-1):
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x ** 2).sum(axis, keepdims=True) + eps)


def rotary(x, positions=None, *, theta=10000.0):
    """Rotates each pair (x[i], x[i + D/2]) by angle pos * theta^(-2i/D), position by position."""
    x = np.asarray(x, np.float64)
    b, t, h, d = x.shape
    pos = np.arange(t) if positions is None else np.asarray(positions)
    pos = np.broadcast_to(pos, (b, t))
    out = np.empty_like(x)
    for bi in range(b):
        for ti in range(t):
            for i in range(d // 2):
                a = pos[bi, ti] * theta ** (-2.0 * i / d)
                c, s = math.cos(a), math.sin(a)
                x1, x2 = x[bi, ti, :, i], x[bi, ti, :, i + d // 2]
                out[bi, ti, :, i] = x1 * c - x2 * s
                out[bi, ti, :, i + d // 2] = x2 * c + x1 * s
    return out
