"""Corpus-level aggregations with lm-eval's definitions (so numbers compare with published ones).

mean: acc, acc_norm (and stderr = sample std / sqrt(n), as lm-eval's mean_stderr).
perplexity: exp(-mean(loglikelihood)) over documents (LAMBADA).
weighted_perplexity: exp(-sum(ll) / sum(weight)) with weight = words or bytes (WikiText).
bits_per_byte: -sum(ll) / sum(bytes) / ln 2.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

Aggregation = Callable[[Sequence], float]


def mean(values: Sequence[float]) -> float:
  if not values:
    raise ValueError('mean of no values')
  return sum(values) / len(values)


def perplexity(lls: Sequence[float]) -> float:
  return math.exp(-mean(lls))


def _weighted_mean(pairs: Sequence[tuple[float, float]]) -> float:
  lls, weights = zip(*pairs, strict=True)
  total = sum(weights)
  if not total > 0:
    raise ValueError('weighted mean with zero total weight')
  return sum(lls) / total


def weighted_perplexity(pairs: Sequence[tuple[float, float]]) -> float:
  return math.exp(-_weighted_mean(pairs))


def bits_per_byte(pairs: Sequence[tuple[float, float]]) -> float:
  return -_weighted_mean(pairs) / math.log(2)


AGGREGATIONS: dict[str, Aggregation] = {
    'mean': mean,
    'perplexity': perplexity,
    'weighted_perplexity': weighted_perplexity,
    'bits_per_byte': bits_per_byte,
}


def mean_stderr(values: Sequence[float]) -> float | None:
  """Standard error of the mean (sample std with n-1, as lm-eval); None for fewer than 2 values."""
  n = len(values)
  if n < 2:
    return None
  mu = mean(values)
  var = sum((v - mu) ** 2 for v in values) / (n - 1)
  return math.sqrt(var) / math.sqrt(n)
