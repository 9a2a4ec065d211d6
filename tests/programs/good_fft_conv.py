# expect: accept
"""A causal O(T log T) long convolution computed with FFTs (Hyena/S4-style implicit kernel).

The kernel is generated from a few parameters per channel (decay and frequency), zero-padded to 2T so the
circular FFT convolution equals the linear causal one; gated by a parallel branch.
"""
import math

import jax
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, init_std: float = 0.02, **kwargs):
    init = nnx.initializers.normal(init_std)
    self.in_proj = nnx.Linear(d_model, 2 * d_model, use_bias=False, kernel_init=init, rngs=rngs)
    self.out_proj = nnx.Linear(d_model, d_model, use_bias=False, kernel_init=init, rngs=rngs)
    self.log_rate = nnx.Param(jnp.linspace(math.log(1e-3), math.log(0.5), d_model))
    self.freq = nnx.Param(0.1 * jax.random.normal(rngs.params(), (d_model,)))
    self.skip = nnx.Param(jnp.ones((d_model,)))

  def __call__(self, x):
    t = x.shape[1]
    u, gate = jnp.split(self.in_proj(x), 2, axis=-1)
    pos = jnp.arange(t, dtype=jnp.float32)[:, None]
    kernel = jnp.exp(-jnp.exp(self.log_rate[...]) * pos) * jnp.cos(self.freq[...] * pos)  # [T, d]
    n = 2 * t
    uf = jnp.fft.rfft(u.astype(jnp.float32), n=n, axis=1)
    kf = jnp.fft.rfft(kernel, n=n, axis=0)
    y = jnp.fft.irfft(uf * kf[None], n=n, axis=1)[:, :t]
    y = y + u.astype(jnp.float32) * self.skip[...]
    return self.out_proj((y * jax.nn.silu(gate.astype(jnp.float32))).astype(x.dtype))
