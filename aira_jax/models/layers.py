"""The project's own layers: embedding, RMSNorm, SwiGLU MLP and the LM head.

Every parameter carries logical axis names ('vocab', 'embed', 'mlp') in the Variable metadata key
`out_sharding` (flax 0.12 NNX). eager_sharding=False keeps creation mesh-free: the trainer maps the names to mesh
axes, e.g. `with nnx.logical_axis_rules(rules): nnx.get_partition_spec(nnx.state(model, nnx.Param))`.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from aira_jax import ops


def normal_param(rngs: nnx.Rngs, shape: Sequence[int], std: float, axes: Sequence[str | None]) -> nnx.Param:
  """A float32 N(0, std^2) parameter annotated with logical axis names."""
  value = std * jax.random.normal(rngs.params(), tuple(shape), jnp.float32)
  return nnx.Param(value, out_sharding=tuple(axes), eager_sharding=False)


class RMSNorm(nnx.Module):
  """RMSNorm over the last axis; computes in float32 (inside ops.rms_norm), returns the input dtype."""

  def __init__(self, dim: int, *, eps: float = 1e-6):
    self.eps = eps
    self.weight = nnx.Param(jnp.ones((dim,), jnp.float32), out_sharding=('embed',), eager_sharding=False)

  def __call__(self, x: jax.Array) -> jax.Array:
    return ops.rms_norm(x, self.weight[...], eps=self.eps)


class SwiGLU(nnx.Module):
  """The MLP of the standard block: down(silu(gate(x)) * up(x)), no biases."""

  def __init__(self, d_model: int, hidden: int, *, rngs: nnx.Rngs, init_std: float = 0.02,
               out_init_std: float | None = None):
    self.gate = normal_param(rngs, (d_model, hidden), init_std, ('embed', 'mlp'))
    self.up = normal_param(rngs, (d_model, hidden), init_std, ('embed', 'mlp'))
    self.down = normal_param(rngs, (hidden, d_model), out_init_std or init_std, ('mlp', 'embed'))

  def __call__(self, x: jax.Array) -> jax.Array:
    h = jax.nn.silu(x @ self.gate[...].astype(x.dtype)) * (x @ self.up[...].astype(x.dtype))
    return h @ self.down[...].astype(x.dtype)


class Embedding(nnx.Module):
  """Token embedding; its dtype (float32, or bfloat16 once the trainer casts) sets the residual stream's."""

  def __init__(self, vocab_size: int, d_model: int, *, rngs: nnx.Rngs, init_std: float = 0.02):
    self.vocab_size = vocab_size
    self.weight = normal_param(rngs, (vocab_size, d_model), init_std, ('vocab', 'embed'))

  def __call__(self, tokens: jax.Array) -> jax.Array:
    return jnp.take(self.weight[...], tokens, axis=0)

  def attend(self, x: jax.Array) -> jax.Array:
    """Tied LM head: float32 logits against the embedding matrix."""
    return jnp.einsum('btd,vd->btv', x, self.weight[...].astype(x.dtype), preferred_element_type=jnp.float32)


class LMHead(nnx.Module):
  """Untied LM head; logits come out in float32 whatever the compute dtype."""

  def __init__(self, d_model: int, vocab_size: int, *, rngs: nnx.Rngs, init_std: float = 0.02):
    self.weight = normal_param(rngs, (d_model, vocab_size), init_std, ('embed', 'vocab'))

  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.einsum('btd,dv->btv', x, self.weight[...].astype(x.dtype), preferred_element_type=jnp.float32)
