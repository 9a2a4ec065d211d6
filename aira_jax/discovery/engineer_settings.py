"""The Engineer's settings, read from a discovery config's `engineer` section, and the per-experiment train config.

    settings = settings_from_config(cfg)          # cfg: the discovery config (with .engineer) or the section
    train_cfg = experiment_train_config(settings.train, design, experiment.config)

Config shape (every field optional; the defaults are those of EngineerSettings):
    cfg.engineer.seeds = (0,)  .eval_tasks = ('piqa',)  .eval_limit = 100  .timeout_s = 3600.0  ...
    cfg.engineer.train = <a trainer config: base_config() with the scale's model/data/train fields>
                         (when absent, the discovery config's own model/data/train/mesh sections, if it has them)
    cfg.engineer.check = <gate settings used to re-check a Debugger's fix> (when absent: cfg.check, if any)
Kept free of JAX imports: the trainer's defaults are imported only when a config is resolved.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from aira_jax.discovery.records import Design, DesignKind

_SECTIONS = ('model', 'data', 'train', 'mesh')


class ConfigOverrideError(ValueError):
  """An experiment's config override names a field the trainer config does not have."""


@dataclasses.dataclass
class EngineerSettings:
  """How the Engineer trains and evaluates claimed experiments. `train` is the trainer config for the scale."""
  train: Any = None  # ml_collections.ConfigDict (base_config() with overrides); None: the trainer's defaults
  seeds: tuple[int, ...] = (0,)
  eval_tasks: tuple[str, ...] = ()  # harness tasks whose scores feed fitness; () = no harness evaluation
  eval_limit: int | float | None = 100  # docs per task (None: all)
  held_out_tasks: tuple[str, ...] = ()  # scored and reported, never used as fitness
  harness_data_dir: str = ''  # '' = the harness default ($AIRA_HARNESS_DATA or <repo>/../shared/data/harness)
  timeout_s: float = 3600.0  # hard limit per seed run (training; the first also covers start-up and compile)
  eval_timeout_s: float = 1800.0  # hard limit per harness evaluation
  first_step_timeout_s: float = 900.0  # the first step must finish this long after compiling (0: no limit)
  memory_mb: int = 32768  # the training process's resident memory limit (0: none)
  address_space_slack_mb: int = 8192  # CPU only: RLIMIT_AS = memory_mb + this (0: no RLIMIT_AS)
  lease_s: float = 600.0
  heartbeat_s: float = 30.0
  debug_attempts: int = 3  # Debugger calls per experiment
  workdir_root: str = 'runs/engineer'
  divergence_factor: float = 3.0  # loss above this x the best loss so far ... (<= 0: no divergence check)
  divergence_patience: int = 2  # ... for this many logged steps in a row
  check: Any = None  # GateSettings / mapping / ConfigDict for re-checking fixes (None: the gates' defaults)
  scale: str | None = None  # claim only experiments of this scale (None: any)
  max_attempts: int = 3  # claims of one experiment before it is failed as 'attempts'
  runtime_guard: bool = True  # the design-program runtime guard in the training child
  platform: str = ''  # JAX_PLATFORMS of the training child ('' inherits)
  resume: bool = True  # a re-claimed experiment resumes from the previous worker's checkpoints (shared disk)
  keep_checkpoints: bool = True  # False: delete a trained experiment's checkpoints once its result is recorded
  poll_s: float = 2.0  # idle wait between claims while other workers still hold work
  # A run that fails after Pallas kernels ran (NaN, divergence, a runtime error, a native crash) is trained once
  # more with those kernels set aside; if that run succeeds, the store records them as faulty on this device and
  # every worker's later runs there set them aside (kernel_faults).
  kernel_retry: bool = True

  def validate(self) -> 'EngineerSettings':
    if self.train is None:
      from aira_jax.train.config import base_config  # pylint: disable=import-outside-toplevel
      self.train = base_config()
    elif isinstance(self.train, Mapping) and not isinstance(self.train, ml_collections.ConfigDict):
      self.train = ml_collections.ConfigDict(dict(self.train))
    if not isinstance(self.train, ml_collections.ConfigDict):
      raise ValueError(f'engineer settings: train must be a trainer ConfigDict, got {type(self.train).__name__}')
    missing = [s for s in _SECTIONS if s not in self.train]
    if missing:
      raise ValueError(f'engineer settings: the train config lacks section(s) {missing}; start from '
                       'aira_jax.train.config.base_config()')
    self.seeds = _int_tuple(self.seeds, 'seeds')
    if not self.seeds or len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f'engineer settings: seeds must be distinct and non-empty, got {self.seeds}')
    self.eval_tasks = _str_tuple(self.eval_tasks, 'eval_tasks')
    self.held_out_tasks = _str_tuple(self.held_out_tasks, 'held_out_tasks')
    if set(self.eval_tasks) & set(self.held_out_tasks):
      raise ValueError(f'engineer settings: tasks both fitness and held out: '
                       f'{sorted(set(self.eval_tasks) & set(self.held_out_tasks))}')
    if self.eval_limit is not None and (isinstance(self.eval_limit, bool) or self.eval_limit <= 0):
      raise ValueError(f'engineer settings: eval_limit must be > 0 or None, got {self.eval_limit!r}')
    for name in ('timeout_s', 'eval_timeout_s', 'lease_s', 'heartbeat_s', 'poll_s'):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f'engineer settings: {name} must be a positive number, got {value!r}')
    if self.heartbeat_s * 2 > self.lease_s:
      raise ValueError(f'engineer settings: heartbeat_s ({self.heartbeat_s}) must be at most half of lease_s '
                       f'({self.lease_s}), or a slow heartbeat lets the lease run out under a live worker')
    if isinstance(self.first_step_timeout_s, bool) or not isinstance(self.first_step_timeout_s, (int, float)) \
        or self.first_step_timeout_s < 0:
      raise ValueError(f'engineer settings: first_step_timeout_s must be >= 0, got {self.first_step_timeout_s!r}')
    for name in ('memory_mb', 'address_space_slack_mb', 'debug_attempts'):
      if int(getattr(self, name)) < 0:
        raise ValueError(f'engineer settings: {name} must be >= 0, got {getattr(self, name)!r}')
    for name in ('max_attempts', 'divergence_patience'):
      if int(getattr(self, name)) < 1:
        raise ValueError(f'engineer settings: {name} must be >= 1, got {getattr(self, name)!r}')
    if not self.workdir_root:
      raise ValueError('engineer settings: workdir_root must be set')
    self.scale = self.scale or None
    return self


def _int_tuple(value: Any, name: str) -> tuple[int, ...]:
  if isinstance(value, int) and not isinstance(value, bool):
    return (value,)
  if isinstance(value, str):
    value = [v for v in value.split(',') if v.strip()]
  try:
    return tuple(int(v) for v in value)
  except (TypeError, ValueError):
    raise ValueError(f'engineer settings: {name} must be integers, got {value!r}') from None


def _str_tuple(value: Any, name: str) -> tuple[str, ...]:
  if value is None:
    return ()
  if isinstance(value, str):
    return tuple(v.strip() for v in value.split(',') if v.strip())
  if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
    raise ValueError(f'engineer settings: {name} must be a list of task names, got {value!r}')
  return tuple(value)


def _plain(value: Any) -> Any:
  return value.to_dict() if hasattr(value, 'to_dict') else value


def settings_from_config(cfg: Any) -> EngineerSettings:
  """EngineerSettings from a discovery config with an `engineer` section, or from that section itself."""
  if cfg is None:
    return EngineerSettings().validate()
  root, section = (cfg, cfg.engineer) if _has(cfg, 'engineer') else (None, cfg)
  fields = {f.name for f in dataclasses.fields(EngineerSettings)}
  keys = list(section.keys()) if hasattr(section, 'keys') else []
  unknown = sorted(set(keys) - fields)
  if unknown:
    raise ValueError(f"engineer config: unknown field(s) {unknown}; known: {', '.join(sorted(fields))}")
  values = {k: section[k] for k in keys}
  for key in ('seeds', 'eval_tasks', 'held_out_tasks'):
    if key in values and isinstance(values[key], list):
      values[key] = tuple(values[key])
  if values.get('train') is None and root is not None and all(_has(root, s) for s in ('model', 'train')):
    values['train'] = _trainer_part(root)
  if values.get('train') is not None:
    values['train'] = _with_defaults(values['train'])
  if values.get('check') is None and root is not None and _has(root, 'check'):
    values['check'] = root.check
  if values.get('check') is not None:
    values['check'] = _plain(values['check'])
  return EngineerSettings(**values).validate()


def _has(cfg: Any, key: str) -> bool:
  try:
    return key in cfg and cfg[key] is not None
  except TypeError:
    return False


def _trainer_part(root: Any) -> ml_collections.ConfigDict:
  out = ml_collections.ConfigDict()
  for key in root.keys():
    if key not in ('engineer', 'check'):
      out[key] = copy.deepcopy(root[key])
  return out


def _with_defaults(train: Any) -> ml_collections.ConfigDict:
  """The given trainer config over base_config(), so missing fields take the trainer's defaults."""
  from aira_jax.train.config import base_config  # pylint: disable=import-outside-toplevel
  merged = base_config()
  given = _plain(train)
  if not isinstance(given, Mapping):
    raise ValueError(f'engineer config: train must be a trainer config, got {type(train).__name__}')
  _merge(merged, given, 'train')
  return merged


def _merge(cfg: ml_collections.ConfigDict, values: Mapping[str, Any], where: str) -> None:
  with cfg.unlocked():
    for key, value in values.items():
      if isinstance(value, Mapping) and key in cfg and isinstance(cfg[key], ml_collections.ConfigDict):
        _merge(cfg[key], value, f'{where}.{key}')
      else:
        cfg[key] = copy.deepcopy(value)


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any], _prefix: str = '') -> None:
  """Applies an experiment's overrides ({'train': {'lr': 1e-3}} or {'train.lr': 1e-3}) to a trainer config.

  Unknown fields raise ConfigOverrideError naming them, except inside free-form maps (mixer_kwargs,
  primitive_kwargs, programs), whose keys are the design's own.
  """
  free_form = ('mixer_kwargs', 'primitive_kwargs', 'programs')
  for name, value in overrides.items():
    key = f'{_prefix}{name}'
    path = str(name).split('.')
    node = cfg
    for i, part in enumerate(path[:-1]):
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise ConfigOverrideError(f"experiment config override {key!r}: no section "
                                  f"{_prefix + '.'.join(path[:i + 1])!r}")
      node = node[part]
    leaf = path[-1]
    if leaf not in node:
      full = key.split('.')
      if len(full) >= 2 and full[-2] in free_form:
        with node.unlocked():
          node[leaf] = copy.deepcopy(value)
        continue
      raise ConfigOverrideError(f'experiment config override {key!r}: the trainer config has no such field '
                                f'(see aira_jax/train/config.py)')
    if isinstance(value, Mapping) and isinstance(node[leaf], ml_collections.ConfigDict):
      if leaf in free_form:
        with node.unlocked():
          node[leaf] = ml_collections.ConfigDict(dict(value))
      else:
        apply_overrides(node[leaf], dict(value), f'{key}.')
      continue
    try:
      with node.unlocked():
        node[leaf] = copy.deepcopy(value)
    except TypeError as e:
      raise ConfigOverrideError(f'experiment config override {key!r}: {e}') from None


def experiment_train_config(base: ml_collections.ConfigDict, design: Design,
                            overrides: Mapping[str, Any] | None = None, *,
                            source: str | None = None) -> ml_collections.ConfigDict:
  """The trainer config for one experiment: the scale's config, the design (or `source`, a newer version of its
  program) filled in, then the experiment's overrides."""
  cfg = copy.deepcopy(base)
  with cfg.model.unlocked():
    if design.kind == DesignKind.PROGRAM:
      cfg.model.program_source = design.source if source is None else source
      cfg.model.pattern = ''
    else:
      cfg.model.pattern = design.source
      cfg.model.program_source = ''
  apply_overrides(cfg, dict(overrides or {}))
  return cfg
