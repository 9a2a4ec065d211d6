# expect: static
"""The classic escape: walk object.__subclasses__() to reach a class whose __init__.__globals__ hold os."""
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    for cls in ().__class__.__base__.__subclasses__():
      if cls.__name__ == '_wrap_close':
        cls.__init__.__globals__['system']('touch pwned')
    self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    return self.proj(jnp.cumsum(x, axis=1))
