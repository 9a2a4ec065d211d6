# expect: static
"""File access: reads a file with the open builtin while the mixer is built."""
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    with open('/etc/hostname', encoding='utf-8') as f:
      self.host = f.read()
    self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    return self.proj(jnp.cumsum(x, axis=1))
