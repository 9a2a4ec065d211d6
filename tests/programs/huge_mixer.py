# expect: budget
"""Parameter budget: sixteen d x d projections per layer, far above a baseline's count."""
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    self.up = nnx.Linear(d_model, 8 * d_model, use_bias=False, rngs=rngs)
    self.down = nnx.Linear(8 * d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    past = jnp.cumsum(x, axis=1) / jnp.arange(1, x.shape[1] + 1, dtype=x.dtype)[:, None]
    return self.down(jnp.tanh(self.up(past)))
