"""Tokenisers with exact UTF-8 byte accounting (for tokeniser-independent bits-per-byte).

Both tokenisers map any string to ids and back losslessly, and `token_byte_lengths(ids)` tells how many
UTF-8 bytes of the original text each token stands for, so that per-token losses can be normalised by
bytes. Special tokens (pad, bos, eos, unk) count 0 bytes.
"""
from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence, runtime_checkable

from absl import logging
import numpy as np
import sentencepiece as spm

_SPACE_PIECE = '\u2581'  # sentencepiece's visible space '▁'.


@runtime_checkable
class Tokenizer(Protocol):
  """What the rest of AIRA-JAX relies on."""

  vocab_size: int
  pad_id: int
  bos_id: int
  eos_id: int

  def encode(self, text: str) -> list[int]: ...

  def encode_array(self, text: str) -> np.ndarray: ...

  def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...

  def token_byte_lengths(self, ids: Sequence[int] | np.ndarray, *, text_start: bool = True) -> np.ndarray: ...


class ByteTokenizer:
  """UTF-8 bytes as tokens: ids 0..2 are pad, bos, eos; byte b is id b + 3 (vocab_size 259)."""

  pad_id = 0
  bos_id = 1
  eos_id = 2
  num_special = 3
  vocab_size = 256 + num_special

  def encode_array(self, text: str) -> np.ndarray:
    # Vectorised: no per-byte Python work on the hot path.
    return np.frombuffer(text.encode('utf-8'), dtype=np.uint8).astype(np.int32) + self.num_special

  def encode(self, text: str) -> list[int]:
    return self.encode_array(text).tolist()

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    ids = ids[ids >= self.num_special] - self.num_special
    if ids.size and ids.max() > 255:
      raise ValueError(f'ByteTokenizer.decode: id {int(ids.max()) + self.num_special} >= vocab_size '
                       f'{self.vocab_size}')
    # 'replace' only matters for id sequences cut mid-character (e.g. a packed window).
    return ids.astype(np.uint8).tobytes().decode('utf-8', errors='replace')

  def token_byte_lengths(self, ids: Sequence[int] | np.ndarray, *, text_start: bool = True) -> np.ndarray:
    del text_start  # bytes need no context.
    return (np.asarray(ids) >= self.num_special).astype(np.int32)

  def __repr__(self) -> str:
    return f'ByteTokenizer(vocab_size={self.vocab_size})'


@dataclasses.dataclass(frozen=True)
class SentencePieceTrainOptions:
  vocab_size: int = 4096
  model_type: str = 'bpe'  # 'bpe' | 'unigram'
  character_coverage: float = 0.9995
  max_docs: int = 2000
  max_sentence_length: int = 16384  # bytes; longer lines are split before training rather than dropped.


def _training_lines(docs: Iterable[str], max_docs: int, max_len: int) -> Iterator[str]:
  """Feeds the trainer lines (sentencepiece's unit), chunking very long ones so none is skipped."""
  for n, doc in enumerate(docs):
    if n >= max_docs:
      return
    for line in doc.split('\n'):
      while len(line.encode('utf-8')) > max_len:
        cut = max_len // 4  # characters; at most 4 bytes each, so this chunk fits.
        yield line[:cut]
        line = line[cut:]
      if line:
        yield line


class SentencePieceTokenizer:
  """A sentencepiece model (BPE or unigram) with byte fallback, so every string round-trips.

  Trained here with identity normalisation and whitespace kept as is; `decode(encode(x)) == x` for any x
  that does not itself contain U+2581 ('▁', which sentencepiece reads as a space).
  """

  def __init__(self, model_proto: bytes, path: str | None = None):
    self._proto = model_proto
    self.path = path
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    sp = self._sp
    self.vocab_size = int(sp.vocab_size())
    self.pad_id, self.bos_id, self.eos_id = int(sp.pad_id()), int(sp.bos_id()), int(sp.eos_id())
    if self.eos_id < 0:
      raise ValueError('SentencePiece model has no EOS piece (eos_id=-1); the data pipeline needs one.')
    if self.pad_id < 0:
      self.pad_id = self.eos_id  # Only used to fill eval padding, which carries weight 0.
    # Per-id byte table, built once so that token_byte_lengths is a vectorised gather.
    lengths = np.zeros(self.vocab_size, dtype=np.int32)
    starts_with_space = np.zeros(self.vocab_size, dtype=bool)
    is_special = np.zeros(self.vocab_size, dtype=bool)
    for i in range(self.vocab_size):
      if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
        is_special[i] = True
      elif sp.is_byte(i):
        lengths[i] = 1
      else:
        piece = sp.id_to_piece(i)
        lengths[i] = len(piece.replace(_SPACE_PIECE, ' ').encode('utf-8'))
        starts_with_space[i] = piece.startswith(_SPACE_PIECE)
    self._lengths, self._starts_with_space, self._is_special = lengths, starts_with_space, is_special
    # Whether encode() prepends a dummy '▁' to each text (add_dummy_prefix); detected, not assumed, so
    # models trained elsewhere are accounted for correctly too.
    first = sp.encode('a', out_type=str)
    self._dummy_prefix = bool(first) and first[0].startswith(_SPACE_PIECE)
    if self._dummy_prefix and sp.piece_to_id(_SPACE_PIECE) == sp.unk_id():
      logging.warning('SentencePiece model adds a dummy prefix but has no "▁" piece; byte counts of '
                      'texts starting with a rare character may be off by up to 3.')

  # ---- construction -------------------------------------------------------------------------
  @classmethod
  def train(cls, docs: Iterable[str], model_path: str | os.PathLike | None,
            options: SentencePieceTrainOptions = SentencePieceTrainOptions()) -> 'SentencePieceTokenizer':
    """Trains on documents and (if model_path is given) writes the .model file there."""
    if options.model_type not in ('bpe', 'unigram'):
      raise ValueError(f"spm_model_type must be 'bpe' or 'unigram', got {options.model_type!r}")
    if options.vocab_size < 4 + 256 + 1:
      raise ValueError(f'spm_vocab_size={options.vocab_size} is too small: byte fallback alone needs 260 ids '
                       '(4 specials + 256 bytes) plus at least one piece.')
    lines = _training_lines(docs, options.max_docs, options.max_sentence_length)
    first = next(lines, None)
    if first is None:
      raise ValueError('SentencePiece training got no non-empty text lines.')

    def _all() -> Iterator[str]:
      yield first
      yield from lines

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=_all(), model_writer=buf,
        vocab_size=options.vocab_size, model_type=options.model_type,
        character_coverage=options.character_coverage,
        byte_fallback=True,  # unseen characters become <0xNN> pieces, never <unk>.
        normalization_rule_name='identity', remove_extra_whitespaces=False,  # lossless round trip.
        add_dummy_prefix=True, split_digits=True, allow_whitespace_only_pieces=True,
        hard_vocab_limit=False,  # a small corpus may not support the requested size.
        max_sentence_length=options.max_sentence_length,
        pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        num_threads=1, minloglevel=2)
    tok = cls(buf.getvalue())
    if model_path:
      tok.save(model_path)
    logging.info('Trained sentencepiece %s tokenizer, vocab_size=%d%s', options.model_type, tok.vocab_size,
                 f', saved to {model_path}' if model_path else '')
    return tok

  @classmethod
  def load(cls, model_path: str | os.PathLike) -> 'SentencePieceTokenizer':
    path = Path(model_path)
    if not path.is_file():
      raise FileNotFoundError(f'SentencePiece model file not found: {path}')
    return cls(path.read_bytes(), path=str(path))

  def save(self, model_path: str | os.PathLike) -> None:
    path = Path(model_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_bytes(self._proto)
    os.replace(tmp, path)  # atomic: concurrent readers never see a half-written model.
    self.path = str(path)

  # ---- use ----------------------------------------------------------------------------------
  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def encode_array(self, text: str) -> np.ndarray:
    return np.asarray(self._sp.encode(text), dtype=np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    ids = [int(i) for i in np.asarray(ids).reshape(-1) if not self._is_special[int(i)]]
    return self._sp.decode(ids)

  @property
  def processor(self) -> spm.SentencePieceProcessor:
    """The underlying sentencepiece processor (e.g. for encode(..., return_type='proto') offsets)."""
    return self._sp

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))

  def token_byte_lengths(self, ids: Sequence[int] | np.ndarray, *, text_start: bool = True) -> np.ndarray:
    """UTF-8 bytes each token stands for; sums to len(text.encode()) over encode(text).

    A text starts at position 0 (when text_start) and right after any special token (EOS, BOS, ...):
    there, encode() put a dummy '▁' in front of the text, which stands for no byte of it.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size == 0:
      return np.zeros(0, dtype=np.int32)
    if ids.min() < 0 or ids.max() >= self.vocab_size:
      raise ValueError(f'token id out of range [0, {self.vocab_size}): min {ids.min()}, max {ids.max()}')
    out = self._lengths[ids].copy()
    if self._dummy_prefix:
      starts = np.zeros(ids.size, dtype=bool)
      starts[1:] = self._is_special[ids[:-1]]
      starts[0] = text_start
      out -= (starts & self._starts_with_space[ids]).astype(np.int32)
    return out

  def __repr__(self) -> str:
    return f'SentencePieceTokenizer(vocab_size={self.vocab_size}, path={self.path!r})'


def make_tokenizer(data_cfg) -> Tokenizer:
  """Builds the tokenizer named by data_cfg.tokenizer ('byte' | 'sentencepiece').

  For 'sentencepiece', loads data_cfg.spm_model_path; if it is missing and data_cfg.spm_train is true,
  trains on the configured source's training documents (never the validation ones) and saves it there.
  """
  from aira_jax.data import config as config_lib  # pylint: disable=import-outside-toplevel
  from aira_jax.data import sources  # pylint: disable=import-outside-toplevel
  cfg = config_lib.resolve(data_cfg)
  kind = cfg.tokenizer
  if kind == 'byte':
    return ByteTokenizer()
  if kind != 'sentencepiece':
    raise ValueError(f"data_cfg.tokenizer must be 'byte' or 'sentencepiece', got {kind!r}")
  path = str(cfg.spm_model_path or '')
  if not path:
    raise ValueError("data_cfg.tokenizer='sentencepiece' needs data_cfg.spm_model_path (where the .model "
                     'file is, or where to write it when spm_train is true).')
  if Path(path).is_file():
    return SentencePieceTokenizer.load(path)
  if not cfg.spm_train:
    raise FileNotFoundError(f'SentencePiece model not found at {path} and data_cfg.spm_train is false; '
                            'set spm_train=True to train one there.')
  train_docs, _ = sources.load_splits(cfg)
  n = min(len(train_docs), int(cfg.spm_train_docs))
  options = SentencePieceTrainOptions(vocab_size=int(cfg.spm_vocab_size), model_type=str(cfg.spm_model_type),
                                      character_coverage=float(cfg.spm_character_coverage), max_docs=n)
  logging.info('Training sentencepiece on %d %s documents -> %s', n, cfg.source, path)
  return SentencePieceTokenizer.train((train_docs[i] for i in range(n)), path, options)
