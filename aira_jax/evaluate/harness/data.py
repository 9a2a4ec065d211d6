"""Task data: local files (Hugging Face field names) or, failing that, Hugging Face `datasets`.

The default data directory is <repo>/../shared/data/harness (the offline copies the project ships beside the
checkout); `AIRA_HARNESS_DATA` or an explicit `data_dir` overrides it. Every read error names the file and,
for JSON lines, the line, so a malformed record is found in one step.
"""
from __future__ import annotations

import bz2
import contextlib
import dataclasses
import gzip
import json
import lzma
import os
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

DATA_ENV = 'AIRA_HARNESS_DATA'
SOURCES = ('auto', 'local', 'hf')


class DataError(ValueError):
  """A task's data is missing or malformed; the message names the file (and line)."""


@dataclasses.dataclass(frozen=True)
class HFDataset:
  """Where lm-eval itself reads a task: datasets.load_dataset(path, name)[split]."""
  path: str
  name: str | None
  split: str


@dataclasses.dataclass(frozen=True)
class Record:
  """One raw record and where it came from (for error messages)."""
  data: Any
  where: str  # 'file:line' or 'hf:path/name[split]#index'


def default_data_dir() -> Path:
  """$AIRA_HARNESS_DATA, else <repo>/../shared/data/harness with <repo> the checkout holding aira_jax."""
  env = os.environ.get(DATA_ENV)
  if env:
    return Path(env).expanduser()
  repo = Path(__file__).resolve().parents[3]
  return repo.parent / 'shared' / 'data' / 'harness'


def open_text(path: Path) -> IO[str]:
  """Opens plain, .xz, .gz or .bz2 files as UTF-8 text."""
  suffix = path.suffix
  if suffix == '.xz':
    return lzma.open(path, 'rt', encoding='utf-8')
  if suffix == '.gz':
    return gzip.open(path, 'rt', encoding='utf-8')
  if suffix == '.bz2':
    return bz2.open(path, 'rt', encoding='utf-8')
  return open(path, encoding='utf-8')


def read_jsonl(path: Path) -> list[Record]:
  """Records of a JSON-lines file (blank lines skipped); a bad line raises DataError naming file:line."""
  records = []
  try:
    with open_text(path) as f:
      for line_no, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          data = json.loads(line)
        except json.JSONDecodeError as e:
          raise DataError(f'{path}:{line_no}: malformed JSON ({e.msg})') from None
        if not isinstance(data, dict):
          raise DataError(f'{path}:{line_no}: expected a JSON object, got {type(data).__name__}')
        records.append(Record(data, f'{path}:{line_no}'))
  except (lzma.LZMAError, gzip.BadGzipFile, OSError, EOFError, UnicodeDecodeError) as e:
    raise DataError(f'{path}: cannot read ({type(e).__name__}: {e})') from e
  return records


def read_text(path: Path) -> str:
  """A whole text file with line ends normalised to '\\n' (the shared WikiText copy has CRLF)."""
  try:
    with open_text(path) as f:
      text = f.read()
  except (lzma.LZMAError, gzip.BadGzipFile, OSError, EOFError, UnicodeDecodeError) as e:
    raise DataError(f'{path}: cannot read ({type(e).__name__}: {e})') from e
  return text.replace('\r\n', '\n').replace('\r', '\n')


def find_file(data_dir: Path, candidates: Sequence[str]) -> Path | None:
  for name in candidates:
    path = data_dir / name
    if path.is_file():
      return path
  return None


def read_hf(source: HFDataset) -> list[Record]:
  """Records of a Hugging Face dataset split (needs `datasets`, and the network or its cache)."""
  try:
    import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(f'Hugging Face datasets is not installed, so {source.path} cannot be loaded '
                    '(pip install datasets, or put the file in the data directory)') from e
  try:
    split = datasets.load_dataset(source.path, source.name, split=source.split)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'could not load Hugging Face dataset {source.path} ({source.name}) split '
                    f'{source.split}: {type(e).__name__}: {e}') from e
  tag = f'hf:{source.path}/{source.name or ""}[{source.split}]'
  return [Record(dict(row), f'{tag}#{i}') for i, row in enumerate(split)]


def locate(task_name: str, data_dir: Path, candidates: Sequence[str], hf: HFDataset | None,
           source: str) -> tuple[Path | None, HFDataset | None]:
  """Which of a task's sources to read: (local path, None) or (None, HF dataset); raises DataError.

  source: 'local' (a file in data_dir), 'hf' (Hugging Face), 'auto' (local when present, else HF).
  """
  if source not in SOURCES:
    raise DataError(f'data source must be one of {SOURCES}, got {source!r}')
  if source in ('auto', 'local'):
    path = find_file(data_dir, candidates)
    if path is not None:
      return path, None
    if source == 'local' or hf is None:
      raise DataError(f'task {task_name}: no data file {" or ".join(candidates)} in {data_dir} (set '
                      f'--data_dir or ${DATA_ENV}, or use --data_source=hf)')
  if hf is None:
    raise DataError(f'task {task_name} has no Hugging Face source; put {candidates[0]} in {data_dir}')
  return None, hf


def iter_records(path: Path | None, hf: HFDataset | None) -> Iterator[Record]:
  if path is not None:
    yield from read_jsonl(path)
  else:
    yield from read_hf(hf)


@contextlib.contextmanager
def fallback_note(task_name: str, data_dir: Path, candidates: Sequence[str], active: bool):
  """When reading fell back to Hugging Face because no local file exists, errors say so."""
  try:
    yield
  except DataError as e:
    if not active:
      raise
    raise DataError(f'task {task_name}: no data file {" or ".join(candidates)} in {data_dir}, and the Hugging '
                    f'Face fallback failed: {e}') from e
