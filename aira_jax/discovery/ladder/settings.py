"""The ladder of scales (Genesys): typed rungs read from a config section `ladder`.

    settings = ladder_settings_from_config(cfg)     # cfg: a config with a `ladder` section, or the section itself

Config shape (every rung field but `name` optional):
    cfg.ladder.rungs = (
        {'name': 'ladder-s', 'model': {'d_model': 128, 'num_layers': 2, 'num_heads': 4},
         'train': {'seq_len': 128, 'global_batch': 16}, 'tokens_per_param': 20.0,
         'min_steps': 50, 'max_steps': 2000, 'max_designs': 8, 'seeds': (0,), 'promote': 3,
         'min_delta_sigma': 0.0},
        {'name': 'ladder-m', 'model': {'d_model': 256, 'num_layers': 4}, 'tokens': 50_000_000,
         'seeds': (0, 1, 2), 'promote': 1, 'min_delta_sigma': 1.0},
    )
    cfg.ladder.budget_basis = 'design'        # whose parameter count sets a rung's token budget
    cfg.ladder.param_basis = 'non_embedding'  # which parameter count N means (budget and C = 6ND)
    cfg.ladder.stack_compositions = True      # repeat a composition's pattern to the rung's num_layers
    cfg.ladder.retry_failed = False           # a rerun retrains (design, rung) pairs that failed before
    cfg.ladder.priority = 100                 # store priority of the ladder's experiments
    cfg.ladder.target_loss = 0.0              # L* of the "X% faster" table (0: the baseline's top-rung loss)
    cfg.ladder.plot = True
Kept free of JAX imports.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from aira_jax.discovery.records import RecordError, validate_name
from aira_jax.models.build import plain_config

BUDGET_BASES = ('design', 'baseline')
PARAM_BASES = ('non_embedding', 'total')


class LadderConfigError(ValueError):
  """A ladder config value is invalid; the message names the field."""


def _number(value: Any, where: str, *, minimum: float = 0.0, integer: bool = False) -> float | int:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise LadderConfigError(f'{where} must be a number, got {value!r}')
  if integer and not float(value).is_integer():
    raise LadderConfigError(f'{where} must be an integer, got {value!r}')
  if not math.isfinite(value) or value < minimum:
    raise LadderConfigError(f'{where} must be finite and >= {minimum:g}, got {value!r}')
  return int(value) if integer else float(value)


def _overrides(value: Any, where: str, known: Sequence[str] | None) -> dict[str, Any]:
  value = plain_config(value) if value is not None else {}
  if not isinstance(value, Mapping):
    raise LadderConfigError(f'{where} must be a mapping of config fields, got {type(value).__name__}')
  if known is not None:
    unknown = sorted(set(value) - set(known))
    if unknown:
      raise LadderConfigError(f'{where} has unknown field(s) {unknown}; known: {", ".join(sorted(known))}')
  return dict(value)


def _known_fields(section: str) -> tuple[str, ...] | None:
  """The trainer's fields of a section, so a typo in a rung fails here, not in every training child."""
  try:
    from aira_jax.train import config as train_config  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  maker = {'model': train_config.default_model_config, 'train': train_config.default_train_config}[section]
  return tuple(maker().keys())


@dataclasses.dataclass(frozen=True)
class Rung:
  """One scale of the ladder. `name` is the experiments' `scale` in the store.

  The token budget is `tokens_per_param` x N (Genesys: tokens proportional to parameters) or a fixed `tokens`;
  steps = ceil(tokens / (global_batch * seq_len)), clipped to [min_steps, max_steps].
  """
  name: str
  model: dict[str, Any] = dataclasses.field(default_factory=dict)  # model-config overrides (d_model, ...)
  train: dict[str, Any] = dataclasses.field(default_factory=dict)  # train-config overrides (seq_len, lr, ...)
  tokens_per_param: float = 0.0
  tokens: int = 0
  min_steps: int = 1
  max_steps: int = 1_000_000
  max_designs: int = 8  # designs admitted to the rung (the baseline comes on top)
  seeds: tuple[int, ...] = ()  # () = the Engineer's seeds
  promote: int = 1  # how many designs go up to the next rung
  min_delta_sigma: float = 0.0  # promote only if (L_base - L) >= this many noise-floor sigmas (0: no requirement)

  def __post_init__(self):
    where = f'ladder rung {self.name!r}'
    try:
      validate_name(self.name, 'ladder rung name')
    except RecordError as e:
      raise LadderConfigError(str(e)) from None
    object.__setattr__(self, 'model', _overrides(self.model, f'{where}: model', _known_fields('model')))
    object.__setattr__(self, 'train', _overrides(self.train, f'{where}: train', _known_fields('train')))
    for key in ('max_steps', 'max_tokens'):
      if key in self.train:
        raise LadderConfigError(f'{where}: train.{key} is set by the ladder from the token budget; use the '
                                f"rung's tokens / tokens_per_param and min_steps / max_steps instead")
    tpp = _number(self.tokens_per_param, f'{where}: tokens_per_param')
    tokens = _number(self.tokens, f'{where}: tokens', integer=True)
    if (tpp > 0) == (tokens > 0):
      raise LadderConfigError(f'{where}: set exactly one of tokens_per_param (> 0) and tokens (> 0), got '
                              f'tokens_per_param={self.tokens_per_param!r}, tokens={self.tokens!r}')
    object.__setattr__(self, 'tokens_per_param', tpp)
    object.__setattr__(self, 'tokens', tokens)
    object.__setattr__(self, 'min_steps', _number(self.min_steps, f'{where}: min_steps', minimum=1, integer=True))
    object.__setattr__(self, 'max_steps', _number(self.max_steps, f'{where}: max_steps', minimum=1, integer=True))
    if self.max_steps < self.min_steps:
      raise LadderConfigError(f'{where}: max_steps ({self.max_steps}) is below min_steps ({self.min_steps})')
    object.__setattr__(self, 'max_designs',
                       _number(self.max_designs, f'{where}: max_designs', minimum=1, integer=True))
    object.__setattr__(self, 'promote', _number(self.promote, f'{where}: promote', integer=True))
    object.__setattr__(self, 'min_delta_sigma', _number(self.min_delta_sigma, f'{where}: min_delta_sigma'))
    seeds = self.seeds
    if isinstance(seeds, int) and not isinstance(seeds, bool):
      seeds = (seeds,)
    if isinstance(seeds, str) or not isinstance(seeds, Sequence):
      raise LadderConfigError(f'{where}: seeds must be a list of integers, got {seeds!r}')
    seeds = tuple(_number(s, f'{where}: seeds', integer=True) for s in seeds)
    if len(set(seeds)) != len(seeds):
      raise LadderConfigError(f'{where}: seeds must be distinct, got {list(seeds)}')
    object.__setattr__(self, 'seeds', seeds)

  def steps_for(self, num_params: int | None, tokens_per_step: int) -> tuple[int, int]:
    """(steps, planned tokens) for a model of `num_params` parameters at `tokens_per_step` tokens per step."""
    if tokens_per_step < 1:
      raise LadderConfigError(f'ladder rung {self.name!r}: tokens per step must be >= 1, got {tokens_per_step}')
    if self.tokens > 0:
      want = self.tokens
    else:
      if not num_params or num_params < 1:
        raise LadderConfigError(f'ladder rung {self.name!r}: tokens_per_param needs a parameter count, got '
                                f'{num_params!r}')
      want = self.tokens_per_param * num_params
    steps = min(self.max_steps, max(self.min_steps, math.ceil(want / tokens_per_step)))
    return steps, steps * tokens_per_step


@dataclasses.dataclass(frozen=True)
class LadderSettings:
  rungs: tuple[Rung, ...]
  budget_basis: str = 'design'  # 'design': each design's own N; 'baseline': the baseline's N (equal tokens)
  param_basis: str = 'non_embedding'  # N for budgets and C = 6ND: 'non_embedding' (total - embedding - head)
  stack_compositions: bool = True  # a composition's pattern repeats to the rung's num_layers mixers
  retry_failed: bool = False  # a rerun adds a new experiment for a (design, rung) whose run failed
  priority: int = 100  # store priority of the ladder's experiments (claimed before the default 0)
  target_loss: float = 0.0  # L* for "X% faster" (0: the baseline's mean loss at the largest rung it reached)
  plot: bool = True
  param_timeout_s: float = 300.0  # limit on the child process that counts parameters

  def __post_init__(self):
    rungs = self.rungs
    if isinstance(rungs, (Rung, Mapping)) or not isinstance(rungs, Sequence):
      raise LadderConfigError(f'ladder.rungs must be a list of rungs, got {type(rungs).__name__}')
    parsed = []
    for i, r in enumerate(rungs):
      if isinstance(r, Rung):
        parsed.append(r)
        continue
      r = _fields_of(r, Rung, f'ladder.rungs[{i}]', required='name')
      parsed.append(Rung(**{k: (tuple(v) if k == 'seeds' and isinstance(v, list) else v) for k, v in r.items()}))
    if not parsed:
      raise LadderConfigError('ladder.rungs must name at least one rung')
    names = [r.name for r in parsed]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
      raise LadderConfigError(f'ladder.rungs: rung names must be unique (they are store scales), repeated: {dupes}')
    object.__setattr__(self, 'rungs', tuple(parsed))
    if self.budget_basis not in BUDGET_BASES:
      raise LadderConfigError(f'ladder.budget_basis must be one of {BUDGET_BASES}, got {self.budget_basis!r}')
    if self.param_basis not in PARAM_BASES:
      raise LadderConfigError(f'ladder.param_basis must be one of {PARAM_BASES}, got {self.param_basis!r}')
    for name in ('stack_compositions', 'retry_failed', 'plot'):
      if not isinstance(getattr(self, name), bool):
        raise LadderConfigError(f'ladder.{name} must be True or False, got {getattr(self, name)!r}')
    if isinstance(self.priority, bool) or not isinstance(self.priority, int):
      raise LadderConfigError(f'ladder.priority must be an integer, got {self.priority!r}')
    object.__setattr__(self, 'target_loss', _number(self.target_loss or 0.0, 'ladder.target_loss'))
    object.__setattr__(self, 'param_timeout_s', _number(self.param_timeout_s, 'ladder.param_timeout_s', minimum=1))

  def rung(self, name: str) -> Rung:
    for r in self.rungs:
      if r.name == name:
        return r
    raise KeyError(f'no ladder rung named {name!r}; rungs: {[r.name for r in self.rungs]}')


def ladder_settings_from_config(cfg: Any) -> LadderSettings:
  """LadderSettings from a config with a `ladder` section, or from that section itself (ConfigDict or dict)."""
  section = cfg
  try:
    if 'ladder' in cfg and cfg['ladder'] is not None:
      section = cfg['ladder']
  except TypeError:
    pass
  return LadderSettings(**_fields_of(section, LadderSettings, 'ladder config', required='rungs'))


def _fields_of(value: Any, cls: type, where: str, *, required: str) -> dict[str, Any]:
  """`value` as a plain dict of `cls`'s fields; a non-mapping, an unknown field or a missing `required` one is a
  LadderConfigError naming `where`."""
  value = plain_config(value)
  if not isinstance(value, Mapping):
    raise LadderConfigError(f'{where} must be a mapping, got {type(value).__name__}')
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(value) - fields)
  if unknown:
    raise LadderConfigError(f'{where} has unknown field(s) {unknown}; known: {", ".join(sorted(fields))}')
  if required not in value:
    raise LadderConfigError(f'{where} needs {"a " + required if required == "name" else required}')
  return dict(value)
