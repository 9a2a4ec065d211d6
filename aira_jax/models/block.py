"""Pre-norm residual sublayers and the standard block.

Every sublayer of a model is `x + inner(RMSNorm(x))`. The standard block is two of them, a mixer then a
SwiGLU MLP; a composition is any sequence of them. The inner module's output is cast back to the residual
stream's dtype so a mixer that computes in float32 cannot silently widen the stream.
"""
from __future__ import annotations

import jax
from flax import nnx

from aira_jax.models.layers import RMSNorm, SwiGLU


class Residual(nnx.Module):
  """x + inner(norm(x)). `kind` names the primitive (for counting), `role` is 'mixer' or 'mlp'."""

  def __init__(self, inner: nnx.Module, d_model: int, *, kind: str, role: str, norm_eps: float = 1e-6):
    self.kind = kind
    self.role = role
    self.norm = RMSNorm(d_model, eps=norm_eps)
    self.inner = inner

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.inner(self.norm(x))
    if not hasattr(y, 'shape') or y.shape != x.shape:
      raise ValueError(f"{self.role} '{self.kind}' returned shape {getattr(y, 'shape', type(y).__name__)}, "
                       f'expected {x.shape}')
    return x + y.astype(x.dtype)


class Block(nnx.Module):
  """The standard block: pre-RMSNorm -> mixer -> residual -> pre-RMSNorm -> SwiGLU -> residual."""

  def __init__(self, mixer: nnx.Module, d_model: int, mlp_hidden: int, *, rngs: nnx.Rngs, kind: str = 'mixer',
               norm_eps: float = 1e-6, init_std: float = 0.02, out_init_std: float | None = None):
    self.mixer = Residual(mixer, d_model, kind=kind, role='mixer', norm_eps=norm_eps)
    mlp = SwiGLU(d_model, mlp_hidden, rngs=rngs, init_std=init_std, out_init_std=out_init_std)
    self.mlp = Residual(mlp, d_model, kind='mlp', role='mlp', norm_eps=norm_eps)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.mlp(self.mixer(x))
