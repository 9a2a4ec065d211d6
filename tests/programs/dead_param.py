# expect: gradients
"""A parameter that never reaches the output: `self.unused` gets an all-zero gradient."""
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)
    self.unused = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    past = jnp.cumsum(x, axis=1) / jnp.arange(1, x.shape[1] + 1, dtype=x.dtype)[:, None]
    return self.proj(past)
