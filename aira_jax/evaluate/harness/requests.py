"""Requests -> token rows, with lm-eval's tokenisation conventions for causal models.

loglikelihood(context, continuation): trailing whitespace of the context moves to the continuation; the
continuation's tokens are encode(context + continuation)[len(encode(context)):]; an empty context becomes the
prefix token (EOS: documents end with it in training). The row is the last max_length + 1 tokens of context +
continuation (left truncation), and the last len(continuation tokens) predictions are scored.

loglikelihood_rolling(text): the text's tokens, prefix token first, cut into disjoint windows of max_length
predictions; the last window is shifted left so it still sees a full max_length context (lm-eval's
get_rolling_token_windows with context_len=1, made disjoint).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Row:
  """One forward pass: inputs tokens[:-1], targets tokens[1:]; the last `num_scored` targets are scored."""
  tokens: np.ndarray  # int32 [n + 1], 1 <= n <= max_length
  num_scored: int

  @property
  def length(self) -> int:
    return int(self.tokens.shape[0]) - 1


def encode_pair(tokenizer, context: str, continuation: str, prefix_token_id: int) -> tuple[list[int], list[int]]:
  """(context ids, continuation ids) as lm-eval's TemplateLM.loglikelihood computes them."""
  if context == '':
    cont = list(tokenizer.encode(continuation))
    if cont and cont[0] == prefix_token_id:
      return cont[:1], cont[1:]
    return [prefix_token_id], cont
  n_spaces = len(context) - len(context.rstrip())
  if n_spaces:
    continuation = context[-n_spaces:] + continuation
    context = context[:-n_spaces]
  whole = list(tokenizer.encode(context + continuation))
  ctx = list(tokenizer.encode(context))
  return ctx, whole[len(ctx):]


def pair_row(context_ids: Sequence[int], continuation_ids: Sequence[int], max_length: int) -> Row:
  """The scored row for a (context, continuation) token pair, left-truncated to max_length inputs."""
  tokens = np.asarray(list(context_ids) + list(continuation_ids), dtype=np.int32)[-(max_length + 1):]
  if tokens.shape[0] < 2:
    raise ValueError('a scored row needs at least one context and one predicted token')
  return Row(tokens, min(len(continuation_ids), tokens.shape[0] - 1))


def rolling_windows(token_ids: Sequence[int], prefix_token_id: int, max_length: int) -> list[tuple[list[int], list[int]]]:
  """Disjoint (context, continuation) windows covering every token exactly once as a prediction."""
  if max_length < 1:
    raise ValueError(f'max_length must be >= 1, got {max_length}')
  tokens = list(token_ids)
  if not tokens:
    return []
  windows = []
  first = min(max_length, len(tokens))
  windows.append(([prefix_token_id], tokens[:first]))  # predicts tokens[0:first] from prefix + tokens[:first-1]
  done = first
  while done < len(tokens):
    n = min(len(tokens) - done, max_length)
    end = done + n
    # Inputs tokens[end - max_length - 1 : end - 1]: a full window whose last n predictions are new.
    start = max(end - max_length - 1, 0)
    context = tokens[start:done]
    windows.append((context, tokens[done:end]))
    done = end
  return windows


def loglikelihood_rows(tokenizer, pairs: Sequence[tuple[str, str]], *, max_length: int,
                       prefix_token_id: int) -> list[Row]:
  return [pair_row(*encode_pair(tokenizer, c, x, prefix_token_id), max_length) for c, x in pairs]


def rolling_rows(tokenizer, texts: Sequence[str], *, max_length: int,
                 prefix_token_id: int) -> tuple[list[Row], list[int]]:
  """Rows of every text's windows, and how many rows each text has (0 for a text with no tokens)."""
  rows, counts = [], []
  for text in texts:
    windows = rolling_windows(tokenizer.encode(text), prefix_token_id, max_length)
    rows.extend(pair_row(c, x, max_length) for c, x in windows)
    counts.append(len(windows))
  return rows, counts
