"""The gallery on the command line.

    python -m aira_jax.gallery list [--gallery=DIR]
    python -m aira_jax.gallery show NAME [--json]
    python -m aira_jax.gallery export --store=PATH_OR_URL (--design=NAME | --top=K) [--experiment=ID] [--seed=N]
                                      [--scale=S] [--overwrite]
    python -m aira_jax.gallery restore NAME [--text="..."] [--out=logits.npy] [--predictions=5]
    python -m aira_jax.gallery import-asi-arch --file=106.json [--cognition_out=notes.jsonl] [--prefix=P]
                                               [--overwrite]

The gallery is --gallery, else $AIRA_GALLERY, else runs/gallery. Exit status: 0 done, 1 failed (the reason on
one `error:` line), 2 usage error.
"""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from absl import flags
from absl import logging

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
COMMANDS = ('list', 'show', 'export', 'restore', 'import-asi-arch')
# Which flags each command reads (besides --gallery and --verbose); any other flag given is a usage error.
_COMMAND_FLAGS = {
    'list': (),
    'show': ('json',),
    'export': ('store', 'design', 'top', 'experiment', 'seed', 'scale', 'overwrite'),
    'restore': ('text', 'out', 'predictions'),
    'import-asi-arch': ('file', 'cognition_out', 'prefix', 'overwrite'),
}
_COMMON = ('gallery', 'verbose')
_NEEDS_NAME = ('show', 'restore')


class UsageError(Exception):
  pass


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string('gallery', None, 'Gallery directory (default: $AIRA_GALLERY or runs/gallery).', flag_values=fv)
  flags.DEFINE_bool('verbose', False, 'Show INFO logs on stderr.', flag_values=fv)
  flags.DEFINE_bool('json', False, 'show: print entry.json as it is.', flag_values=fv)
  flags.DEFINE_string('store', None, 'export: the experiment store (SQLite path or database URL).', flag_values=fv)
  flags.DEFINE_string('design', None, 'export: the design to export.', flag_values=fv)
  flags.DEFINE_integer('top', None, 'export: the K designs with the lowest validation loss.', lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer('experiment', None, 'export --design: this experiment (default: the best).', flag_values=fv)
  flags.DEFINE_integer('seed', None, 'export --design: this seed run (default: the lowest loss).', flag_values=fv)
  flags.DEFINE_string('scale', None, 'export: only experiments at this scale.', flag_values=fv)
  flags.DEFINE_bool('overwrite', False, 'export / import-asi-arch: replace existing entries.', flag_values=fv)
  flags.DEFINE_string('text', 'The ', 'restore: the text whose next token is predicted.', flag_values=fv)
  flags.DEFINE_string('out', None, 'restore: write the logits of the text\'s tokens ([T, vocab] float32) as .npy.',
                      flag_values=fv)
  flags.DEFINE_integer('predictions', 5, 'restore: how many next-token predictions to print.', lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_string('file', None, 'import-asi-arch: ASI-Arch records (JSON list, {name: record}, or JSONL).',
                      flag_values=fv)
  flags.DEFINE_string('cognition_out', None, 'import-asi-arch: also write cognition entries (JSONL) here.',
                      flag_values=fv)
  flags.DEFINE_string('prefix', '', 'import-asi-arch: prefix for the entries\' names.', flag_values=fv)


def _parse(argv: list[str]) -> tuple[str, list[str], flags.FlagValues]:
  fv = flags.FlagValues()
  _define(fv)
  try:
    rest = fv(argv)
  except flags.Error as e:
    raise UsageError(' '.join(str(e).split())) from None
  args = rest[1:]
  if not args:
    raise UsageError(f"missing command: one of {', '.join(COMMANDS)}")
  command, args = args[0], args[1:]
  if command not in COMMANDS:
    raise UsageError(f"unknown command {command!r}: one of {', '.join(COMMANDS)}")
  wanted = 1 if command in _NEEDS_NAME else 0
  if len(args) != wanted:
    raise UsageError(f'{command} takes {"one entry NAME" if wanted else "no positional arguments"}, got {args}')
  allowed = set(_COMMAND_FLAGS[command]) | set(_COMMON)
  stray = sorted(n for n in _COMMAND_FLAGS_ALL if fv[n].present and n not in allowed)
  if stray:
    raise UsageError(f"{command} does not take {', '.join('--' + n for n in stray)}")
  return command, args, fv


_COMMAND_FLAGS_ALL = sorted({n for v in _COMMAND_FLAGS.values() for n in v} | set(_COMMON))


# ---------------------------------------------------------------------------------------------- commands
def _fmt(x, spec: str) -> str:
  return '-' if x is None else format(x, spec)


def _params(n: int | None) -> str:
  if n is None:
    return '-'
  for unit, div in (('B', 1e9), ('M', 1e6), ('K', 1e3)):
    if n >= div:
      return f'{n / div:.2f}{unit}'
  return str(n)


def cmd_list(gallery: Path, fv) -> int:
  from aira_jax.gallery.entry import scan_gallery  # pylint: disable=import-outside-toplevel
  entries, problems = scan_gallery(gallery)
  for p in problems:
    print(f'warning: skipped {p}', file=sys.stderr)
  if not entries:
    print(f'(no entries in {gallery})')
    return EXIT_OK
  header = ['name', 'kind', 'origin', 'params', 'val loss', 'bpb', 'scale']
  body = [[e.name, e.kind, e.origin + ('' if e.runnable else ' (not runnable)'), _params(e.num_params),
           _fmt(e.val_loss, '.4f'), _fmt(e.bpb, '.4f'), e.scale or '-'] for e in entries]
  widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
  print('  '.join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
  print('  '.join('-' * w for w in widths))
  for b in body:
    print('  '.join(c.ljust(w) for c, w in zip(b, widths)).rstrip())
  print(f'{len(entries)} entries in {gallery}')
  return EXIT_OK


def cmd_show(gallery: Path, name: str, fv) -> int:
  from aira_jax.gallery.entry import entry_path, load_entry, read_source  # pylint: disable=import-outside-toplevel
  entry = load_entry(gallery, name)
  if fv.json:
    print((entry_path(gallery, name) / 'entry.json').read_text(encoding='utf-8'), end='')
    return EXIT_OK
  lines = [f'{entry.name}  ({entry.kind}, origin {entry.origin}, {"runnable" if entry.runnable else "not runnable"})']
  if entry.original_name and entry.original_name != entry.name:
    lines.append(f'original name: {entry.original_name}')
  lines.append(f'folder: {entry_path(gallery, name)}')
  if entry.origin == 'aira-jax':
    lines.append(f'store: {entry.store_url}  experiment {entry.experiment_id}, seed {entry.seed}, '
                 f'checkpoint step {entry.checkpoint_step}, scale {entry.scale or "-"}')
  lines.append(f'exported: {entry.exported_at}')
  against = (entry.extra.get('fitness_report') or {}).get('against')
  lines.append(f'fitness: {_fmt(entry.fitness, ".4f")}' + (f' (against {against})' if against else ''))
  for title, text in (('motivation', entry.motivation), ('summary', entry.summary)):
    if text:
      lines += ['', f'{title}:', text.rstrip()]
  metrics = dict(entry.metrics)
  curve = metrics.pop('loss_curve', None)
  reported = dict(metrics.pop('reported', None) or {})
  result = reported.pop('result', None)
  if reported:
    metrics['reported'] = reported
  lines += ['', 'metrics:', json.dumps(metrics, indent=2, allow_nan=True, default=str)]
  if curve:
    lines.append(f'loss curve: {len(curve)} points, ' + ', '.join(f'{s}: {l:.4f}' for s, l in curve[-5:]))
  if isinstance(result, dict):  # ASI-Arch's reported train/test CSV text, shown as published
    for part, text in result.items():
      lines += ['', f'reported {part}:', str(text).rstrip()]
  elif result:
    lines += ['', f'reported result: {result}']
  if entry.config_overrides:
    lines += ['', 'config overrides:', json.dumps(entry.config_overrides, indent=2)]
  lin = entry.lineage
  if entry.origin == 'aira-jax':
    lines += ['', 'lineage:', f'  parent: {lin.get("parent") or "(seed)"}',
              f'  ancestors: {", ".join(lin.get("ancestors", [])) or "-"}',
              f'  children: {", ".join(lin.get("children", [])) or "-"}',
              f'  siblings: {", ".join(lin.get("siblings", [])) or "-"}']
  for a in entry.analyses:
    lines += ['', f'analysis (experiment {a.get("experiment_id")}):', str(a.get('text', '')).rstrip()]
  for s in entry.judge_scores:
    lines += ['', f'judge {s.get("judge") or "?"} (experiment {s.get("experiment_id")}): total '
              f'{_fmt(s.get("total"), ".2f")}  {json.dumps(s.get("sub_scores", {}))}']
    if s.get('rationale'):
      lines.append(str(s['rationale']).rstrip())
  lines += ['', f'{entry.source_file}:', read_source(gallery, entry).rstrip()]
  print('\n'.join(lines))
  return EXIT_OK


def cmd_export(gallery: Path, fv) -> int:
  from aira_jax.discovery.store import ExperimentStore  # pylint: disable=import-outside-toplevel
  from aira_jax.gallery.export import export_design, export_top  # pylint: disable=import-outside-toplevel
  if not fv.store:
    raise UsageError('export needs --store=PATH_OR_URL')
  if (fv.design is None) == (fv.top is None):
    raise UsageError('export needs exactly one of --design=NAME and --top=K')
  if fv.top is not None and (fv.experiment is not None or fv.seed is not None):
    raise UsageError('--experiment and --seed go with --design, not --top')
  url = fv.store
  if '://' not in url and not Path(url).expanduser().is_file():
    raise UsageError(f'--store {url}: no such store file')
  store = ExperimentStore(url)
  try:
    if fv.design is not None:
      entries = [export_design(store, fv.design, gallery, experiment_id=fv.experiment, seed=fv.seed,
                               scale=fv.scale, overwrite=fv.overwrite)]
    else:
      entries = export_top(store, gallery, fv.top, scale=fv.scale, overwrite=fv.overwrite)
  finally:
    store.close()
  for e in entries:
    print(f'exported {e.name}: experiment {e.experiment_id}, seed {e.seed}, step {e.checkpoint_step}, '
          f'val loss {_fmt(e.val_loss, ".4f")} -> {gallery / e.name}')
  return EXIT_OK


def cmd_restore(gallery: Path, name: str, fv) -> int:
  # pylint: disable=import-outside-toplevel  (JAX is imported only by the command that needs it)
  import numpy as np
  from aira_jax.gallery.restore import param_count, restore_entry, text_logits, top_predictions
  run = restore_entry(gallery, name)
  print(f'restored {name}: checkpoint step {run.step}, {param_count(run):,} parameters, '
        f'vocabulary {run.tokenizer.vocab_size}')
  ids, logits = text_logits(run, fv.text)
  print(f'text: {fv.text!r} ({len(ids)} tokens)')
  print('next-token predictions:')
  for token, piece, prob in top_predictions(run, logits, fv.predictions):
    print(f'  {prob:8.4f}  {piece!r}  (id {token})')
  if fv.out:
    out = Path(fv.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, 'wb') as f:  # a file object: np.save would append .npy to a name without it
      np.save(f, logits)
    print(f'logits {tuple(logits.shape)} written to {out}')
  return EXIT_OK


def cmd_import(gallery: Path, fv) -> int:
  from aira_jax.gallery import asi_arch  # pylint: disable=import-outside-toplevel
  if not fv.file:
    raise UsageError('import-asi-arch needs --file=PATH (a JSON list, a {name: record} object, or JSONL)')
  path = Path(fv.file).expanduser()
  if not path.is_file():
    raise UsageError(f'--file {path}: no such file')
  records = asi_arch.load_asi_arch(path)
  names = asi_arch.gallery_names(records, prefix=fv.prefix)
  if fv.cognition_out:  # checked before any entry is written
    asi_arch.check_cognition(asi_arch.asi_arch_cognition(records, entry_names=names))
  entries = asi_arch.import_asi_arch(records, gallery, overwrite=fv.overwrite, prefix=fv.prefix)
  print(f'imported {len(entries)} ASI-Arch design(s) into {gallery} (origin asi-arch, not runnable)')
  if fv.cognition_out:
    n = asi_arch.write_cognition_jsonl(records, fv.cognition_out, entry_names=names)
    print(f'wrote {n} cognition entries to {fv.cognition_out}')
  return EXIT_OK


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  if argv[1:2] == ['help'] or any(a in ('-h', '--help', '--helpfull') for a in argv[1:]):
    fv = flags.FlagValues()
    _define(fv)
    print(__doc__.strip() + '\n\nflags:\n' + fv.get_help())
    return EXIT_OK
  try:
    command, args, fv = _parse(argv)
  except UsageError as e:
    print(f'error: {e}', file=sys.stderr)
    print(f'usage: python -m aira_jax.gallery {{{"|".join(COMMANDS)}}} [NAME] [--flags]  (--help lists the flags)',
          file=sys.stderr)
    return EXIT_USAGE
  logging.set_verbosity(logging.INFO if fv.verbose else logging.WARNING)
  from aira_jax.gallery.entry import GalleryError, default_gallery_dir  # pylint: disable=import-outside-toplevel
  gallery = Path(fv.gallery).expanduser() if fv.gallery else default_gallery_dir()
  try:
    if command == 'list':
      return cmd_list(gallery, fv)
    if command == 'show':
      return cmd_show(gallery, args[0], fv)
    if command == 'export':
      return cmd_export(gallery, fv)
    if command == 'restore':
      return cmd_restore(gallery, args[0], fv)
    return cmd_import(gallery, fv)
  except UsageError as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_USAGE
  except (GalleryError, OSError, ValueError, LookupError) as e:
    print(f'error: {" ".join(str(e).split()) if len(str(e)) < 2000 else str(e)[:2000]}', file=sys.stderr)
    return EXIT_FAILED
  except Exception as e:  # pylint: disable=broad-except  # e.g. a store that cannot be opened, a failed restore
    if fv.verbose:
      traceback.print_exc()
    print(f'error: {type(e).__name__}: {" ".join(str(e).split())[:2000]}', file=sys.stderr)
    return EXIT_FAILED


if __name__ == '__main__':
  sys.exit(main())
