"""Settings of the Checker's gates, and the tiny default check config (`get_config`).

    python -m aira_jax.check --design=x.py                                     # these defaults
    python -m aira_jax.check --design=x.py --config=aira_jax/discovery/gates/config.py --config.seq_len=256

Kept free of JAX imports: the parent process (the discovery loop, the CLI) builds settings without loading JAX.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

OPS_IMPLS = ('auto', 'kernel', 'xla', 'reference')  # aira_jax.ops.dispatch.IMPLS (kept JAX-free here)
GATE_NAMES: tuple[str, ...] = ('static', 'load', 'forward', 'causality', 'batch', 'cost', 'gradients', 'budget',
                               'train')


@dataclasses.dataclass
class GateSettings:
  """Everything the gates need; the defaults are the tiny CPU check (~seconds per gate)."""
  # The model the design is checked in: a tiny LM of [Mixer, SwiGLU] * num_layers.
  d_model: int = 64
  num_heads: int = 4
  num_layers: int = 2
  vocab_size: int = 256
  mlp_hidden: int = 0  # 0 = auto (8/3 d_model, multiple of 64)
  mixer_kwargs: dict = dataclasses.field(default_factory=dict)
  seed: int = 0
  # forward / causality / batch: T > 64 so chunked kernels cross a chunk boundary.
  batch_size: int = 2
  seq_len: int = 128
  leak_tolerance: float = 1e-5  # |d out[t]/d x[s>t]| relative to the largest in-range dependence
  perturb_tolerance: float = 1e-4  # output change before a perturbed position, relative to max|out|
  batch_tolerance: float = 1e-4
  # cost: compile (never run) at these lengths, fit the exponent on the last pair.
  allow_quadratic: bool = False
  cost_seq_lens: tuple = (2048, 8192)
  cost_batch: int = 1
  max_cost_exponent: float = 1.5  # T log T fits well below; T^2 sits near 2
  max_quadratic_exponent: float = 2.4  # with allow_quadratic: still refuse cubic
  # budget: total LM parameters within +-tolerance of target_params (None: the reference baseline's count).
  target_params: int | None = None
  budget_reference: str = 'deltanet'
  budget_tolerance: float = 0.2
  auto_fit: bool = False
  # train: a few AdamW steps on one fixed batch; the loss must fall by min_loss_drop (relative).
  train_steps: int = 25
  train_batch: int = 4
  train_seq_len: int = 64
  train_lr: float = 3e-3
  min_loss_drop: float = 0.2
  # sandbox
  timeout_s: float = 600.0  # the whole check
  gate_timeout_s: float = 240.0  # any one gate
  memory_limit_mb: int = 4096  # resident memory of the child; killed above it
  address_space_slack_mb: int = 8192  # RLIMIT_AS = memory limit + slack on CPU (0: no RLIMIT_AS)
  platform: str = 'cpu'  # JAX_PLATFORMS of the child
  # aira_jax.ops path in the child ($AIRA_JAX_OPS_IMPL, when set, wins). 'xla': the design is judged with the XLA
  # ops, so a Pallas kernel that fails on this machine cannot reject it, and the cost gate's FLOP count sees every
  # op (XLA's cost analysis counts nothing inside a kernel's custom call). 'auto' lets the gates run the kernels.
  ops_impl: str = 'xla'
  xla_flags: str = ''
  fast_compile: bool = True  # CPU: compile at LLVM -O0 (the check's programs are tiny; compiling dominates)
  static_check: bool = True  # turn off only to test the runtime guard behind it
  stop_after: str | None = None  # run the gates up to and including this one

  def validate(self) -> 'GateSettings':
    def positive(*names):
      for n in names:
        v = getattr(self, n)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
          raise ValueError(f'check settings: {n} must be a positive number, got {v!r}')
    positive('d_model', 'num_heads', 'num_layers', 'vocab_size', 'batch_size', 'seq_len', 'cost_batch',
             'train_steps', 'train_batch', 'train_seq_len', 'train_lr', 'timeout_s', 'gate_timeout_s',
             'memory_limit_mb', 'leak_tolerance', 'perturb_tolerance', 'batch_tolerance', 'max_cost_exponent')
    if self.d_model % self.num_heads:
      raise ValueError(f'check settings: d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})')
    if self.seq_len < 8:
      raise ValueError(f'check settings: seq_len must be >= 8, got {self.seq_len}')
    if self.batch_size < 2:
      raise ValueError(f'check settings: batch_size must be >= 2 (the batch gate varies the other samples), '
                       f'got {self.batch_size}')
    lens = tuple(int(t) for t in self.cost_seq_lens)
    if len(lens) < 2 or any(b <= a for a, b in zip(lens, lens[1:])):
      raise ValueError(f'check settings: cost_seq_lens needs >= 2 increasing lengths, got {self.cost_seq_lens!r}')
    self.cost_seq_lens = lens
    if self.target_params is not None and (isinstance(self.target_params, bool) or int(self.target_params) < 1):
      raise ValueError(f'check settings: target_params must be a positive int or None, got {self.target_params!r}')
    if not 0 < self.budget_tolerance < 1 or not 0 <= self.min_loss_drop < 1:
      raise ValueError('check settings: budget_tolerance must be in (0, 1) and min_loss_drop in [0, 1)')
    if self.stop_after is not None and self.stop_after not in GATE_NAMES:
      raise ValueError(f"check settings: stop_after must be one of {', '.join(GATE_NAMES)}, got {self.stop_after!r}")
    if self.ops_impl not in OPS_IMPLS:
      raise ValueError(f"check settings: ops_impl must be one of {', '.join(OPS_IMPLS)}, got {self.ops_impl!r}")
    if not isinstance(self.mixer_kwargs, Mapping):
      raise ValueError(f'check settings: mixer_kwargs must be a mapping, got {type(self.mixer_kwargs).__name__}')
    self.mixer_kwargs = dict(self.mixer_kwargs)
    return self

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out['cost_seq_lens'] = list(self.cost_seq_lens)
    return out

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any]) -> 'GateSettings':
    """From a dict or ConfigDict; unknown keys are an error naming them."""
    if hasattr(values, 'to_dict'):
      values = values.to_dict()
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"check settings: unknown field(s) {unknown}; known: {', '.join(sorted(known))}")
    values = dict(values)
    if 'cost_seq_lens' in values:
      values['cost_seq_lens'] = tuple(values['cost_seq_lens'])
    return cls(**values).validate()

  def model_config(self, program_source: str | None = None, design: str | None = None,
                   mlp_hidden: int | None = None) -> dict[str, Any]:
    """The tiny LM's model config (for aira_jax.models.build_model)."""
    cfg = {'vocab_size': self.vocab_size, 'd_model': self.d_model, 'num_layers': self.num_layers,
           'num_heads': self.num_heads, 'mlp_hidden': self.mlp_hidden if mlp_hidden is None else mlp_hidden,
           'mixer_kwargs': dict(self.mixer_kwargs)}
    if program_source is not None:
      cfg['program_source'] = program_source
    if design is not None:
      cfg['design'] = design
    return cfg


def get_config() -> ml_collections.ConfigDict:
  """The default (tiny, CPU) check settings as a ConfigDict, overridable with --config.<field>=..."""
  values = GateSettings().to_dict()
  values['cost_seq_lens'] = tuple(values['cost_seq_lens'])  # tuples can be overridden on the command line
  # ConfigDict fields keep their type; None-valued fields need a placeholder type to be overridable.
  cfg = ml_collections.ConfigDict(values)
  cfg.target_params = ml_collections.FieldReference(None, field_type=int)
  cfg.stop_after = ml_collections.FieldReference(None, field_type=str)
  return cfg


def settings_from_config(cfg: Any) -> GateSettings:
  """GateSettings from a check ConfigDict, or from a project config that holds one under `.check`."""
  if cfg is None:
    return GateSettings().validate()
  if hasattr(cfg, 'get') and cfg.get('check', None) is not None:
    cfg = cfg.check
  if hasattr(cfg, 'get') and cfg.get('model', None) is not None and cfg.get('d_model', None) is None:
    raise ValueError('the config is a project config without a `check` section; pass a check config (see '
                     'aira_jax/discovery/gates/config.py) or add `config.check = ...` to it')
  return GateSettings.from_mapping(cfg)
