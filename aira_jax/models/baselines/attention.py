"""Baseline design program: Llama-style causal softmax attention.

Rotary position embedding on queries and keys, grouped-query attention (`num_kv_heads`), optional sliding
window, no biases. The SwiGLU MLP belongs to the standard block, not to this mixer.
"""
import math

import jax
from flax import nnx

from aira_jax import ops


def _linear(d_in, d_out, axes, std, rngs):
  # Logical axis names let the trainer shard the kernel; eager_sharding=False defers placement to it.
  init = nnx.with_partitioning(nnx.initializers.normal(std), axes, eager_sharding=False)
  return nnx.Linear(d_in, d_out, use_bias=False, kernel_init=init, rngs=rngs)


class Mixer(nnx.Module):
  """Multi-head causal attention with RoPE and grouped-query heads."""

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, num_kv_heads: int | None = None,
               head_dim: int | None = None, sliding_window: int | None = None, rope_theta: float = 10000.0,
               init_std: float = 0.02, out_init_std: float | None = None, **kwargs):
    num_kv_heads = num_kv_heads or num_heads
    if num_heads % num_kv_heads:
      raise ValueError(f'num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})')
    self.num_heads = num_heads
    self.num_kv_heads = num_kv_heads
    self.head_dim = head_dim or d_model // num_heads
    if self.head_dim % 2:
      raise ValueError(f'rotary embedding needs an even head_dim, got {self.head_dim}')
    self.sliding_window = sliding_window
    self.rope_theta = rope_theta
    out_init_std = out_init_std or init_std
    self.q_proj = _linear(d_model, num_heads * self.head_dim, ('embed', 'heads'), init_std, rngs)
    self.k_proj = _linear(d_model, num_kv_heads * self.head_dim, ('embed', 'heads'), init_std, rngs)
    self.v_proj = _linear(d_model, num_kv_heads * self.head_dim, ('embed', 'heads'), init_std, rngs)
    self.o_proj = _linear(num_heads * self.head_dim, d_model, ('heads', 'embed'), out_init_std, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, _ = x.shape
    q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
    k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
    v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
    q = ops.rotary(q, theta=self.rope_theta)
    k = ops.rotary(k, theta=self.rope_theta)
    o = ops.attention(q, k, v, causal=True, sliding_window=self.sliding_window,
                      scale=1.0 / math.sqrt(self.head_dim))
    return self.o_proj(o.reshape(b, t, self.num_heads * self.head_dim))
