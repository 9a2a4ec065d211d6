# expect: static
"""Forbidden import: subprocess, used to run a command while the mixer is built."""
import subprocess

import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    subprocess.run(['touch', 'pwned'], check=False)
    self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    return self.proj(jnp.cumsum(x, axis=1))
