"""The gallery's manifest: one typed `GalleryEntry` per folder, kept in <gallery>/<name>/entry.json.

    entry = read_entry('runs/gallery/gdn-v2')     # validates; errors name the file and the field
    write_entry(entry, folder)
    entries, problems = scan_gallery('runs/gallery')

A gallery is a directory with one folder per entry. Every folder holds entry.json and the design's source file
(program.py, pattern.txt, or program_torch.py for imported ASI-Arch designs); a runnable entry's folder is also
a trainer workdir (config.json, summary.json, checkpoints/<step>/), so `load_run(workdir=folder)` and
`python -m aira_jax.evaluate --workdir=folder` work on it directly. Entries are staged in a hidden folder and
renamed into place (`install`), so a failed export or import never leaves a half-written entry behind.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping

SCHEMA_VERSION = 1
ENTRY_FILE = 'entry.json'
GALLERY_ENV = 'AIRA_GALLERY'
DEFAULT_GALLERY = 'runs/gallery'
KINDS = ('program', 'composition')
ORIGINS = ('aira-jax', 'asi-arch')
SOURCE_FILES = {'program': 'program.py', 'composition': 'pattern.txt'}
TORCH_SOURCE_FILE = 'program_torch.py'  # imported PyTorch text: kept for reading, never executed
_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$')
_STAGING_PREFIX = '.staging-'


class GalleryError(RuntimeError):
  """A gallery operation could not be done (unknown entry, missing checkpoints, name taken, ...)."""


class EntryFormatError(GalleryError, ValueError):
  """An entry.json that does not follow the schema."""


def default_gallery_dir() -> Path:
  return Path(os.environ.get(GALLERY_ENV) or DEFAULT_GALLERY).expanduser()


def check_entry_name(name: Any) -> str:
  if not isinstance(name, str) or not _NAME_RE.match(name):
    raise GalleryError(f'invalid gallery entry name {name!r}: use 1-128 characters from [A-Za-z0-9_.-], '
                       'starting with a letter or digit')
  return name


def now_iso() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


# ---------------------------------------------------------------------------------------------- validators
def _fail(field: str, problem: str) -> None:
  raise EntryFormatError(f"field '{field}' {problem}")


def _check_str(value: Any, field: str, *, required: bool = False) -> None:
  if not isinstance(value, str):
    _fail(field, f'must be a string, got {type(value).__name__}')
  if required and not value.strip():
    _fail(field, 'must not be empty')


def _check_opt_int(value: Any, field: str) -> None:
  if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
    _fail(field, f'must be a non-negative integer or null, got {value!r}')


def _check_json_dict(value: Any, field: str) -> None:
  if not isinstance(value, dict):
    _fail(field, f'must be an object, got {type(value).__name__}')
  try:
    json.dumps(value, allow_nan=True)
  except (TypeError, ValueError) as e:
    _fail(field, f'must be JSON-serialisable: {e}')


def _check_list_of_dicts(value: Any, field: str) -> None:
  if not isinstance(value, list):
    _fail(field, f'must be a list, got {type(value).__name__}')
  for i, item in enumerate(value):
    if not isinstance(item, dict):
      _fail(f'{field}[{i}]', f'must be an object, got {type(item).__name__}')


def _check_lineage(value: Any) -> None:
  _check_json_dict(value, 'lineage')
  parent = value.get('parent')
  if parent is not None and not isinstance(parent, str):
    _fail('lineage.parent', f'must be a design name or null, got {parent!r}')
  for key in ('ancestors', 'children', 'siblings'):
    names = value.get(key, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
      _fail(f'lineage.{key}', f'must be a list of design names, got {names!r}')


# ---------------------------------------------------------------------------------------------- the entry
@dataclasses.dataclass(frozen=True)
class GalleryEntry:
  """What the gallery knows about one exported (or imported) design."""
  name: str                   # folder name in the gallery, [A-Za-z0-9_.-]
  kind: str                   # 'program' | 'composition'
  origin: str                 # 'aira-jax' (exported from a store) | 'asi-arch' (imported, PyTorch, not runnable)
  runnable: bool              # has a restorable checkpoint (config.json + checkpoints/<step>/ in the folder)
  source_file: str            # program.py | pattern.txt | program_torch.py, in the folder
  motivation: str = ''
  summary: str = ''
  original_name: str = ''     # the name before sanitising (imports), or the design name in the store
  metrics: dict[str, Any] = dataclasses.field(default_factory=dict)  # the Result dict; imports: {'reported': ...}
  scale: str = ''
  config_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # the experiment's overrides
  lineage: dict[str, Any] = dataclasses.field(default_factory=dict)  # parent, ancestors, children, siblings
  analyses: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # {'experiment_id', 'text', ...}
  judge_scores: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  fitness: float | None = None
  exported_at: str = ''       # ISO 8601, UTC
  store_url: str = ''
  experiment_id: int | None = None
  seed: int | None = None     # which of the experiment's seed runs the checkpoint comes from
  checkpoint_step: int | None = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # fitness report, program hash, tokenizer, ...
  schema_version: int = SCHEMA_VERSION

  def __post_init__(self):
    v = self.schema_version
    if isinstance(v, bool) or not isinstance(v, int):
      _fail('schema_version', f'must be an integer, got {v!r}')
    if v > SCHEMA_VERSION:
      _fail('schema_version', f'is {v}: written by a newer AIRA-JAX (this one reads up to {SCHEMA_VERSION})')
    if v < 1:
      _fail('schema_version', f'must be >= 1, got {v}')
    try:
      check_entry_name(self.name)
    except GalleryError as e:
      _fail('name', str(e))
    if self.kind not in KINDS:
      _fail('kind', f'must be one of {list(KINDS)}, got {self.kind!r}')
    if self.origin not in ORIGINS:
      _fail('origin', f'must be one of {list(ORIGINS)}, got {self.origin!r}')
    if not isinstance(self.runnable, bool):
      _fail('runnable', f'must be true or false, got {self.runnable!r}')
    _check_str(self.source_file, 'source_file', required=True)
    if Path(self.source_file).name != self.source_file or self.source_file in ('.', '..'):
      _fail('source_file', f'must be a plain file name inside the entry folder, got {self.source_file!r}')
    for name in ('motivation', 'summary', 'original_name', 'scale', 'exported_at', 'store_url'):
      _check_str(getattr(self, name), name)
    for name in ('metrics', 'config_overrides', 'extra'):
      _check_json_dict(getattr(self, name), name)
    _check_lineage(self.lineage)
    _check_list_of_dicts(self.analyses, 'analyses')
    _check_list_of_dicts(self.judge_scores, 'judge_scores')
    if self.fitness is not None and (isinstance(self.fitness, bool) or not isinstance(self.fitness, (int, float))):
      _fail('fitness', f'must be a number or null, got {self.fitness!r}')
    for name in ('experiment_id', 'seed', 'checkpoint_step'):
      _check_opt_int(getattr(self, name), name)
    if self.runnable:
      if self.origin != 'aira-jax':
        _fail('runnable', f"is true but origin is {self.origin!r}: only 'aira-jax' entries carry checkpoints")
      if self.checkpoint_step is None:
        _fail('checkpoint_step', 'must be set for a runnable entry')

  # ------------------------------------------------------------------------------------------ metrics shown
  @property
  def val_loss(self) -> float | None:
    return _number(self.metrics.get('val_loss'))

  @property
  def bpb(self) -> float | None:
    return _number(self.metrics.get('bpb'))

  @property
  def num_params(self) -> int | None:
    n = _number(self.metrics.get('num_params'))
    if n is None:
      n = _number((self.metrics.get('reported') or {}).get('parameters_count'))
    return None if n is None else int(n)

  # ------------------------------------------------------------------------------------------ (de)serialise
  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> 'GalleryEntry':
    if not isinstance(data, Mapping):
      raise EntryFormatError(f'must hold a JSON object, got {type(data).__name__}')
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
      raise EntryFormatError(f'unknown field(s) {unknown}; known: {sorted(fields)}')
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in data]
    if missing:
      raise EntryFormatError(f"missing field(s) {missing}")
    return cls(**dict(data))


def _number(x: Any) -> float | None:
  if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
    return None
  return float(x)


# ---------------------------------------------------------------------------------------------- files
def entry_path(gallery_dir: str | os.PathLike, name: str) -> Path:
  return Path(gallery_dir) / check_entry_name(name)


def write_entry(entry: GalleryEntry, folder: str | os.PathLike) -> Path:
  path = Path(folder) / ENTRY_FILE
  path.write_text(json.dumps(entry.to_dict(), indent=2, allow_nan=True, sort_keys=True) + '\n', encoding='utf-8')
  return path


def read_entry(folder: str | os.PathLike) -> GalleryEntry:
  """The entry in `folder` (or an entry.json path); every problem raises EntryFormatError naming the file."""
  folder = Path(folder)
  if folder.name == ENTRY_FILE:
    folder = folder.parent
  path = folder / ENTRY_FILE
  try:
    text = path.read_text(encoding='utf-8')
  except FileNotFoundError:
    raise GalleryError(f'{path}: no such file (is {folder} a gallery entry?)') from None
  except OSError as e:
    raise GalleryError(f'{path}: cannot read: {e}') from None
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise EntryFormatError(f'{path}: malformed JSON ({e.msg}, line {e.lineno} column {e.colno})') from None
  try:
    entry = GalleryEntry.from_dict(data)
  except EntryFormatError as e:
    raise EntryFormatError(f'{path}: {e}') from None
  except TypeError as e:  # a wrongly typed value that reached the constructor
    raise EntryFormatError(f'{path}: {e}') from None
  if entry.name != folder.name:
    raise EntryFormatError(f"{path}: field 'name' is {entry.name!r} but the folder is {folder.name!r}")
  if not (folder / entry.source_file).is_file():
    raise EntryFormatError(f"{path}: field 'source_file' names {entry.source_file!r}, which is not in {folder}")
  return entry


def read_source(gallery_dir: str | os.PathLike, entry: GalleryEntry) -> str:
  return (entry_path(gallery_dir, entry.name) / entry.source_file).read_text(encoding='utf-8')


def scan_gallery(gallery_dir: str | os.PathLike) -> tuple[list[GalleryEntry], list[str]]:
  """Every readable entry (by name) and a message per folder that is not one."""
  root = Path(gallery_dir)
  if not root.exists():
    return [], []
  if not root.is_dir():
    raise GalleryError(f'gallery {root} is not a directory')
  entries, problems = [], []
  for folder in sorted(root.iterdir()):
    if not folder.is_dir() or folder.name.startswith('.'):
      continue
    try:
      entries.append(read_entry(folder))
    except GalleryError as e:
      problems.append(str(e))
  return entries, problems


def load_entry(gallery_dir: str | os.PathLike, name: str) -> GalleryEntry:
  folder = entry_path(gallery_dir, name)
  if not folder.is_dir():
    known = sorted(e.name for e in scan_gallery(gallery_dir)[0]) if Path(gallery_dir).is_dir() else []
    hint = f"; entries: {', '.join(known[:20])}{' ...' if len(known) > 20 else ''}" if known else ' (it is empty)'
    raise GalleryError(f'no gallery entry {name!r} in {gallery_dir}{hint}')
  return read_entry(folder)


# ---------------------------------------------------------------------------------------------- staging
def staging_dir(gallery_dir: str | os.PathLike) -> Path:
  """A fresh hidden folder inside the gallery (same filesystem, so `install` is a rename)."""
  root = Path(gallery_dir)
  root.mkdir(parents=True, exist_ok=True)
  path = root / f'{_STAGING_PREFIX}{uuid.uuid4().hex[:12]}'
  path.mkdir()
  return path


def check_free(gallery_dir: str | os.PathLike, name: str, overwrite: bool) -> None:
  if entry_path(gallery_dir, name).exists() and not overwrite:
    raise GalleryError(f'gallery entry {name!r} already exists in {gallery_dir} (pass overwrite=True, or '
                       '--overwrite, to replace it)')


def install(staged: Path, gallery_dir: str | os.PathLike, name: str, *, overwrite: bool) -> Path:
  """Moves a staged entry folder into place; an old entry is replaced only once the new one is in."""
  final = entry_path(gallery_dir, name)
  check_free(gallery_dir, name, overwrite)
  old = None
  if final.exists():
    old = final.with_name(f'{_STAGING_PREFIX}old-{name}-{uuid.uuid4().hex[:8]}')
    final.rename(old)
  try:
    staged.rename(final)
  except OSError:
    if old is not None:
      old.rename(final)
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)
  return final
