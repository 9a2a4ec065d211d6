"""Check one design program against every gate, in a sandboxed child process.

    python -m aira_jax.check --design=my_mixer.py
    python -m aira_jax.check --design=attn.py --allow_quadratic --target_params=150000 --auto_fit
    python -m aira_jax.check --design=x.py --config=aira_jax/discovery/gates/config.py --config.seq_len=256

Prints progress (one line per gate) and, as the LAST line, the JSON verdict
{"ok": bool, "gate": <failed gate or null>, "reason": str, ...}. Exit status: 0 accepted, 1 rejected,
2 usage error (missing or unreadable file, bad flag or config).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from absl import flags
from ml_collections import config_flags

from aira_jax.discovery.gates import GATE_NAMES, config as gates_config
from aira_jax.discovery.gates.config import settings_from_config

EXIT_ACCEPTED, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2

class UsageError(Exception):
  pass


class _Flags:
  """The CLI's flags, defined on a fresh FlagValues per call: config_flags reads `argv` when it is defined (to
  register --config.<field> overrides), so definition and parsing both belong inside main()."""

  def __init__(self, argv: list[str]):
    fv = flags.FlagValues()
    self.design = flags.DEFINE_string('design', None, 'Path to the design program (.py) to check.', flag_values=fv)
    self.config = config_flags.DEFINE_config_file(
        'config', gates_config.__file__, 'Check settings: a file whose get_config() returns the gate settings '
        '(default: the tiny CPU check), or a project config with a `check` section.', flag_values=fv, sys_argv=argv)
    self.allow_quadratic = flags.DEFINE_bool('allow_quadratic', None, 'Accept O(T^2) cost (softmax attention).',
                                             flag_values=fv)
    self.target_params = flags.DEFINE_integer('target_params', None, 'Parameter budget target for the tiny LM '
                                              '(default: the reference baseline at the same scale).', flag_values=fv)
    self.auto_fit = flags.DEFINE_bool('auto_fit', None, 'Fit mlp_hidden so the LM lands in the budget.',
                                      flag_values=fv)
    self.json_only = flags.DEFINE_bool('json_only', False, 'Print only the JSON verdict.', flag_values=fv)
    rest = fv(argv)
    if len(rest) > 1:
      raise UsageError(f'unexpected arguments {rest[1:]}; pass the program with --design=PATH')


def _first_line(e: BaseException) -> str:
  """The exception in one line (config_flags spreads the path it tried over several)."""
  if isinstance(e, (AttributeError, KeyError)):
    return f'a --config.<field> override names a field that does not exist ({str(e).strip(chr(34) + chr(39))})'
  text = ' '.join(line.strip() for line in str(e).strip().splitlines()[:5])
  return f'{type(e).__name__}: {text[:400]}'


def _parse(argv: list[str]) -> _Flags:
  try:
    return _Flags(argv)
  except UsageError:
    raise
  except Exception as e:  # absl flag errors; config overrides naming unknown fields
    raise UsageError(_first_line(e)) from e


def _read_design(path: str | None) -> tuple[str, str]:
  if not path:
    raise UsageError('--design=PATH is required')
  if not os.path.isfile(path):
    raise UsageError(f"design program '{path}' does not exist or is not a file")
  try:
    with open(path, encoding='utf-8') as f:
      source = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise UsageError(f"cannot read design program '{path}': {e}") from e
  stem = os.path.splitext(os.path.basename(path))[0]
  name = ''.join(c if c.isalnum() or c in '_-' else '_' for c in stem) or 'design'
  return source, name


def _settings(f: _Flags):
  try:
    settings = settings_from_config(f.config.value)
  except Exception as e:  # a config file that does not load (config_flags loads lazily) or has bad fields
    raise UsageError(f'bad check config: {_first_line(e)}') from e
  for field, holder in (('allow_quadratic', f.allow_quadratic), ('target_params', f.target_params),
                        ('auto_fit', f.auto_fit)):
    if holder.value is not None:
      setattr(settings, field, holder.value)
  try:
    return settings.validate()
  except ValueError as e:
    raise UsageError(str(e)) from e


def _printer(quiet: bool):
  total = len(GATE_NAMES)

  def on_event(event: dict[str, Any]) -> None:
    if quiet:
      return
    if event['event'] == 'start':
      print(f"[{event['index'] + 1}/{total}] {event['gate']} ...", flush=True)
    elif event['event'] == 'gate':
      v = event['verdict']
      status = 'ok' if v['ok'] else 'REJECTED'
      print(f"      {status} ({v['seconds']:.1f} s){': ' + v['reason'] if v['reason'] else ''}", flush=True)
  return on_event


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  try:
    f = _parse(argv)
    source, name = _read_design(f.design.value)
    settings = _settings(f)
  except UsageError as e:
    print(f'error: {e}', file=sys.stderr)
    print(json.dumps({'ok': False, 'gate': 'usage', 'reason': f'usage error: {e}'}))
    return EXIT_USAGE
  from aira_jax.discovery.sandbox import check_program  # pylint: disable=import-outside-toplevel
  verdict = check_program(source, name, settings, on_event=_printer(f.json_only.value))
  if not f.json_only.value:
    print(f"{'ACCEPTED' if verdict.ok else 'REJECTED at gate ' + str(verdict.gate)} ({verdict.seconds:.1f} s)")
  print(verdict.to_json(), flush=True)
  return EXIT_ACCEPTED if verdict.ok else EXIT_REJECTED


if __name__ == '__main__':
  sys.exit(main())
