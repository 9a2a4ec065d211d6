"""Baseline design program: Gated DeltaNet (Yang, Kautz & Hatamizadeh, 2025).

Follows flash-linear-attention's GatedDeltaNet layer: q/k/v projections with a width-4 causal SiLU convolution,
L2-normalised q and k, beta = sigmoid(W_b x), a Mamba2-style per-head scalar decay
g = -exp(A_log) * softplus(W_a x + dt_bias) (a log decay, <= 0), the chunked gated delta rule, and a per-head
gated RMSNorm with the output gate W_g x before the output projection. No biases. expand_v defaults to 1 here
(fla uses 2) so the seed mixers have comparable parameter counts; pass expand_v=2 for the published shape.
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


def _dt_bias(num_heads, rngs, dt_min=1e-3, dt_max=1e-1, dt_floor=1e-4):
  # Mamba2's init: dt log-uniform in [dt_min, dt_max]; store softplus^-1(dt) so softplus(dt_bias) = dt.
  u = jax.random.uniform(rngs.params(), (num_heads,), jnp.float32)
  dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
  dt = jnp.maximum(dt, dt_floor)
  return dt + jnp.log(-jnp.expm1(-dt))


class Mixer(nnx.Module):
  """Gated DeltaNet: S_t = a_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t k_t v_t^T, o_t = S_t^T q_t."""

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
    self.a_proj = _linear(d_model, num_heads, ('embed', None), init_std, rngs)
    self.b_proj = _linear(d_model, num_heads, ('embed', None), init_std, rngs)
    self.g_proj = _linear(d_model, value_dim, ('embed', 'heads'), init_std, rngs)
    self.q_conv = _conv_weight(conv_size, key_dim, rngs)
    self.k_conv = _conv_weight(conv_size, key_dim, rngs)
    self.v_conv = _conv_weight(conv_size, value_dim, rngs)
    # A in U[0, 16] as in fla (Mamba2 uses [1, 16]); the decay rate is exp(A_log) * dt.
    a = jax.random.uniform(rngs.params(), (num_heads,), jnp.float32, 0.0, 16.0)
    self.A_log = nnx.Param(jnp.log(jnp.maximum(a, 1e-4)), out_sharding=(None,), eager_sharding=False)
    self.dt_bias = nnx.Param(_dt_bias(num_heads, rngs), out_sharding=(None,), eager_sharding=False)
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
    # The decay is computed in float32: it is summed over time inside the kernel.
    a = self.a_proj(x).astype(jnp.float32) + self.dt_bias[...].astype(jnp.float32)
    g = -jnp.exp(self.A_log[...].astype(jnp.float32)) * jax.nn.softplus(a)
    o = ops.gated_delta_rule(q, k, v, g, beta)
    gate = self.g_proj(x).reshape(b, t, h, dv)
    o = ops.gated_rms_norm(o, gate, self.o_norm[...], eps=self.norm_eps)
    return self.o_proj(o.reshape(b, t, h * dv))
