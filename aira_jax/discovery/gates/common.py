"""What the gates share: the check context, the failure exception, pure mixer functions and error text."""
from __future__ import annotations

import dataclasses
import linecache
import traceback
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aira_jax.discovery.gates.config import GateSettings
from aira_jax.discovery.policy import DESIGN_FILENAME_PREFIX

MAX_MESSAGE_CHARS = 1200
# The check compiles many tiny programs that run for milliseconds: on CPU, XLA's LLVM optimisation costs more
# than it saves (the chunked delta rule's VJP compiles 3x faster at level 0). HLO passes, and with them
# cost_analysis/memory_analysis, are unaffected.
FAST_COMPILE_OPTIONS = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def jit(fn: Callable, settings: GateSettings, **kwargs) -> Callable:
  """jax.jit with the fast-compile options when settings.fast_compile and the backend is the CPU."""
  if settings.fast_compile and jax.default_backend() == 'cpu':
    kwargs['compiler_options'] = {**FAST_COMPILE_OPTIONS, **kwargs.get('compiler_options', {})}
  return jax.jit(fn, **kwargs)


class GateFailure(Exception):
  """A rejection: `reason` tells the agent what is wrong and what to change; `details` holds measurements."""

  def __init__(self, reason: str, **details: Any):
    super().__init__(reason)
    self.reason = reason
    self.details = details


@dataclasses.dataclass
class CheckContext:
  """State that flows from gate to gate within one check."""
  source: str
  name: str
  settings: GateSettings
  mixer_cls: type | None = None
  mixer: nnx.Module | None = None
  mlp_hidden: int | None = None  # the budget gate's choice; None keeps settings.mlp_hidden
  _forward: tuple | None = dataclasses.field(default=None, repr=False)

  def forward(self) -> tuple[Callable, Callable, Any]:
    """(apply, jitted apply, state) of the instantiated mixer; one jit so equal shapes compile once."""
    if self._forward is None:
      apply, state = mixer_apply(self.mixer)
      self._forward = (apply, jit(apply, self.settings), state)
    return self._forward

  def model_config(self, **overrides: Any) -> dict[str, Any]:
    mlp = self.mlp_hidden if self.mlp_hidden is not None else self.settings.mlp_hidden
    cfg = self.settings.model_config(program_source=self.source, mlp_hidden=mlp)
    cfg.update(overrides)
    return cfg


def mixer_apply(mixer: nnx.Module) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
  """(apply(state, x), state): the mixer as a pure function of its state, safe to jit, vmap and differentiate."""
  graphdef, state = nnx.split(mixer)

  def apply(state, x):
    return nnx.merge(graphdef, state)(x)

  return apply, state


def _floating(a) -> bool:
  return hasattr(a, 'dtype') and jnp.issubdtype(a.dtype, jnp.floating)


# Host-side (numpy) helpers: eager JAX ops would compile one tiny XLA program per distinct shape, which costs
# more than the gates themselves on CPU.

def cast_floating(tree: Any, dtype) -> Any:
  """Floating leaves cast to dtype (bf16 params as the trainer computes with them); others unchanged."""
  return jax.tree.map(lambda a: jnp.asarray(np.asarray(a).astype(dtype)) if _floating(a) else a, tree)


def perturb_floating(tree: Any, seed: int, scale: float = 0.05) -> Any:
  """Floating leaves moved by a random relative + absolute amount: wakes up zero-initialised parameters."""
  rng = np.random.default_rng(seed)

  def move(a):
    if not _floating(a):
      return a
    host = np.asarray(a, np.float32)
    n = rng.standard_normal(host.shape).astype(np.float32)
    return jnp.asarray((host * (1 + scale * n) + scale * 0.5 * n).astype(np.asarray(a).dtype))

  return jax.tree.map(move, tree)


def random_input(seed: int, batch: int, seq_len: int, d_model: int) -> np.ndarray:
  """A float32 N(0, 1) input [batch, seq_len, d_model] (numpy: no compilation)."""
  return np.random.default_rng(seed).standard_normal((batch, seq_len, d_model)).astype(np.float32)


def program_line(exc: BaseException) -> tuple[int | None, str | None]:
  """The deepest line of the design program in the exception's traceback, and its text."""
  found = (None, None)
  for frame in traceback.extract_tb(exc.__traceback__):
    if frame.filename.startswith(DESIGN_FILENAME_PREFIX):
      text = frame.line or linecache.getline(frame.filename, frame.lineno or 0).strip()
      found = (frame.lineno, text or None)
  return found


def describe_exception(exc: BaseException) -> str:
  """'TypeError: ... (line 42: `q = ...`)' trimmed for an agent to read."""
  message = f'{type(exc).__name__}: {exc}'.strip()
  if len(message) > MAX_MESSAGE_CHARS:
    message = message[:MAX_MESSAGE_CHARS] + ' ...'
  lineno, text = program_line(exc)
  if lineno:
    message += f' (program line {lineno}: `{text}`)' if text else f' (program line {lineno})'
  return message


def param_paths(state: Any) -> list[tuple[str, Any]]:
  """('layers/0/inner/q_proj/kernel', leaf) for every leaf of an nnx State."""
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    parts = []
    for p in path:
      key = getattr(p, 'key', getattr(p, 'idx', getattr(p, 'name', p)))
      parts.append(str(key))
    name = '/'.join(parts)
    if name.endswith('/value'):
      name = name[:-len('/value')]
    out.append((name, leaf))
  return out
