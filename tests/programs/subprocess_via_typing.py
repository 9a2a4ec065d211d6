# expect: static
"""A process launched through an allowed module's attributes (typing.sys.modules['subprocess'])."""
import typing

import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    typing.sys.modules['subprocess'].run(['touch', 'pwned'], check=False)
    self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    return self.proj(jnp.cumsum(x, axis=1))
