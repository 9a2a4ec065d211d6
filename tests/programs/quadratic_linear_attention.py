# expect: cost
"""Quadratic cost: causal linear attention written as a full T x T score matrix with a causal mask."""
import jax
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    self.h = num_heads
    self.qkv = nnx.Linear(d_model, 3 * d_model, use_bias=False, rngs=rngs)
    self.out = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    b, t, d = x.shape
    q, k, v = (a.reshape(b, t, self.h, d // self.h) for a in jnp.split(self.qkv(x), 3, axis=-1))
    q, k = jax.nn.elu(q) + 1, jax.nn.elu(k) + 1
    scores = jnp.einsum('bthd,bshd->bhts', q, k)
    scores = scores * jnp.tril(jnp.ones((t, t), x.dtype))
    norm = scores.sum(-1, keepdims=True) + 1e-6
    o = jnp.einsum('bhts,bshd->bthd', scores / norm, v)
    return self.out(o.reshape(b, t, d))
