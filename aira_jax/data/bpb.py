"""Bits per byte: loss normalised by UTF-8 bytes, so models with different tokenisers compare fairly.

bpb = (total NLL in nats) / ln 2 / (total UTF-8 bytes of the scored text). Token-level losses come from
the model; byte counts per target token come from Tokenizer.token_byte_lengths (see make_eval_batches).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

LN2 = math.log(2.0)


def bits_per_byte(nll_sum_nats: float, num_bytes: float) -> float:
  """Total negative log-likelihood (nats) over a text -> bits per UTF-8 byte of that text."""
  if not num_bytes > 0:
    raise ValueError(f'bits_per_byte needs num_bytes > 0, got {num_bytes}')
  if not math.isfinite(float(nll_sum_nats)):
    raise ValueError(f'bits_per_byte got a non-finite NLL sum: {nll_sum_nats}')
  return float(nll_sum_nats) / LN2 / float(num_bytes)


def _weights_like(nll: np.ndarray, weights) -> np.ndarray:
  if weights is None:
    return np.ones_like(nll, dtype=np.float64)
  w = np.asarray(weights, dtype=np.float64)
  if w.shape != nll.shape:
    raise ValueError(f'weights shape {w.shape} != nll shape {nll.shape}')
  return w


def bits_per_byte_from_tokens(token_nll, token_bytes, weights=None) -> float:
  """bpb from per-token NLL (nats) and per-token byte lengths, over positions with weight 1."""
  nll = np.asarray(token_nll, dtype=np.float64)
  nbytes = np.asarray(token_bytes, dtype=np.float64)
  if nll.shape != nbytes.shape:
    raise ValueError(f'token_nll shape {nll.shape} != token_bytes shape {nbytes.shape}')
  w = _weights_like(nll, weights)
  return bits_per_byte(float((nll * w).sum()), float((nbytes * w).sum()))


def token_nll(logits, targets) -> np.ndarray:
  """Per-token NLL in nats from logits [..., V] and integer targets [...] (NumPy, float64 log-softmax)."""
  logits = np.asarray(logits, dtype=np.float64)
  targets = np.asarray(targets)
  m = logits.max(axis=-1, keepdims=True)
  log_z = (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))[..., 0]
  picked = np.take_along_axis(logits, targets[..., None].astype(np.int64), axis=-1)[..., 0]
  return log_z - picked


@dataclasses.dataclass
class BpbAccumulator:
  """Sums over eval batches; `add(nll, batch)` with batch from make_eval_batches and nll [B, T] in nats."""

  nll_nats: float = 0.0
  num_bytes: float = 0.0
  num_tokens: float = 0.0

  def add(self, nll, batch: dict) -> None:
    nll = np.asarray(nll, dtype=np.float64)
    w = _weights_like(nll, batch['weights'])
    self.nll_nats += float((nll * w).sum())
    self.num_bytes += float((np.asarray(batch['bytes'], dtype=np.float64) * w).sum())
    self.num_tokens += float(w.sum())

  @property
  def bits_per_byte(self) -> float:
    return bits_per_byte(self.nll_nats, self.num_bytes)

  @property
  def loss_per_token(self) -> float:
    if not self.num_tokens > 0:
      raise ValueError('BpbAccumulator: no weighted tokens added')
    return self.nll_nats / self.num_tokens

  @property
  def bytes_per_token(self) -> float:
    if not self.num_tokens > 0:
      raise ValueError('BpbAccumulator: no weighted tokens added')
    return self.num_bytes / self.num_tokens
