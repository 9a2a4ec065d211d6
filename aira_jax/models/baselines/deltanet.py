"""Baseline design program: DeltaNet (Yang et al., 2024), as ASI-Arch seeds its search.

Follows flash-linear-attention's DeltaNet layer: q/k/v projections, a causal depthwise convolution of width 4
with SiLU on each (the SiLU is the convolution's activation, as in fla), L2-normalised q and k, a per-head
write strength beta = sigmoid(W_b x), the chunked delta rule, then a per-head gated RMSNorm with the output
gate g = W_g x and the output projection. No biases.
"""
import math

import jax
import jax.numpy as jnp
from flax import nnx

from aira_jax import ops


def _linear(d_in, d_out, axes, std, rngs):
  # Logical axis names let the trainer shard the kernel; eager_sharding=False defers placement to it.
  init = nnx.with_partitioning(nnx.initializers.normal(std), axes, eager_sharding=False)
  return nnx.Linear(d_in, d_out, use_bias=False, kernel_init=init, rngs=rngs)


def _conv_weight(width, channels, rngs):
  # PyTorch's default for a depthwise Conv1d (fan_in = width), which fla's ShortConvolution keeps.
  bound = 1.0 / math.sqrt(width)
  w = jax.random.uniform(rngs.params(), (width, channels), jnp.float32, -bound, bound)
  return nnx.Param(w, out_sharding=(None, 'heads'), eager_sharding=False)


class Mixer(nnx.Module):
  """DeltaNet: S_t = S_{t-1} (I - beta_t k_t k_t^T) + beta_t k_t v_t^T, o_t = S_t^T q_t."""

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, head_dim: int | None = None,
               expand_v: float = 1.0, conv_size: int = 4, norm_eps: float = 1e-5, init_std: float = 0.02,
               out_init_std: float | None = None, **kwargs):
    self.num_heads = num_heads
    self.head_k_dim = head_dim or d_model // num_heads
    self.head_v_dim = int(self.head_k_dim * expand_v)
    if self.head_v_dim < 1:
      raise ValueError(f'expand_v={expand_v} leaves no value dimensions')
    self.norm_eps = norm_eps
    key_dim = num_heads * self.head_k_dim
    value_dim = num_heads * self.head_v_dim
    out_init_std = out_init_std or init_std
    self.q_proj = _linear(d_model, key_dim, ('embed', 'heads'), init_std, rngs)
    self.k_proj = _linear(d_model, key_dim, ('embed', 'heads'), init_std, rngs)
    self.v_proj = _linear(d_model, value_dim, ('embed', 'heads'), init_std, rngs)
    self.b_proj = _linear(d_model, num_heads, ('embed', None), init_std, rngs)
    self.g_proj = _linear(d_model, value_dim, ('embed', 'heads'), init_std, rngs)
    self.q_conv = _conv_weight(conv_size, key_dim, rngs)
    self.k_conv = _conv_weight(conv_size, key_dim, rngs)
    self.v_conv = _conv_weight(conv_size, value_dim, rngs)
    self.o_norm = nnx.Param(jnp.ones((self.head_v_dim,), jnp.float32), out_sharding=('kv',),
                            eager_sharding=False)
    self.o_proj = _linear(value_dim, d_model, ('heads', 'embed'), out_init_std, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, _ = x.shape
    h, dk, dv = self.num_heads, self.head_k_dim, self.head_v_dim
    q = ops.short_conv(self.q_proj(x), self.q_conv[...], activation='silu').reshape(b, t, h, dk)
    k = ops.short_conv(self.k_proj(x), self.k_conv[...], activation='silu').reshape(b, t, h, dk)
    v = ops.short_conv(self.v_proj(x), self.v_conv[...], activation='silu').reshape(b, t, h, dv)
    q, k = ops.l2norm(q), ops.l2norm(k)
    beta = jax.nn.sigmoid(self.b_proj(x))
    o = ops.delta_rule(q, k, v, beta)
    g = self.g_proj(x).reshape(b, t, h, dv)
    o = ops.gated_rms_norm(o, g, self.o_norm[...], eps=self.norm_eps)
    return self.o_proj(o.reshape(b, t, h * dv))
