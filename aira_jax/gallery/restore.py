"""Restore a gallery entry as a model, and read its next-token predictions.

    run = restore_entry('runs/gallery', 'gdn-v2')        # aira_jax.evaluate.restore.LoadedRun
    tokens, logits = text_logits(run, 'The quick brown')  # float32 [T, vocab]

A runnable entry's folder is a trainer workdir, so restoring is `load_run` on it (the one restore path of the
project, built on the trainer's own abstract state and Orbax Checkpointer) at the entry's checkpoint step.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from aira_jax.gallery.entry import GalleryError, entry_path, load_entry
from aira_jax.gallery.export import SPM_FILE


def restore_entry(gallery_dir: str | os.PathLike, name: str):
  """Model (float32 weights of the entry's checkpoint step), tokenizer and config of a runnable entry."""
  from aira_jax.evaluate.restore import load_run  # pylint: disable=import-outside-toplevel  (imports JAX)
  entry = load_entry(gallery_dir, name)
  folder = entry_path(gallery_dir, name).resolve()
  if not entry.runnable:
    raise GalleryError(f'gallery entry {name!r} is not runnable (origin {entry.origin}): it has no checkpoint, '
                       f'only its source ({entry.source_file}) and reported metrics')
  step_dir = folder / 'checkpoints' / str(entry.checkpoint_step)
  if not (folder / 'config.json').is_file() or not step_dir.is_dir():
    raise GalleryError(f'gallery entry {name!r} is incomplete: it needs {folder}/config.json and {step_dir}/')
  config = _config(folder)
  return load_run(workdir=folder, config=config, step=entry.checkpoint_step)


def _config(folder: Path) -> dict[str, Any]:
  """The entry's config.json, with its tokenizer file made absolute (so a same-named file in the current
  directory is never picked up instead)."""
  path = folder / 'config.json'
  try:
    config = json.loads(path.read_text(encoding='utf-8'))
  except ValueError as e:
    raise GalleryError(f'{path}: malformed JSON ({e})') from None
  data = config.get('data') or {}
  if data.get('tokenizer') == 'sentencepiece':
    spm = folder / SPM_FILE
    if not spm.is_file():
      raise GalleryError(f'gallery entry {folder.name!r} uses a sentencepiece tokenizer but {spm} is missing')
    data['spm_model_path'] = str(spm)
    data['spm_train'] = False
  return config


def param_count(run) -> int:
  from aira_jax.models import count_params  # pylint: disable=import-outside-toplevel
  return int(count_params(run.model)['total'])


def encode(run, text: str) -> np.ndarray:
  """The text's token ids (int32 [T]); the last train.seq_len tokens when it is longer than the run trained on."""
  if not isinstance(text, str) or not text:
    raise GalleryError('the text to score must be a non-empty string')
  ids = np.asarray(run.tokenizer.encode(text), dtype=np.int32)
  if ids.size == 0:
    raise GalleryError(f'the text {text!r} encodes to no tokens')
  return ids[-run.seq_len:]


def text_logits(run, text: str) -> tuple[np.ndarray, np.ndarray]:
  """(token ids int32 [T], float32 logits [T, vocab]): the model's prediction after each token of `text`."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  ids = encode(run, text)
  logits = run.model(jnp.asarray(ids[None, :]))
  return ids, np.asarray(logits, dtype=np.float32)[0]


def top_predictions(run, logits: np.ndarray, k: int = 5) -> list[tuple[int, str, float]]:
  """The k most likely next tokens after the last position: (id, decoded text, probability)."""
  last = np.asarray(logits[-1], dtype=np.float64)
  probs = np.exp(last - last.max())
  probs /= probs.sum()
  order = np.argsort(-probs, kind='stable')[:k]
  out = []
  for i in order:
    try:
      piece = run.tokenizer.decode([int(i)])
    except Exception:  # pylint: disable=broad-except  # a special or partial-byte id
      piece = f'<id {int(i)}>'
    out.append((int(i), piece, float(probs[i])))
  return out
