"""Evaluate a trained run on the LM benchmark harness (and optionally its validation bits-per-byte).

    python -m aira_jax.evaluate --workdir=RUN --tasks=arc_easy,hellaswag --limit=500
    python -m aira_jax.evaluate --checkpoint=RUN/checkpoints/2000 --held_out=wikitext,lambada_openai
    python -m aira_jax.evaluate --config=configs/tiny.py --random_init --tasks=piqa --limit=20   # smoke test

Prints a table and writes JSON (--output, default <workdir>/eval/harness-<UTC time>.json). Bad input (paths,
task names, data files) ends with one `error:` line and exit status 2.
"""
from __future__ import annotations

import datetime
import sys
import traceback
from pathlib import Path

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory (config.json, checkpoints/).')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'A checkpoints directory or one <step> directory in it.')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training config, for runs without config.json.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_RANDOM_INIT = flags.DEFINE_bool('random_init', False, 'Evaluate the untrained model the config builds.')
_TASKS = flags.DEFINE_list('tasks', None, 'Tasks (default: all built-in tasks but openbookqa).')
_HELD_OUT = flags.DEFINE_list('held_out', [], 'Tasks reported under held_out (never used as fitness).')
_LIMIT = flags.DEFINE_float('limit', None, 'Docs per task: N, or a fraction when < 1 (default: all).')
_SAMPLE_SEED = flags.DEFINE_integer('sample_seed', None, 'Draw the --limit docs with this seed '
                                    '(default: the first N).')
_FEWSHOT = flags.DEFINE_integer('num_fewshot', 0, 'Few-shot examples per prompt.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Task data directory (default: $AIRA_HARNESS_DATA or '
                                '<repo>/../shared/data/harness).')
_DATA_SOURCE = flags.DEFINE_enum('data_source', 'auto', ['auto', 'local', 'hf'], 'Where task data comes from.')
_MAX_LENGTH = flags.DEFINE_integer('max_length', 0, 'Longest model input (0: the run\'s train.seq_len).')
_BATCH_TOKENS = flags.DEFINE_integer('max_batch_tokens', 0, 'Batch size * padded length per step (0: auto, '
                                     'from the logits\' memory).')
_DTYPE = flags.DEFINE_string('dtype', '', 'Compute dtype (default: bfloat16 on GPU/TPU, float32 on CPU).')
_OUTPUT = flags.DEFINE_string('output', None, 'JSON result path.')
_TASK_MODULES = flags.DEFINE_list('task_modules', [], 'Python files that register extra tasks.')
_LOG_SAMPLES = flags.DEFINE_bool('log_samples', False, 'Keep per-document requests and scores in the JSON.')
_BPB = flags.DEFINE_bool('bpb', False, 'Also report loss / bits per byte on the run\'s validation batches.')

EXIT_USAGE = 2


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(EXIT_USAGE)


def _limit(value: float | None) -> int | float | None:
  if value is None:
    return None
  return int(value) if value >= 1 else float(value)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  if not (_WORKDIR.value or _CHECKPOINT.value or _CONFIG.value is not None):
    _fail('give --workdir, --checkpoint, or --config with --random_init')
  import jax  # pylint: disable=g-import-not-at-top
  from aira_jax.evaluate import bpb as bpb_lib  # pylint: disable=g-import-not-at-top
  from aira_jax.evaluate import harness  # pylint: disable=g-import-not-at-top
  from aira_jax.evaluate.restore import load_run  # pylint: disable=g-import-not-at-top

  try:
    for path in _TASK_MODULES.value:
      harness.load_task_module(path)
    tasks = _TASKS.value or [t for t in harness.DEFAULT_TASKS]
    for name in list(tasks) + list(_HELD_OUT.value):
      harness.get_task(name)  # unknown names fail before any model work
    run = load_run(_WORKDIR.value, checkpoint=_CHECKPOINT.value, config=_CONFIG.value, step=_STEP.value,
                   random_init=_RANDOM_INIT.value)
    dtype = _DTYPE.value or ('float32' if jax.devices()[0].platform == 'cpu' else 'bfloat16')
    result = harness.evaluate_model(
        run.model, run.tokenizer, tasks, _limit(_LIMIT.value), held_out=_HELD_OUT.value,
        num_fewshot=_FEWSHOT.value, sample_seed=_SAMPLE_SEED.value, data_dir=_DATA_DIR.value,
        data_source=_DATA_SOURCE.value, max_length=_MAX_LENGTH.value or run.seq_len, compute_dtype=dtype,
        max_batch_tokens=_BATCH_TOKENS.value, log_samples=_LOG_SAMPLES.value)
    extra = {'run': {'workdir': str(run.workdir) if run.workdir else None, 'step': run.step,
                     'model': run.config.model.to_dict()}}
    if _BPB.value:
      extra['validation'] = bpb_lib.evaluate_run_bpb(run.model, run.tokenizer, run.config, compute_dtype=dtype)
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, ImportError) as e:
    logging.vlog(1, '%s', traceback.format_exc())
    _fail(f'{type(e).__name__}: {e} (traceback with --verbosity=1)')

  print(harness.format_table(result))
  if 'validation' in extra:
    v = extra['validation']
    print(f"validation: loss {v['loss']:.4f}, bits/byte {v['bits_per_byte']:.4f} over {v['tokens']:.0f} tokens")
  output = _OUTPUT.value
  if not output:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    base = run.workdir if run.workdir is not None else Path('.')
    output = base / 'eval' / f'harness-{stamp}.json'
  path = harness.write_json(result, output, extra)
  print(f'wrote {path}')


def run() -> None:
  app.run(main)


if __name__ == '__main__':
  run()
