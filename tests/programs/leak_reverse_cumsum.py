# expect: causality
"""Future leakage: a cumulative sum taken from the end of the sequence (a reversed cumsum)."""
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    t = x.shape[1]
    summed = jnp.cumsum(x[:, ::-1], axis=1)[:, ::-1]
    return self.proj(summed / t)
