"""build_model: a model config -> LanguageModel, and count_params per component.

model_cfg fields (ml_collections.ConfigDict or a plain mapping; missing optional fields take the defaults of
`ModelSpec`): vocab_size, d_model, num_layers, num_heads, mlp_hidden (0 = auto: the multiple of 64 nearest
8/3 * d_model), design (a baseline name or a path to a .py design program), program_source (overrides design),
pattern (a composition string, overrides the standard [design, mlp] * num_layers stack), mixer_kwargs (for the
design mixer), primitive_kwargs ({primitive: kwargs} for pattern primitives), programs ({name: source} for
'design:<name>' primitives), tie_embeddings, norm_eps, init_std, remat.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
from absl import logging
from flax import nnx

from aira_jax.models import compose
from aira_jax.models.layers import SwiGLU
from aira_jax.models.lm import LanguageModel, SublayerSpec
from aira_jax.models.loader import BASELINES, baseline_source, load_program


def auto_mlp_hidden(d_model: int) -> int:
  """The multiple of 64 nearest to 8/3 * d_model (Llama's SwiGLU width keeps the 4x MLP's parameter count)."""
  return max(64, 64 * round(8 * d_model / 3 / 64))


def plain_config(value: Any) -> Any:
  """ConfigDict -> dict, recursively; other values unchanged."""
  if hasattr(value, 'to_dict'):
    return value.to_dict()
  if isinstance(value, Mapping):
    return {k: plain_config(v) for k, v in value.items()}
  return value


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A validated model config."""
  vocab_size: int
  d_model: int = 256
  num_layers: int = 8
  num_heads: int = 8
  mlp_hidden: int = 0
  design: str = 'attention'
  program_source: str | None = None
  pattern: Any = None
  mixer_kwargs: dict = dataclasses.field(default_factory=dict)
  primitive_kwargs: dict = dataclasses.field(default_factory=dict)
  programs: dict = dataclasses.field(default_factory=dict)
  tie_embeddings: bool = False
  norm_eps: float = 1e-6
  init_std: float = 0.02
  remat: bool = False

  @classmethod
  def from_config(cls, cfg: Any) -> 'ModelSpec':
    get = cfg.get if hasattr(cfg, 'get') else (lambda k, d=None: getattr(cfg, k, d))
    if get('vocab_size', None) is None:
      raise ValueError('model config needs vocab_size')
    values = {}
    for f in dataclasses.fields(cls):
      v = get(f.name, None)
      if v is not None:
        values[f.name] = plain_config(v)
    spec = cls(**values)
    spec.validate()
    return spec

  def validate(self) -> None:
    for name in ('vocab_size', 'd_model', 'num_heads'):
      v = getattr(self, name)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f'model config {name} must be a positive int, got {v!r}')
    if not isinstance(self.num_layers, int) or self.num_layers < (0 if self.pattern else 1):
      raise ValueError(f'model config num_layers must be a positive int, got {self.num_layers!r}')
    if self.d_model % self.num_heads:
      raise ValueError(f'd_model ({self.d_model}) is not divisible by num_heads ({self.num_heads})')
    if not isinstance(self.mlp_hidden, int) or self.mlp_hidden < 0:
      raise ValueError(f'mlp_hidden must be an int >= 0 (0 = auto), got {self.mlp_hidden!r}')
    if not self.init_std > 0 or not self.norm_eps > 0:
      raise ValueError(f'init_std and norm_eps must be > 0, got {self.init_std!r}, {self.norm_eps!r}')
    for name in ('mixer_kwargs', 'primitive_kwargs', 'programs'):
      if not isinstance(getattr(self, name), Mapping):
        raise ValueError(f'model config {name} must be a mapping, got {type(getattr(self, name)).__name__}')
    for prim, kw in self.primitive_kwargs.items():
      if not isinstance(kw, Mapping):
        raise ValueError(f"primitive_kwargs['{prim}'] must be a mapping, got {type(kw).__name__}")

  @property
  def hidden(self) -> int:
    return self.mlp_hidden or auto_mlp_hidden(self.d_model)


@functools.lru_cache(maxsize=None)
def _baseline_mixer(name: str) -> type:
  return load_program(baseline_source(name), name)


def _design_mixer(spec: ModelSpec) -> tuple[str, type]:
  """(kind, Mixer class) of the config's own design."""
  if spec.program_source:
    return 'design', load_program(spec.program_source, 'design')
  design = spec.design
  if design in BASELINES:
    return design, _baseline_mixer(design)
  if isinstance(design, str) and design.endswith('.py'):
    if not os.path.isfile(design):
      raise ValueError(f"design program file '{design}' does not exist")
    with open(design, encoding='utf-8') as f:
      source = f.read()
    stem = os.path.splitext(os.path.basename(design))[0]
    return f'design:{stem}', load_program(source, stem)
  raise ValueError(f"unknown design '{design}': expected one of {', '.join(BASELINES)} or a path to a .py file")


def _pattern(spec: ModelSpec) -> list[str]:
  if spec.pattern:
    return compose.parse_pattern(spec.pattern)
  return [compose.DESIGN, compose.MLP] * spec.num_layers


def sublayer_specs(spec: ModelSpec, programs: Mapping[str, str] | None = None) -> list[SublayerSpec]:
  """Resolves the config's pattern (or standard stack) into buildable sublayers; all errors raised here."""
  programs = {**spec.programs, **(programs or {})}
  names = _pattern(spec)
  for name in names:
    compose.check_primitive(name, programs)
  for prim in spec.primitive_kwargs:
    # Keys for primitives absent from this pattern are fine (a config may serve many patterns); typos are not.
    if prim not in compose.PRIMITIVES and not prim.startswith(compose.DESIGN_PREFIX):
      raise ValueError(f"primitive_kwargs names unknown primitive '{prim}'; expected one of "
                       f"{', '.join(compose.PRIMITIVES)} or '{compose.DESIGN_PREFIX}<name>'")
  # GPT-2 style: residual-branch outputs scaled by 1/sqrt(number of residual sublayers).
  out_std = spec.init_std / math.sqrt(len(names))
  context = {'init_std': spec.init_std, 'out_init_std': out_std, 'norm_eps': spec.norm_eps}
  loaded: dict[str, tuple[str, type, dict]] = {}

  def mixer(name: str) -> tuple[str, type, dict]:
    if name not in loaded:
      if name == compose.DESIGN:
        kind, cls = _design_mixer(spec)
        kwargs = dict(spec.mixer_kwargs)
      elif name.startswith(compose.DESIGN_PREFIX):
        key = name[len(compose.DESIGN_PREFIX):]
        kind, cls = name, load_program(programs[key], key)
        kwargs = dict(spec.primitive_kwargs.get(name, {}))
      else:
        baseline, defaults = compose.MIXER_PRIMITIVES[name]
        kind, cls = name, _baseline_mixer(baseline)
        kwargs = {**defaults, **spec.primitive_kwargs.get(name, {})}
      loaded[name] = (kind, cls, kwargs)
    return loaded[name]

  out = []
  for name in names:
    if name == compose.MLP:
      make = functools.partial(_make_mlp, spec.d_model, spec.hidden, spec.init_std, out_std)
      out.append(SublayerSpec(kind=compose.MLP, role='mlp', make=make))
    else:
      kind, cls, kwargs = mixer(name)
      make = functools.partial(compose.make_mixer, cls, kind, spec.d_model, spec.num_heads, kwargs, context)
      out.append(SublayerSpec(kind=kind, role='mixer', make=lambda rngs, make=make: make(rngs=rngs)))
  return out


def _make_mlp(d_model: int, hidden: int, init_std: float, out_std: float, rngs: nnx.Rngs) -> SwiGLU:
  return SwiGLU(d_model, hidden, rngs=rngs, init_std=init_std, out_init_std=out_std)


def build_model(model_cfg: Any, *, rngs: nnx.Rngs, programs: Mapping[str, str] | None = None) -> LanguageModel:
  """Builds the LanguageModel a config describes; float32 parameters carrying logical axis names.

  `programs` maps names to design-program source for 'design:<name>' pattern primitives (merged over
  model_cfg.programs). Raises ValueError for a bad config, ProgramError (a ValueError) for a bad program.
  """
  spec = ModelSpec.from_config(model_cfg)
  layers = sublayer_specs(spec, programs)
  # Parameters are created mesh-free even when a caller set eager sharding; the trainer places them.
  with nnx.use_eager_sharding(False):
    model = LanguageModel(spec.vocab_size, spec.d_model, layers, rngs=rngs, tie_embeddings=spec.tie_embeddings,
                          norm_eps=spec.norm_eps, init_std=spec.init_std, remat=spec.remat)
  logging.info('built LM: %d sublayers %s, d_model %d, vocab %d, %d params', len(layers),
               sorted({layer.kind for layer in layers}), spec.d_model, spec.vocab_size, count_params(model)['total'])
  return model


def _size(module: nnx.Module | None) -> int:
  if module is None:
    return 0
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def count_params(model: LanguageModel) -> dict[str, int]:
  """Parameter counts: 'embedding', 'head' (0 when tied), 'norms', 'mlp', 'mixer/<kind>' per mixer kind, and
  'total'; the components sum to 'total'. Works on abstract models (nnx.eval_shape) too."""
  counts: dict[str, int] = {'embedding': _size(model.embed), 'head': _size(model.head),
                            'norms': _size(model.final_norm), 'mlp': 0}
  for layer in model.layers:
    counts['norms'] += _size(layer.norm)
    key = 'mlp' if layer.role == 'mlp' else f'mixer/{layer.kind}'
    counts[key] = counts.get(key, 0) + _size(layer.inner)
  counts['total'] = _size(model)
  return counts
