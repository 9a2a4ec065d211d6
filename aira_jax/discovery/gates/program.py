"""Gates 1-2: the static policy, then loading the program and instantiating its Mixer and a tiny LM."""
from __future__ import annotations

import math
from typing import Any

import jax
from flax import nnx

from aira_jax.discovery.gates.common import CheckContext, GateFailure, describe_exception, program_line
from aira_jax.discovery.policy import check_source, policy_reason
from aira_jax.models import ProgramError, build_model, count_params, load_program
from aira_jax.models import compose

CONTRACT = ('class Mixer(nnx.Module) with __init__(self, d_model, num_heads, *, rngs, **kwargs) and '
            '__call__(self, x) mapping [batch, time, d_model] to the same shape')


def static_gate(ctx: CheckContext) -> dict[str, Any]:
  """Gate 1: imports, builtins and attribute escapes, from the source text alone."""
  if not ctx.settings.static_check:
    return {'skipped': True}
  violations = check_source(ctx.source)
  if violations:
    raise GateFailure(policy_reason(violations), violations=[str(v) for v in violations])
  return {'violations': 0}


def mixer_context(settings) -> dict[str, Any]:
  """The context kwargs the LM builder passes to a mixer (same formula as aira_jax.models.build)."""
  init_std = 0.02
  return {'init_std': init_std, 'out_init_std': init_std / math.sqrt(2 * settings.num_layers), 'norm_eps': 1e-6}


def _param_count(module: nnx.Module) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def load_gate(ctx: CheckContext) -> dict[str, Any]:
  """Gate 2: compile the program, construct its Mixer, and build the tiny LM around it."""
  s = ctx.settings
  try:
    ctx.mixer_cls = load_program(ctx.source, ctx.name)
  except ProgramError as e:
    raise GateFailure(f'{e}. A design program must define {CONTRACT}.', line=e.lineno) from e
  call = f'Mixer(d_model={s.d_model}, num_heads={s.num_heads}, rngs=nnx.Rngs({s.seed})'
  call += ''.join(f', {k}={v!r}' for k, v in s.mixer_kwargs.items()) + ')'
  try:
    ctx.mixer = compose.make_mixer(ctx.mixer_cls, 'design', s.d_model, s.num_heads, s.mixer_kwargs,
                                   mixer_context(s), rngs=nnx.Rngs(s.seed))
  except Exception as e:  # anything the constructor raises is the program's
    raise GateFailure(f'{call} failed: {describe_exception(e)}. The constructor must work for any d_model '
                      f'divisible by num_heads and accept extra keyword arguments (**kwargs).',
                      line=program_line(e)[0]) from e
  if not isinstance(ctx.mixer, nnx.Module):
    raise GateFailure(f'{call} returned {type(ctx.mixer).__name__}, not an nnx.Module')
  try:
    model = build_model(ctx.model_config(), rngs=nnx.Rngs(s.seed))
  except Exception as e:
    raise GateFailure(f'building the tiny LM (d_model {s.d_model}, {s.num_layers} layers) around the Mixer failed: '
                      f'{describe_exception(e)}', line=program_line(e)[0]) from e
  return {'mixer_params': _param_count(ctx.mixer), 'lm_params': count_params(model)['total']}
