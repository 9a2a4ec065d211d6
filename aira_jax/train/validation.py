"""Validation during training: loss and bits per byte over fixed batches, and the unigram yardstick."""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import numpy as np

from aira_jax.train import sharding as shd


def evaluate_batches(eval_fn: Callable[..., Any], state: Any, eval_batches: list[dict],
                     batch_sh: Any) -> dict[str, float]:
  """{'val_loss' (nats/token), 'val_bpb', 'val_tokens'} of `eval_fn(params, rest, batch) -> sums` over the
  batches, each host feeding its rows; sums accumulate in float64 on the host."""
  sums = {'nll_sum': 0.0, 'weight_sum': 0.0, 'byte_sum': 0.0}
  rows = shd.host_slice(eval_batches[0]['tokens'].shape[0])
  for batch in eval_batches:
    local = {k: np.asarray(batch[k])[rows] for k in ('tokens', 'weights', 'bytes')}
    out = jax.device_get(eval_fn(state.params, state.rest, shd.make_global_batch(local, batch_sh)))
    for k in sums:
      sums[k] += float(out[k])  # float64 accumulation across batches
  loss = sums['nll_sum'] / max(sums['weight_sum'], 1.0)
  bpb = sums['nll_sum'] / math.log(2) / max(sums['byte_sum'], 1.0)
  return {'val_loss': loss, 'val_bpb': bpb, 'val_tokens': sums['weight_sum']}


def unigram_entropy(eval_batches: list[dict]) -> float | None:
  """Entropy (nats/token) of the empirical unigram distribution of the weighted validation targets.

  The yardstick a trained model must beat: the loss of the best model that ignores context.
  """
  counts: dict[int, float] = {}
  for b in eval_batches:
    targets = np.asarray(b['tokens'])[:, 1:].ravel()
    weights = np.asarray(b['weights'], np.float64).ravel()
    ids, inv = np.unique(targets, return_inverse=True)
    sums = np.bincount(inv, weights=weights)
    for i, w in zip(ids.tolist(), sums.tolist()):
      counts[i] = counts.get(i, 0.0) + w
  total = sum(counts.values())
  if total <= 0:
    return None
  p = np.array([c for c in counts.values() if c > 0]) / total
  return float(-(p * np.log(p)).sum())
