"""Load a trained run for evaluation: config + tokenizer + model with the checkpoint's weights.

All restore logic lives in `load_run`, built on the trainer's own pieces (its config, optimizer, abstract
train state and Orbax Checkpointer), so a checkpoint is read with exactly the structure that wrote it.
Layout (aira_jax.train): <workdir>/config.json (the full train config) and <workdir>/checkpoints/<step>/.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from absl import logging
from flax import nnx
import ml_collections

CONFIG_FILE = 'config.json'


@dataclasses.dataclass
class LoadedRun:
  model: nnx.Module
  tokenizer: Any
  config: ml_collections.ConfigDict
  step: int | None  # None: random init (no checkpoint)
  workdir: Path | None

  @property
  def seq_len(self) -> int:
    return int(self.config.train.seq_len)


def _split_checkpoint_path(checkpoint: Path) -> tuple[Path, int | None]:
  """<dir>/checkpoints/<step> -> (<dir>/checkpoints, step); <dir>/checkpoints -> (it, None).

  A run directory itself (config.json and checkpoints/ in it, as a training workdir or a gallery entry) stands
  for its checkpoints directory.
  """
  if checkpoint.name.isdigit() and checkpoint.is_dir():
    return checkpoint.parent, int(checkpoint.name)
  if (checkpoint / CONFIG_FILE).is_file() and (checkpoint / 'checkpoints').is_dir():
    return checkpoint / 'checkpoints', None
  return checkpoint, None


def read_config(workdir: Path | None, config: Any = None) -> ml_collections.ConfigDict:
  """The run's config: `config` when given, else <workdir>/config.json, over the trainer's defaults."""
  from aira_jax.train.config import base_config  # pylint: disable=g-import-not-at-top
  if config is None:
    path = workdir / CONFIG_FILE if workdir else None
    if path is None or not path.is_file():
      raise FileNotFoundError(f'no {CONFIG_FILE} in {workdir}: pass the training config as well '
                              '(--config=configs/x.py, or config= in code)')
    try:
      config = json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}: malformed JSON ({e.msg}, line {e.lineno})') from e
  given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  merged = base_config().to_dict()
  for section, values in given.items():
    if isinstance(values, dict) and isinstance(merged.get(section), dict):
      merged[section].update(values)
    else:
      merged[section] = values
  return ml_collections.ConfigDict(merged)


def _tokenizer(config: ml_collections.ConfigDict, workdir: Path | None, make_tokenizer: Callable) -> Any:
  data_cfg = copy.deepcopy(config.data)
  if data_cfg.tokenizer == 'sentencepiece':
    path = Path(data_cfg.spm_model_path)
    if not path.is_file() and workdir is not None and (workdir / path).is_file():
      path = workdir / path
    if not path.is_file():
      # Never train a fresh tokenizer here: its ids would not match the checkpoint's embedding.
      raise FileNotFoundError(f'the run\'s sentencepiece model {data_cfg.spm_model_path} was not found '
                              f'(also looked under {workdir})')
    with data_cfg.unlocked():
      data_cfg.spm_model_path = str(path)
      data_cfg.spm_train = False
  return make_tokenizer(data_cfg)


def model_config(config: ml_collections.ConfigDict, tokenizer) -> ml_collections.ConfigDict:
  """The model config as the trainer built it (vocab_size 0 = the tokenizer's vocabulary)."""
  cfg = ml_collections.ConfigDict(config.model.to_dict())
  if cfg.vocab_size <= 0:
    cfg.vocab_size = int(tokenizer.vocab_size)
  elif cfg.vocab_size < tokenizer.vocab_size:
    raise ValueError(f'model.vocab_size={cfg.vocab_size} is smaller than the tokenizer vocabulary '
                     f'({tokenizer.vocab_size})')
  return cfg


def load_run(workdir: str | Path | None = None, *, checkpoint: str | Path | None = None, config: Any = None,
             step: int | None = None, random_init: bool = False, build_model: Callable | None = None,
             make_tokenizer: Callable | None = None) -> LoadedRun:
  """Config, tokenizer and model (float32 weights of `step`, default the latest) of a training run.

  workdir: the trainer's run directory. checkpoint: its checkpoints directory or one step directory in it
  (the config is then read from the directory above). random_init: build the model from the config with
  its seed and no checkpoint (smoke tests, baselines at step 0).
  """
  from aira_jax import data, models  # pylint: disable=g-import-not-at-top
  from aira_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from aira_jax.train import metrics, schedules, sharding, state as state_lib  # pylint: disable=g-import-not-at-top
  build_model = build_model or models.build_model
  make_tokenizer = make_tokenizer or data.make_tokenizer

  ckpt_dir = None
  if checkpoint is not None:
    ckpt_dir, step_in_path = _split_checkpoint_path(Path(checkpoint))
    if not ckpt_dir.is_dir():
      raise FileNotFoundError(f'checkpoint directory {ckpt_dir} does not exist')
    step = step if step is not None else step_in_path
    workdir = workdir or ckpt_dir.parent
  workdir = Path(workdir) if workdir is not None else None
  if workdir is not None and not workdir.is_dir():
    raise FileNotFoundError(f'workdir {workdir} does not exist')
  cfg = read_config(workdir, config)
  tokenizer = _tokenizer(cfg, workdir, make_tokenizer)
  model_cfg = model_config(cfg, tokenizer)

  if random_init:
    model = build_model(model_cfg, rngs=nnx.Rngs(int(cfg.seed)))
    return LoadedRun(model, tokenizer, cfg, None, workdir)

  ckpt_dir = ckpt_dir or (workdir / 'checkpoints' if workdir else None)
  if ckpt_dir is None or not ckpt_dir.is_dir():
    raise FileNotFoundError(f'no checkpoints directory in {workdir} (use random_init for an untrained model)')
  metrics.quiet_orbax_logs()
  mesh = sharding.make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1})
  tx = schedules.make_optimizer(cfg.train)
  setup = state_lib.setup_state(build_model, model_cfg, int(cfg.seed), tx, mesh)
  checkpointer = ckpt_lib.Checkpointer(str(ckpt_dir), save_every=0, keep=0)
  try:
    step = checkpointer.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'{ckpt_dir} holds no checkpoint')
    state, _ = checkpointer.restore(step, setup.abstract)
  finally:
    checkpointer.close()
  model = nnx.merge(setup.graphdef, state.params, state.rest)
  logging.info('restored %s step %d (%d params) for evaluation', ckpt_dir, step, setup.num_params)
  return LoadedRun(model, tokenizer, cfg, int(step), workdir)
