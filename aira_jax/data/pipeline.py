"""Training and evaluation batches on grain.

Training: documents -> shard per host -> shuffle (reshuffled each epoch) -> repeat -> tokenise + EOS
(lazily, in grain's reader threads) -> concatenate-then-split into rows of seq_len + 1 tokens (grain's
ConcatThenSplitIterDataset; no padding while repeating forever) -> batch. Everything is grain, so
get_state()/set_state() resume exactly.

Evaluation: the validation documents in order, as one stream EOS d1 EOS d2 EOS ..., cut into windows that
overlap by one token, so every token after the leading EOS is a target exactly once and the byte
weights add up to the UTF-8 size of the scored text.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any, Iterator

from absl import logging
import grain
from grain.experimental import ConcatThenSplitIterDataset
import numpy as np

from aira_jax.data import config as config_lib
from aira_jax.data import sources
from aira_jax.data.tokenizers import Tokenizer

_STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class _TokenizeWithEos:
  """grain map: document text -> {'tokens': int32 [n + 1]} ending in EOS."""

  tokenizer: Tokenizer

  def __call__(self, text: str) -> dict[str, np.ndarray]:
    ids = self.tokenizer.encode_array(text)
    out = np.empty(ids.size + 1, dtype=np.int32)
    out[:-1] = ids
    out[-1] = self.tokenizer.eos_id
    return {'tokens': out}


def _only_tokens(example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  # Packing also emits segment ids / positions; the agreed batch holds just the token rows.
  return {'tokens': example['tokens']}


def _tuplify_slices(state: Any) -> Any:
  """Undoes JSON's tuple -> list on grain's packing state (it compares slices with a tuple sentinel)."""
  if isinstance(state, dict):
    return {k: ({f: tuple(v) for f, v in val.items()} if k == 'remainder_slices' else _tuplify_slices(val))
            for k, val in state.items()}
  if isinstance(state, list):
    return [_tuplify_slices(v) for v in state]
  return state


class TrainIterator:
  """Iterator of {'tokens': int32 [batch_size, seq_len + 1]} with JSON-serialisable, exact resume state."""

  def __init__(self, dataset: grain.IterDataset, fingerprint: dict[str, Any]):
    self._dataset = dataset
    self._iter = iter(dataset)
    self.fingerprint = fingerprint

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._iter)

  def get_state(self) -> dict[str, Any]:
    # Round-trip through JSON here, so what callers store is exactly what set_state will get back.
    return json.loads(json.dumps({'version': _STATE_VERSION, 'pipeline': self.fingerprint,
                                  'grain': self._iter.get_state()}))

  def set_state(self, state: dict[str, Any]) -> None:
    if not isinstance(state, dict) or state.get('version') != _STATE_VERSION or 'grain' not in state:
      raise ValueError(f'Not a data iterator state of version {_STATE_VERSION}: {str(state)[:200]}')
    if state.get('pipeline') != self.fingerprint:
      raise ValueError('Data iterator state was saved by a different pipeline; saved '
                       f'{state.get("pipeline")}, this one {self.fingerprint}.')
    self._iter.set_state(_tuplify_slices(copy.deepcopy(state['grain'])))


def make_train_iterator(data_cfg, tokenizer: Tokenizer, *, seq_len: int, batch_size: int, seed: int,
                        shard_index: int = 0, shard_count: int = 1) -> TrainIterator:
  """Packed training batches {'tokens': int32 [batch_size, seq_len + 1]} for this host's shard.

  Hosts get disjoint document subsets (document i goes to host i % shard_count); batch_size is per host.
  """
  cfg = config_lib.resolve(data_cfg)
  if seq_len < 1 or batch_size < 1:
    raise ValueError(f'seq_len and batch_size must be >= 1, got seq_len={seq_len}, batch_size={batch_size}')
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'need 0 <= shard_index < shard_count, got shard_index={shard_index}, '
                     f'shard_count={shard_count}')
  num_epochs = int(cfg.num_epochs)
  if num_epochs < 0:
    raise ValueError(f'data_cfg.num_epochs must be >= 0 (0 = forever), got {num_epochs}')
  train, _ = sources.load_splits(cfg)
  if len(train) < shard_count:
    raise ValueError(f'{len(train)} training documents cannot be sharded over {shard_count} hosts')

  ds = grain.MapDataset.source(train)
  ds = ds[shard_index::shard_count]
  # Shuffle before repeat: grain then reshuffles each epoch with seed + epoch.
  ds = ds.shuffle(seed=int(seed) % 2**32)
  ds = ds.repeat(num_epochs or None)
  ds = ds.map(_TokenizeWithEos(tokenizer))
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=int(cfg.read_num_threads),
                                               prefetch_buffer_size=int(cfg.read_prefetch)))
  it_ds = ConcatThenSplitIterDataset(it_ds, length_struct={'tokens': seq_len + 1})
  it_ds = it_ds.map(_only_tokens)
  # With finite epochs the last row may be zero-padded by the packer; a partial batch is dropped.
  it_ds = it_ds.batch(batch_size, drop_remainder=True)
  fingerprint = {'source': train.name, 'num_docs': len(train), 'seq_len': int(seq_len),
                 'batch_size': int(batch_size), 'seed': int(seed), 'shard_index': int(shard_index),
                 'shard_count': int(shard_count), 'vocab_size': int(tokenizer.vocab_size),
                 'num_epochs': num_epochs}
  return TrainIterator(it_ds, fingerprint)


def make_eval_batches(data_cfg, tokenizer: Tokenizer, *, seq_len: int, batch_size: int,
                      num_batches: int | None = None) -> list[dict[str, np.ndarray]]:
  """Deterministic batches from the validation documents.

  Each batch: 'tokens' int32 [B, T + 1], 'weights' float32 [B, T] (1 = real target, 0 = padding),
  'bytes' int32 [B, T] (UTF-8 bytes of each target token; EOS targets count 0 bytes but are scored).
  bits-per-byte = sum(nll * weights) / ln 2 / sum(bytes * weights).
  num_batches=None covers the whole validation set; if it holds fewer tokens than requested, fewer
  batches come back (the last one padded with weight-0 rows) and a warning is logged.
  """
  cfg = config_lib.resolve(data_cfg)
  if seq_len < 1 or batch_size < 1:
    raise ValueError(f'seq_len and batch_size must be >= 1, got seq_len={seq_len}, batch_size={batch_size}')
  if num_batches is not None and num_batches < 1:
    raise ValueError(f'num_batches must be >= 1 or None, got {num_batches}')
  _, val = sources.load_splits(cfg)
  if len(val) == 0:
    raise ValueError('No validation documents: set data_cfg.val_docs > 0 (or val_fraction).')
  needed = None if num_batches is None else num_batches * batch_size * seq_len + 1
  eos = tokenizer.eos_id
  token_parts, byte_parts, total = [np.array([eos], np.int32)], [np.zeros(1, np.int32)], 1
  for i in range(len(val)):
    if needed is not None and total >= needed:
      break
    ids = tokenizer.encode_array(val[i])
    # Byte lengths per document: the dummy-prefix correction needs to know where each text starts.
    token_parts += [ids, np.array([eos], np.int32)]
    byte_parts += [tokenizer.token_byte_lengths(ids).astype(np.int32), np.zeros(1, np.int32)]
    total += ids.size + 1
  stream, stream_bytes = np.concatenate(token_parts), np.concatenate(byte_parts)
  if needed is not None:
    stream, stream_bytes = stream[:needed], stream_bytes[:needed]

  num_targets = stream.size - 1
  num_rows = -(-num_targets // seq_len)
  have = -(-num_rows // batch_size)
  if num_batches is not None and have < num_batches:
    logging.warning('Validation set (%d docs, %d tokens) fills only %d of %d requested eval batches.',
                    len(val), stream.size, have, num_batches)
  num_batches = have
  rows = num_batches * batch_size
  # Pad so every window [r*T, r*T + T] exists; padded targets get weight 0.
  padded_len = rows * seq_len + 1
  tokens = np.full(padded_len, tokenizer.pad_id, np.int32)
  tokens[:stream.size] = stream
  byte_counts = np.zeros(padded_len, np.int32)
  byte_counts[:stream.size] = stream_bytes
  weights = np.zeros(padded_len, np.float32)
  weights[1:stream.size] = 1.0

  starts = np.arange(rows) * seq_len
  window = starts[:, None] + np.arange(seq_len + 1)[None, :]
  all_tokens = tokens[window]
  all_weights = weights[window][:, 1:]
  all_bytes = byte_counts[window][:, 1:]
  return [{'tokens': all_tokens[b * batch_size:(b + 1) * batch_size],
           'weights': all_weights[b * batch_size:(b + 1) * batch_size],
           'bytes': all_bytes[b * batch_size:(b + 1) * batch_size]} for b in range(num_batches)]
