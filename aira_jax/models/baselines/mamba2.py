"""Baseline design program: Mamba2 (Dao & Gu, 2024), the SSD layer.

One input projection gives z (gate), x, B, C and dt; a width-4 causal SiLU convolution runs over [x, B, C];
dt = softplus(dt + dt_bias), A = -exp(A_log); the state-space recurrence h_t = exp(A dt_t) h_{t-1} + B_t (x_t dt_t)^T,
y_t = C_t^T h_t runs as a scalar-decay linear attention (ops.simple_gla with q=C, k=B, v=x*dt, g=A*dt, scale 1);
then the D skip, Mamba2's gated RMSNorm (gate first: rmsnorm(y * silu(z)), per group) and the output projection.
Heads come from head_dim (d_inner // head_dim), as in Mamba2, so num_heads is not used.
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


def _uniform(shape, bound, axes, rngs):
  w = jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound)
  return nnx.Param(w, out_sharding=axes, eager_sharding=False)


def _dt_bias(num_heads, rngs, dt_min=1e-3, dt_max=1e-1, dt_floor=1e-4):
  # dt log-uniform in [dt_min, dt_max]; store softplus^-1(dt) so that softplus(dt_bias) = dt at init.
  u = jax.random.uniform(rngs.params(), (num_heads,), jnp.float32)
  dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
  dt = jnp.maximum(dt, dt_floor)
  return dt + jnp.log(-jnp.expm1(-dt))


class Mixer(nnx.Module):
  """Mamba2 selective state-space mixer (SSD), ngroups groups of B/C shared across heads."""

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, expand: int = 2, state_size: int = 64,
               head_dim: int = 64, ngroups: int = 1, conv_size: int = 4, norm_eps: float = 1e-5,
               init_std: float = 0.02, out_init_std: float | None = None, **kwargs):
    d_inner = expand * d_model
    if d_inner % head_dim:
      raise ValueError(f'expand * d_model ({d_inner}) must be a multiple of head_dim ({head_dim})')
    self.nheads = d_inner // head_dim
    if self.nheads % ngroups:
      raise ValueError(f'the number of heads ({self.nheads}) must be a multiple of ngroups ({ngroups})')
    self.d_inner, self.head_dim, self.state_size, self.ngroups = d_inner, head_dim, state_size, ngroups
    self.norm_eps = norm_eps
    out_init_std = out_init_std or init_std
    conv_dim = d_inner + 2 * ngroups * state_size
    self.in_proj = _linear(d_model, 2 * d_inner + 2 * ngroups * state_size + self.nheads, ('embed', 'mlp'),
                           init_std, rngs)
    # PyTorch's Conv1d default init (fan_in = width), which Mamba2 keeps; the conv has a bias.
    bound = 1.0 / math.sqrt(conv_size)
    self.conv_weight = _uniform((conv_size, conv_dim), bound, (None, 'mlp'), rngs)
    self.conv_bias = _uniform((conv_dim,), bound, ('mlp',), rngs)
    self.dt_bias = nnx.Param(_dt_bias(self.nheads, rngs), out_sharding=(None,), eager_sharding=False)
    a = jax.random.uniform(rngs.params(), (self.nheads,), jnp.float32, 1.0, 16.0)
    self.A_log = nnx.Param(jnp.log(a), out_sharding=(None,), eager_sharding=False)
    self.D = nnx.Param(jnp.ones((self.nheads,), jnp.float32), out_sharding=(None,), eager_sharding=False)
    self.norm = nnx.Param(jnp.ones((d_inner,), jnp.float32), out_sharding=('mlp',), eager_sharding=False)
    self.out_proj = _linear(d_inner, d_model, ('mlp', 'embed'), out_init_std, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, _ = x.shape
    h, p, n, ng = self.nheads, self.head_dim, self.state_size, self.ngroups
    zxbcdt = self.in_proj(x)
    z, xbc, dt = jnp.split(zxbcdt, [self.d_inner, 2 * self.d_inner + 2 * ng * n], axis=-1)
    xbc = ops.short_conv(xbc, self.conv_weight[...], self.conv_bias[...], activation='silu')
    xs, bs, cs = jnp.split(xbc, [self.d_inner, self.d_inner + ng * n], axis=-1)
    xs = xs.reshape(b, t, h, p)
    # B and C are shared by the heads of a group.
    bs = jnp.repeat(bs.reshape(b, t, ng, n), h // ng, axis=2)
    cs = jnp.repeat(cs.reshape(b, t, ng, n), h // ng, axis=2)
    # dt and the log decay in float32: the decay is summed over time inside the scan.
    dt = jax.nn.softplus(dt.astype(jnp.float32) + self.dt_bias[...].astype(jnp.float32))
    a = -jnp.exp(self.A_log[...].astype(jnp.float32))
    v = (xs.astype(jnp.float32) * dt[..., None]).astype(xs.dtype)
    y = ops.simple_gla(cs, bs, v, a * dt, scale=1.0)
    y = y + xs * self.D[...].astype(xs.dtype)[:, None]
    # Mamba2's RMSNormGated with norm_before_gate=False: gate, then normalise each group.
    y = (y.reshape(b, t, self.d_inner) * jax.nn.silu(z)).reshape(b, t, ng, self.d_inner // ng)
    y = ops.rms_norm(y, self.norm[...].reshape(ng, self.d_inner // ng), eps=self.norm_eps)
    return self.out_proj(y.reshape(b, t, self.d_inner))
