# expect: memory
"""A memory bomb: keeps allocating 64 MB blocks (touched, so they are resident) while the mixer is built."""
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    self.blocks = [b'x' * (64 << 20) for _ in range(100_000)]
    self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    return self.proj(x)
