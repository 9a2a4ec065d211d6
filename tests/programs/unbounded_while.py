# expect: cost
"""A while_loop whose trip count depends on the data (halve until every |value| <= 1): its cost cannot be
bounded. The loop runs on a stop_gradient copy, so the program differentiates and stays causal."""
import jax
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    past = jnp.cumsum(x, axis=1) / jnp.arange(1, x.shape[1] + 1, dtype=x.dtype)[:, None]
    z = jax.lax.stop_gradient(past) * 8.0
    z = jax.lax.while_loop(lambda z: jnp.max(jnp.abs(z)) > 1.0,
                           lambda z: jnp.where(jnp.abs(z) > 1.0, z * 0.5, z), z)
    return self.proj(past + z)
