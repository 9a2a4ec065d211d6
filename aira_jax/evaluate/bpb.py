"""Loss, perplexity and bits per byte of a model on the data pipeline's held-out batches.

Tokeniser-independent comparison: bpb = total NLL (nats) / ln 2 / UTF-8 bytes of the scored tokens, with
the batches of aira_jax.data.make_eval_batches (each target token carries its byte count).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from aira_jax.data import BpbAccumulator


def _cast(tree: Any, dtype: Any) -> Any:
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def evaluate_bpb(model: nnx.Module, batches: Sequence[dict], *, compute_dtype: str = 'float32') -> dict[str, float]:
  """{'loss' (nats per token), 'perplexity', 'bits_per_byte', 'tokens', 'bytes'} over `batches`."""
  if not batches:
    raise ValueError('evaluate_bpb needs at least one batch')
  graphdef, state = nnx.split(model)
  state = _cast(state, jnp.dtype(compute_dtype))

  @jax.jit
  def nll_fn(state, tokens):
    logits = nnx.merge(graphdef, state)(tokens[:, :-1]).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])

  acc = BpbAccumulator()
  for batch in batches:
    acc.add(np.asarray(jax.device_get(nll_fn(state, np.asarray(batch['tokens'], np.int32)))), batch)
  loss = acc.loss_per_token
  return {'loss': loss, 'perplexity': math.exp(loss), 'bits_per_byte': acc.bits_per_byte,
          'tokens': acc.num_tokens, 'bytes': acc.num_bytes}


def evaluate_run_bpb(model: nnx.Module, tokenizer, config, *, num_batches: int | None = None,
                     compute_dtype: str = 'float32') -> dict[str, float]:
  """The trainer's validation set for a run config (same seq_len, batch size and number of batches)."""
  from aira_jax.data import make_eval_batches  # pylint: disable=g-import-not-at-top
  tc = config.train
  batches = make_eval_batches(config.data, tokenizer, seq_len=int(tc.seq_len),
                              batch_size=int(tc.eval_batch_size or tc.global_batch),
                              num_batches=int(num_batches or tc.eval_batches or 1))
  return evaluate_bpb(model, batches, compute_dtype=compute_dtype)
