# expect: cost
"""Quadratic cost hidden in a lax.scan over time: each step attends to all T keys (masked to the past).

XLA's cost analysis counts the scan body once, so only the jaxpr count (body x length) sees T^2.
"""
import jax
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    self.qkv = nnx.Linear(d_model, 3 * d_model, use_bias=False, rngs=rngs)
    self.out = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    b, t, d = x.shape
    q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
    positions = jnp.arange(t)

    def step(carry, inputs):
      q_t, i = inputs
      logits = jnp.einsum('bd,bsd->bs', q_t, k) / jnp.sqrt(d)
      logits = jnp.where(positions[None, :] <= i, logits, -1e30)
      o_t = jnp.einsum('bs,bsd->bd', jax.nn.softmax(logits, axis=-1), v)
      return carry, o_t

    _, o = jax.lax.scan(step, None, (jnp.swapaxes(q, 0, 1), positions))
    return self.out(jnp.swapaxes(o, 0, 1))
