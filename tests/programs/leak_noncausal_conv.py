# expect: causality
"""Future leakage: a depthwise convolution with 'SAME' (centred) padding sees 2 tokens ahead."""
import jax
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    self.d = d_model
    self.weight = nnx.Param(0.3 * jax.random.normal(rngs.params(), (5, 1, d_model)))
    self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    y = jax.lax.conv_general_dilated(x, self.weight[...].astype(x.dtype), window_strides=(1,), padding='SAME',
                                     dimension_numbers=('NWC', 'WIO', 'NWC'), feature_group_count=self.d)
    return self.proj(y)
