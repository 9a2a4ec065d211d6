# expect: causality
"""Future leakage that is invisible at initialisation: the weight on the next token starts at zero."""
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)
    self.future = nnx.Param(jnp.zeros((d_model,)))

  def __call__(self, x):
    nxt = jnp.concatenate([x[:, 1:], jnp.zeros_like(x[:, :1])], axis=1)
    past = jnp.cumsum(x, axis=1) / jnp.arange(1, x.shape[1] + 1, dtype=x.dtype)[:, None]
    return self.proj(past + self.future[...].astype(x.dtype) * nxt)
