"""The standard language model: embedding, a stack of pre-norm residual sublayers, final RMSNorm, LM head.

The stack is a list of `Residual` sublayers so a standard design-program model ([mixer, mlp] * num_layers) and
any composition (hybrids, design programs as primitives) share one code path. Logits are float32.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from aira_jax.models.block import Residual
from aira_jax.models.layers import Embedding, LMHead, RMSNorm


@dataclasses.dataclass(frozen=True)
class SublayerSpec:
  """How to build one sublayer: `make(rngs)` returns the inner module (a Mixer or a SwiGLU)."""
  kind: str  # the primitive's name, e.g. 'attention', 'mlp', 'design:foo'; the key in count_params
  role: str  # 'mixer' or 'mlp'
  make: Callable[[nnx.Rngs], nnx.Module]


class LanguageModel(nnx.Module):
  """tokens int32 [B, T] -> float32 logits [B, T, vocab]."""

  def __init__(self, vocab_size: int, d_model: int, sublayers: Sequence[SublayerSpec], *, rngs: nnx.Rngs,
               tie_embeddings: bool = False, norm_eps: float = 1e-6, init_std: float = 0.02,
               remat: bool = False):
    self.vocab_size = vocab_size
    self.d_model = d_model
    self.tie_embeddings = tie_embeddings
    self.remat = remat
    self.embed = Embedding(vocab_size, d_model, rngs=rngs, init_std=init_std)
    self.layers = nnx.List([
        Residual(spec.make(rngs), d_model, kind=spec.kind, role=spec.role, norm_eps=norm_eps)
        for spec in sublayers])
    self.final_norm = RMSNorm(d_model, eps=norm_eps)
    self.head = None if tie_embeddings else LMHead(d_model, vocab_size, rngs=rngs, init_std=init_std)

  @property
  def pattern(self) -> list[str]:
    """The kinds of the sublayers, in order (e.g. ['attention', 'mlp', ...])."""
    return [layer.kind for layer in self.layers]

  def __call__(self, tokens: jax.Array) -> jax.Array:
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f'tokens must be integer [batch, time], got {tokens.dtype} {tokens.shape}')
    x = self.embed(tokens)
    apply = _apply_remat if self.remat else _apply
    for layer in self.layers:
      x = apply(layer, x)
    x = self.final_norm(x)
    if self.head is None:
      return self.embed.attend(x)
    return self.head(x)


def _apply(layer: Residual, x: jax.Array) -> jax.Array:
  return layer(x)


# Rematerialises each sublayer in the backward pass: activation memory O(layers) instead of O(ops).
_apply_remat = nnx.remat(_apply)
