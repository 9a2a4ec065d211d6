# expect: accept
"""A gated diagonal linear RNN run with lax.scan over time: O(T) work with an O(d) state."""
import jax
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    init = nnx.initializers.normal(0.02)
    self.in_proj = nnx.Linear(d_model, 3 * d_model, use_bias=False, kernel_init=init, rngs=rngs)
    self.out_proj = nnx.Linear(d_model, d_model, use_bias=False, kernel_init=init, rngs=rngs)

  def __call__(self, x):
    u, a, g = jnp.split(self.in_proj(x).astype(jnp.float32), 3, axis=-1)
    decay = jax.nn.sigmoid(a + 2.0)

    def step(h, inputs):
      u_t, d_t = inputs
      h = d_t * h + (1 - d_t) * u_t
      return h, h

    h0 = jnp.zeros((x.shape[0], x.shape[2]), jnp.float32)
    _, hs = jax.lax.scan(step, h0, (jnp.swapaxes(u, 0, 1), jnp.swapaxes(decay, 0, 1)))
    y = jnp.swapaxes(hs, 0, 1) * jax.nn.silu(g)
    return self.out_proj(y.astype(x.dtype))
