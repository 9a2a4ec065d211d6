# expect: static
"""Network through an allowed module: typing re-exports sys, whose module table holds socket."""
import typing

import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    modules = getattr(typing, 'sys').modules
    sock = modules['socket'].socket() if 'socket' in modules else None
    self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    return self.proj(jnp.cumsum(x, axis=1))
