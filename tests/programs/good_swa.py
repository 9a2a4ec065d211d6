# expect: accept
"""Sliding-window softmax attention (window 32) through ops.attention, written by hand."""
import jax
from flax import nnx

from aira_jax import ops

WINDOW = 32


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    self.h, self.dh = num_heads, d_model // num_heads
    init = nnx.initializers.normal(0.02)
    self.qkv = nnx.Linear(d_model, 3 * d_model, use_bias=False, kernel_init=init, rngs=rngs)
    self.out = nnx.Linear(d_model, d_model, use_bias=False, kernel_init=init, rngs=rngs)

  def __call__(self, x):
    b, t, d = x.shape
    q, k, v = (a.reshape(b, t, self.h, self.dh) for a in jax.numpy.split(self.qkv(x), 3, axis=-1))
    q, k = ops.rotary(q), ops.rotary(k)
    o = ops.attention(q, k, v, causal=True, sliding_window=WINDOW)
    return self.out(o.reshape(b, t, d))
