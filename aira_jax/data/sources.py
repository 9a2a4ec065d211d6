"""Document sources: random-access sequences of strings, and the deterministic train/validation split.

Every source is a `DocumentSource` (len + integer indexing returning a str), which is exactly what
grain.MapDataset.source wants, so shuffling, sharding and exact resume come from grain.
"""
from __future__ import annotations

import bz2
import functools
import glob
import gzip
import json
import lzma
import os
import re
from pathlib import Path
from typing import IO, Protocol, Sequence, runtime_checkable

from absl import logging
import numpy as np

from aira_jax.data import config as config_lib
from aira_jax.data.synthetic import SyntheticSource

OPENSTAX_RELATIVE = Path('shared/data/corpus/openstax_textbooks.jsonl.xz')
_PARAGRAPH_BREAK = re.compile(r'\n(?:[ \t\r\f\v]*\n)+')  # one or more blank lines


@runtime_checkable
class DocumentSource(Protocol):
  name: str

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> str: ...


class ListSource:
  """Documents held in memory."""

  def __init__(self, docs: Sequence[str], name: str):
    self.docs, self.name = list(docs), name

  def __len__(self) -> int:
    return len(self.docs)

  def __getitem__(self, index: int) -> str:
    return self.docs[int(index)]

  def __repr__(self) -> str:
    return f'ListSource({self.name!r}, {len(self)} docs)'


class SubsetSource:
  """A view of `parent` restricted to `indices` (used for the train/validation split)."""

  def __init__(self, parent: DocumentSource, indices: np.ndarray, name: str):
    self.parent, self.indices, self.name = parent, np.asarray(indices), name

  def __len__(self) -> int:
    return int(self.indices.size)

  def __getitem__(self, index: int) -> str:
    return self.parent[int(self.indices[int(index)])]

  def __repr__(self) -> str:
    return f'SubsetSource({self.name!r}, {len(self)} of {len(self.parent)} docs)'


# ---- files --------------------------------------------------------------------------------------
def _split_globs(paths) -> list[str]:
  if isinstance(paths, (list, tuple)):
    out = [str(p).strip() for p in paths]
  else:
    out = [p.strip() for p in str(paths or '').split(',')]
  out = [p for p in out if p]
  if not out:
    raise ValueError('data_cfg.paths is empty: give one or more comma-separated file globs.')
  return out


def expand_globs(paths) -> list[str]:
  """Sorted files matched by the globs; an error names every glob that matched nothing."""
  files, missing = [], []
  for pattern in _split_globs(paths):
    matches = sorted(m for m in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(m))
    if matches:
      files.extend(matches)
    else:
      missing.append(pattern)
  if missing:
    raise FileNotFoundError(f'No files match data path(s): {", ".join(missing)}')
  return list(dict.fromkeys(files))  # de-duplicate overlapping globs, keep order.


def _open_text(path: str) -> IO[str]:
  """Opens plain, .xz, .gz or .bz2 text by suffix."""
  if path.endswith('.xz'):
    return lzma.open(path, 'rt', encoding='utf-8')
  if path.endswith('.gz'):
    return gzip.open(path, 'rt', encoding='utf-8')
  if path.endswith('.bz2'):
    return bz2.open(path, 'rt', encoding='utf-8')
  return open(path, 'r', encoding='utf-8')


def read_text_files(paths, *, split: str = 'file', min_chars: int = 1) -> list[str]:
  """One document per file ('file') or per blank-line-separated paragraph ('paragraph')."""
  if split not in ('file', 'paragraph'):
    raise ValueError(f"data_cfg.text_split must be 'file' or 'paragraph', got {split!r}")
  docs = []
  for path in expand_globs(paths):
    try:
      with _open_text(path) as f:
        text = f.read()
    except UnicodeDecodeError as e:
      raise ValueError(f'{path}: not valid UTF-8 text ({e})') from e
    pieces = [text] if split == 'file' else _PARAGRAPH_BREAK.split(text)
    docs.extend(p for p in pieces if len(p.strip()) >= min_chars)
  return docs


def read_jsonl_files(paths, *, text_key: str = 'text', min_chars: int = 1) -> list[str]:
  """Documents from the `text_key` field of each JSON line (.jsonl, .jsonl.xz, .jsonl.gz, .jsonl.bz2)."""
  docs = []
  for path in expand_globs(paths):
    try:
      with _open_text(path) as f:
        for line_no, line in enumerate(f, 1):
          if not line.strip():
            continue
          try:
            record = json.loads(line)
          except json.JSONDecodeError as e:
            raise ValueError(f'{path}:{line_no}: malformed JSON line ({e.msg})') from None
          if not isinstance(record, dict) or text_key not in record:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(f'{path}:{line_no}: no {text_key!r} field (found {keys}); set data_cfg.text_key')
          text = record[text_key]
          if not isinstance(text, str):
            raise ValueError(f'{path}:{line_no}: field {text_key!r} is {type(text).__name__}, not a string')
          if len(text.strip()) >= min_chars:
            docs.append(text)
    except (lzma.LZMAError, gzip.BadGzipFile, OSError, EOFError, UnicodeDecodeError) as e:
      raise ValueError(f'{path}: cannot read ({type(e).__name__}: {e})') from e
  return docs


def default_openstax_path() -> Path:
  """<repo>/../shared/data/corpus/openstax_textbooks.jsonl.xz, with <repo> the checkout holding aira_jax."""
  repo = Path(__file__).resolve().parents[2]
  return repo.parent / OPENSTAX_RELATIVE


# ---- Hugging Face -------------------------------------------------------------------------------
class HFSource:
  """A non-streaming Hugging Face dataset: Arrow-backed, memory-mapped, random access."""

  def __init__(self, dataset, text_key: str, name: str):
    if text_key not in dataset.column_names:
      raise ValueError(f'Hugging Face dataset {name} has no column {text_key!r} '
                       f'(columns: {dataset.column_names}); set data_cfg.text_key')
    self.dataset, self.text_key, self.name = dataset, text_key, name

  def __len__(self) -> int:
    return len(self.dataset)

  def __getitem__(self, index: int) -> str:
    return self.dataset[int(index)][self.text_key]


def load_hf(cfg) -> DocumentSource:
  try:
    import datasets  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("data_cfg.source='hf' needs the Hugging Face `datasets` package: "
                      "pip install 'aira-jax[hf]' (or pip install datasets).") from e
  name = f'hf:{cfg.hf_name}/{cfg.hf_config or "-"}:{cfg.hf_split}'
  kwargs = dict(split=cfg.hf_split, streaming=bool(cfg.hf_streaming),
                cache_dir=cfg.get('hf_cache_dir') or None)
  try:
    ds = datasets.load_dataset(cfg.hf_name, cfg.hf_config or None, **kwargs)
  except Exception as e:  # Offline, unknown name, auth: all surface here with library-specific types.
    raise RuntimeError(f'Could not load Hugging Face dataset {name} ({type(e).__name__}: {e}). '
                       'Check the name/config/split and network access, or use an offline source.') from e
  if not cfg.hf_streaming:
    return HFSource(ds, cfg.text_key, name)
  # Streaming has no random access: materialise a bounded prefix, which also makes resume exact.
  limit = int(cfg.hf_max_docs)
  if limit <= 0:
    raise ValueError('data_cfg.hf_streaming=True needs data_cfg.hf_max_docs > 0 (documents to read).')
  docs = []
  for record in ds:
    if cfg.text_key not in record:
      raise ValueError(f'{name}: record has no {cfg.text_key!r} field (found {sorted(record)})')
    if len(record[cfg.text_key].strip()) >= cfg.min_doc_chars:
      docs.append(record[cfg.text_key])
    if len(docs) >= limit:
      break
  logging.info('Read %d streamed documents from %s', len(docs), name)
  return ListSource(docs, name)


# ---- entry points -------------------------------------------------------------------------------
def make_source(cfg) -> DocumentSource:
  """All documents of the configured source (before the train/validation split)."""
  cfg = config_lib.resolve(cfg)
  kind = cfg.source
  min_chars = int(cfg.get('min_doc_chars', 1))
  if kind == 'synthetic':
    return SyntheticSource(seed=int(cfg.seed), num_docs=int(cfg.synthetic_num_docs),
                           min_sentences=int(cfg.synthetic_min_sentences),
                           max_sentences=int(cfg.synthetic_max_sentences))
  if kind == 'text':
    src = ListSource(read_text_files(cfg.paths, split=cfg.text_split, min_chars=min_chars), 'text')
  elif kind == 'jsonl':
    src = ListSource(read_jsonl_files(cfg.paths, text_key=cfg.text_key, min_chars=min_chars), 'jsonl')
  elif kind == 'openstax':
    path = Path(cfg.get('openstax_path') or default_openstax_path())
    if not path.is_file():
      raise FileNotFoundError(f'OpenStax corpus not found at {path}; set data_cfg.openstax_path '
                              "or use source='synthetic'.")
    src = ListSource(read_jsonl_files(str(path), text_key='text', min_chars=min_chars), 'openstax')
  elif kind == 'hf':
    src = load_hf(cfg)
  else:
    raise ValueError(f'data_cfg.source must be one of {config_lib.SOURCES}, got {kind!r}')
  if len(src) == 0:
    raise ValueError(f'data source {kind!r} yielded no documents (paths={cfg.get("paths")!r}, '
                     f'min_doc_chars={min_chars}).')
  return src


def num_val_docs(total: int, val_docs: int, val_fraction: float) -> int:
  if val_fraction:
    if not 0.0 < val_fraction < 1.0:
      raise ValueError(f'data_cfg.val_fraction must be in (0, 1), got {val_fraction}')
    n = max(1, int(round(total * val_fraction)))
  else:
    if val_docs < 0:
      raise ValueError(f'data_cfg.val_docs must be >= 0, got {val_docs}')
    n = int(val_docs)
  if n >= total:
    raise ValueError(f'validation split takes {n} of {total} documents, leaving none to train on; '
                     'lower data_cfg.val_docs / val_fraction.')
  return n


def split_source(source: DocumentSource, *, val_docs: int, val_fraction: float = 0.0,
                 seed: int = 0) -> tuple[SubsetSource, SubsetSource]:
  """Deterministic (train, validation) split: a seeded random set of documents is held out.

  Random rather than "the last N" because file order is often topical (one book after another).
  Both halves keep the source order, so validation is the same list wherever it is computed.
  """
  total = len(source)
  n_val = num_val_docs(total, val_docs, val_fraction)
  is_val = np.zeros(total, dtype=bool)
  if n_val:
    rng = np.random.default_rng([int(seed), 0x5A11D])
    is_val[rng.choice(total, size=n_val, replace=False)] = True
  dtype = np.int32 if total < 2**31 else np.int64
  train = SubsetSource(source, np.flatnonzero(~is_val).astype(dtype), f'{source.name}/train')
  val = SubsetSource(source, np.flatnonzero(is_val).astype(dtype), f'{source.name}/val')
  return train, val


# Fields that determine the documents and the split (the cache key: train and eval share one read).
_SOURCE_FIELDS = ('source', 'seed', 'paths', 'text_split', 'text_key', 'openstax_path', 'min_doc_chars',
                  'hf_name', 'hf_config', 'hf_split', 'hf_streaming', 'hf_max_docs', 'hf_cache_dir',
                  'synthetic_num_docs', 'synthetic_min_sentences', 'synthetic_max_sentences', 'val_docs',
                  'val_fraction')


@functools.lru_cache(maxsize=4)
def _load_splits_cached(fields_json: str) -> tuple[SubsetSource, SubsetSource]:
  import ml_collections  # pylint: disable=import-outside-toplevel
  cfg = ml_collections.ConfigDict(json.loads(fields_json))
  src = make_source(cfg)
  return split_source(src, val_docs=int(cfg.val_docs), val_fraction=float(cfg.val_fraction),
                      seed=int(cfg.seed))


def load_splits(cfg) -> tuple[SubsetSource, SubsetSource]:
  """(train, validation) documents for data_cfg (cached, so train and eval share one file read)."""
  cfg = config_lib.resolve(cfg)
  fields = {f: cfg[f] for f in _SOURCE_FIELDS}
  return _load_splits_cached(json.dumps(fields, sort_keys=True))
