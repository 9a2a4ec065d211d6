"""Import ASI-Arch's published designs into the gallery, and their motivations into the cognition base.

    records = load_asi_arch('106.json')                  # validated AsiArchRecords (list, {name: record} or JSONL)
    entries = import_asi_arch(records, 'runs/gallery')   # origin 'asi-arch', runnable False
    write_cognition_jsonl(records, 'asi_arch_notes.jsonl')

ASI-Arch released its discovered architectures as records with `name`, `program` (PyTorch source), `motivation`,
`summary`, `result` (train/test CSV text, or a string), `parameters` (e.g. '417.16M') and `score`. The program is
kept as program_torch.py for reading and porting by hand: it is never executed or imported here, and the
entries are not runnable. Every record is validated before anything is written, so a bad file costs nothing.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from aira_jax.gallery.entry import (TORCH_SOURCE_FILE, GalleryEntry, GalleryError, check_free, install, now_iso,
                                    staging_dir, write_entry)

ASI_ARCH_SOURCE = 'ASI-Arch (Liu et al. 2025, "AlphaGo Moment for Model Architecture Discovery")'
_UNITS = {'': 1, 'K': 1e3, 'M': 1e6, 'B': 1e9, 'G': 1e9, 'T': 1e12}
_PARAMS_RE = re.compile(r'^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMBGT]?)\s*$', re.IGNORECASE)


class AsiArchError(GalleryError, ValueError):
  """A malformed ASI-Arch file or record."""


@dataclasses.dataclass(frozen=True)
class AsiArchRecord:
  name: str                                    # as published
  program: str                                 # PyTorch source text (never executed)
  motivation: str = ''
  summary: str = ''
  result: Any = None                           # {'train': csv, 'test': csv}, a string, or None
  parameters: str | float | None = None        # as published ('417.16M' or a number)
  score: float | None = None
  where: str = ''                              # 'record 3' / "record 'name'" for messages


def parse_parameter_count(value: Any) -> int | None:
  """'417.16M' -> 417160000; a number stays itself; anything else -> None."""
  if isinstance(value, bool) or value is None:
    return None
  if isinstance(value, (int, float)):
    return int(round(value)) if math.isfinite(value) and value >= 0 else None
  m = _PARAMS_RE.match(str(value))
  return int(round(float(m.group(1)) * _UNITS[m.group(2).upper()])) if m else None


# ---------------------------------------------------------------------------------------------- reading
def _read_records(path: Path) -> list[tuple[str, Any]]:
  """(where, raw record) pairs from a JSON list, a JSON {name: record} object, or JSONL."""
  try:
    text = path.read_text(encoding='utf-8')
  except OSError as e:
    raise AsiArchError(f'cannot read {path}: {e}') from None
  try:
    data = json.loads(text)
  except json.JSONDecodeError as whole:
    lines = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if len(lines) < 2:  # not JSONL either: report the JSON error
      raise AsiArchError(f'{path}: malformed JSON ({whole.msg}, line {whole.lineno} column {whole.colno})') from None
    out = []
    for n, (i, line) in enumerate(lines):
      try:
        out.append((f'record {n} (line {i})', json.loads(line)))
      except json.JSONDecodeError as e:
        raise AsiArchError(f'{path}: line {i} is not JSON ({e.msg}); expected a JSON list, a JSON object of '
                           'records by name, or one JSON record per line') from None
    return out
  return records_from(data, str(path))


def records_from(data: Any, source: str = 'input') -> list[tuple[str, Any]]:
  if isinstance(data, list):
    return [(f'record {i}', r) for i, r in enumerate(data)]
  if isinstance(data, Mapping):
    if 'name' in data and 'program' in data:  # a single record
      return [('record 0', data)]
    out = []
    for i, (key, r) in enumerate(data.items()):
      if isinstance(r, Mapping) and 'name' not in r:
        r = {**r, 'name': key}
      out.append((f'record {i} ({key!r})', r))
    return out
  raise AsiArchError(f'{source}: expected a list of records or an object of records by name, '
                     f'got {type(data).__name__}')


def validate_record(raw: Any, where: str) -> AsiArchRecord:
  if not isinstance(raw, Mapping):
    raise AsiArchError(f'{where}: must be a JSON object, got {type(raw).__name__}')
  for field in ('name', 'program'):
    value = raw.get(field)
    if value is None:
      raise AsiArchError(f"{where}: missing field '{field}'")
    if not isinstance(value, str) or not value.strip():
      raise AsiArchError(f"{where}: field '{field}' must be a non-empty string, got {value!r:.80}")
    if field == 'name' and repr(value) not in where:
      where = f'{where} {value!r}'
  for field in ('motivation', 'summary'):
    value = raw.get(field)
    if value is not None and not isinstance(value, str):
      raise AsiArchError(f"{where}: field '{field}' must be a string, got {type(value).__name__}")
  result = raw.get('result')
  if result is not None and not isinstance(result, (str, Mapping)):
    raise AsiArchError(f"{where}: field 'result' must be an object or a string, got {type(result).__name__}")
  params = raw.get('parameters')
  if params is not None and (isinstance(params, bool) or not isinstance(params, (str, int, float))):
    raise AsiArchError(f"{where}: field 'parameters' must be a string or a number, got {params!r:.80}")
  score = raw.get('score')
  if isinstance(score, str):
    try:
      score = float(score)
    except ValueError:
      raise AsiArchError(f"{where}: field 'score' must be a number, got {score!r:.80}") from None
  if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
    raise AsiArchError(f"{where}: field 'score' must be a number, got {score!r:.80}")
  try:
    json.dumps(result)
  except (TypeError, ValueError) as e:
    raise AsiArchError(f"{where}: field 'result' is not JSON-serialisable: {e}") from None
  return AsiArchRecord(name=raw['name'], program=raw['program'], motivation=raw.get('motivation') or '',
                       summary=raw.get('summary') or '', result=result, parameters=params,
                       score=None if score is None else float(score), where=where)


def load_asi_arch(path: str | os.PathLike) -> list[AsiArchRecord]:
  """Every record of an ASI-Arch file, validated (the first bad record raises, naming its index and field)."""
  path = Path(path)
  pairs = _read_records(path)
  if not pairs:
    raise AsiArchError(f'{path}: holds no records')
  try:
    return [validate_record(raw, where) for where, raw in pairs]
  except AsiArchError as e:
    raise AsiArchError(f'{path}: {e}') from None


# ---------------------------------------------------------------------------------------------- names
def sanitize_name(name: str, *, prefix: str = '') -> str:
  """A gallery name ([A-Za-z0-9_.-], starting with a letter or digit, at most 128 characters)."""
  s = re.sub(r'[^A-Za-z0-9_.\-]+', '_', prefix + name.strip())
  s = re.sub(r'^[^A-Za-z0-9]+', '', s)[:128].rstrip('_.-')
  return s or 'asi-arch'


def gallery_names(records: Sequence[AsiArchRecord], *, prefix: str = '') -> list[str]:
  """Sanitised, distinct names (a clash after sanitising gets -2, -3, ...)."""
  taken: set[str] = set()
  out = []
  for r in records:
    base = sanitize_name(r.name, prefix=prefix)
    name, n = base, 2
    while name.lower() in taken:  # case-insensitive: the gallery may live on a case-folding filesystem
      suffix = f'-{n}'
      name, n = base[:128 - len(suffix)] + suffix, n + 1
    taken.add(name.lower())
    out.append(name)
  return out


# ---------------------------------------------------------------------------------------------- import
def _entry(record: AsiArchRecord, name: str, source: str) -> GalleryEntry:
  reported = {'score': record.score, 'parameters': record.parameters,
              'parameters_count': parse_parameter_count(record.parameters), 'result': record.result}
  return GalleryEntry(name=name, kind='program', origin='asi-arch', runnable=False, source_file=TORCH_SOURCE_FILE,
                      motivation=record.motivation, summary=record.summary, original_name=record.name,
                      metrics={'reported': reported}, lineage={'parent': None, 'ancestors': [], 'children': [],
                                                               'siblings': []},
                      exported_at=now_iso(), store_url='', extra={'imported_from': source, 'framework': 'pytorch'})


def import_asi_arch(source: str | os.PathLike | Sequence[AsiArchRecord], gallery_dir: str | os.PathLike, *,
                    overwrite: bool = False, prefix: str = '') -> list[GalleryEntry]:
  """Adds every record as a non-runnable 'asi-arch' entry. All records are validated and all names checked
  before the first entry is written; existing entries are replaced only with `overwrite`."""
  if isinstance(source, (str, os.PathLike)):
    records, origin = load_asi_arch(source), str(source)
  else:
    records, origin = [r if isinstance(r, AsiArchRecord) else validate_record(r, f'record {i}')
                       for i, r in enumerate(source)], 'records'
  if not records:
    raise AsiArchError('no records to import')
  names = gallery_names(records, prefix=prefix)
  for name in names:
    check_free(gallery_dir, name, overwrite)
  entries = [_entry(r, n, origin) for r, n in zip(records, names)]
  staging = staging_dir(gallery_dir)
  try:
    folders = []
    for record, entry in zip(records, entries):
      folder = staging / entry.name
      folder.mkdir()
      (folder / TORCH_SOURCE_FILE).write_text(record.program, encoding='utf-8')
      write_entry(entry, folder)
      folders.append(folder)
    for folder, entry in zip(folders, entries):
      install(folder, gallery_dir, entry.name, overwrite=overwrite)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return entries


# ---------------------------------------------------------------------------------------------- cognition
def _cognition_id(name: str) -> str:
  s = re.sub(r'[^a-z0-9_.\-]+', '-', name.lower()).strip('-._')
  return ('asi-arch-' + s)[:96].rstrip('-._') or 'asi-arch'


def _first_sentences(text: str, limit: int = 400) -> str:
  text = ' '.join(text.split())
  if len(text) <= limit:
    return text
  cut = text.rfind('. ', 0, limit)
  return text[:cut + 1] if cut > limit // 3 else text[:limit].rstrip() + '...'


def asi_arch_cognition(records: Iterable[AsiArchRecord | Mapping[str, Any]], *,
                       entry_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Cognition entries (aira_jax.discovery.cognition's JSONL format), one per design, so a search retrieves
  ASI-Arch's motivations: the trigger is the problem the design answered, the algorithm its summary."""
  recs = [r if isinstance(r, AsiArchRecord) else validate_record(r, f'record {i}') for i, r in enumerate(records)]
  names = list(entry_names) if entry_names is not None else gallery_names(recs)
  out, taken = [], set()
  for r, gname in zip(recs, names):
    base = _cognition_id(r.name)
    cid, n = base, 2
    while cid in taken:
      suffix = f'-{n}'
      cid, n = base[:96 - len(suffix)] + suffix, n + 1
    taken.add(cid)
    motivation, summary = r.motivation.strip(), r.summary.strip()
    facts = [f'score {r.score:g}' if r.score is not None else '', f'{r.parameters} parameters' if r.parameters else '']
    facts = ', '.join(f for f in facts if f)
    out.append({
        'id': cid,
        'title': f'ASI-Arch design {r.name}',
        'trigger': motivation or summary or f'Looking for linear-attention designs like ASI-Arch\'s {r.name}.',
        'algorithm': summary or _first_sentences(motivation) or f'See the PyTorch program of {r.name}.',
        'background': (f'Discovered by ASI-Arch{f" ({facts})" if facts else ""}. '
                       + (_first_sentences(motivation) if motivation and summary else
                          'Its published motivation is the trigger above.')),
        'guidance': (f'Reference only: the original is PyTorch (gallery entry {gname}, {TORCH_SOURCE_FILE}). '
                     'Re-implement the idea as a causal JAX Mixer with aira_jax.ops (chunked kernels, no Python '
                     'loops over time); do not port the torch code line by line.'),
        'source': f'{ASI_ARCH_SOURCE}, design {r.name}',
        'tags': ['asi-arch'],
    })
  return out


def check_cognition(entries: Sequence[Mapping[str, Any]]) -> None:
  """Raises AsiArchError unless the entries form a valid CognitionBase (fields, ids, no duplicates)."""
  # pylint: disable=import-outside-toplevel
  from aira_jax.discovery.cognition import Cognition, CognitionBase, CognitionError
  try:
    CognitionBase(Cognition.from_dict(e) for e in entries)
  except CognitionError as e:
    raise AsiArchError(f'the cognition entries are not valid: {e}') from None


def write_cognition_jsonl(records: Iterable[AsiArchRecord | Mapping[str, Any]], path: str | os.PathLike, *,
                          entry_names: Sequence[str] | None = None) -> int:
  """Writes the cognition entries as JSONL and checks they load as a CognitionBase; returns how many."""
  from aira_jax.discovery.cognition import CognitionBase, CognitionError  # pylint: disable=import-outside-toplevel
  entries = asi_arch_cognition(records, entry_names=entry_names)
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(''.join(json.dumps(e, ensure_ascii=False) + '\n' for e in entries), encoding='utf-8')
  try:
    CognitionBase().load_jsonl(tmp)
  except CognitionError as e:
    tmp.unlink(missing_ok=True)
    raise AsiArchError(f'the cognition entries do not load: {e}') from None
  tmp.replace(path)
  return len(entries)
