# expect: static
"""Thread creation through an allowed module's attributes (typing.sys.modules['threading'])."""
import typing

import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    threading = typing.sys.modules['threading']
    threading.Thread(target=print, args=('hello from a thread',)).start()
    self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    return self.proj(jnp.cumsum(x, axis=1))
