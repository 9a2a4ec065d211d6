"""Train state: fp32 master params, optimizer state and the model's other state, placed on a mesh.

The model is split once into a static graphdef and pure dicts of arrays (`nnx.to_pure_dict`
layout), which jit, optax and Orbax handle as plain pytrees; `nnx.merge(graphdef, params, rest)`
rebuilds the module inside the step.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from absl import logging
import flax
from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import optax

from aira_jax.train import sharding as shd

BuildModel = Callable[..., nnx.Module]


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer updates done
  params: Any  # pure dict of float32 master weights
  opt_state: Any  # optax state (moments shaped like params)
  rest: Any  # pure dict of the model's non-Param state (rng counters, buffers); often empty


@dataclasses.dataclass
class StateSetup:
  """What is known about the state before any array exists."""
  graphdef: nnx.GraphDef
  abstract: TrainState  # ShapeDtypeStruct leaves carrying their shardings
  shardings: TrainState  # NamedSharding leaves
  init_fn: Callable[[], TrainState]  # jitted; creates the state already sharded
  num_params: int
  param_counts: dict[str, int]


def to_float32(tree: Any) -> Any:
  return jax.tree.map(
      lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def cast_floating(tree: Any, dtype: Any) -> Any:
  """Casts floating leaves to `dtype` (the compute copy of the fp32 master weights)."""
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _build(build_model: BuildModel, model_cfg: Any, seed: int) -> nnx.Module:
  # No eager sharding: the model is built without a mesh; placement comes from jit out_shardings.
  with nnx.use_eager_sharding(False):
    return build_model(model_cfg, rngs=nnx.Rngs(seed))


def _split_pure(model: nnx.Module) -> tuple[nnx.GraphDef, Any, Any, nnx.State, nnx.State]:
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest), params, rest


def setup_state(build_model: BuildModel, model_cfg: Any, seed: int,
                tx: optax.GradientTransformation, mesh: Mesh,
                count_params: Callable[[nnx.Module], dict[str, int]] | None = None) -> StateSetup:
  """Traces the model abstractly and derives every shape and sharding of the train state."""
  abstract_model = nnx.eval_shape(lambda: _build(build_model, model_cfg, seed))
  graphdef, _, _, params_state, _ = _split_pure(abstract_model)

  def init() -> TrainState:
    model = _build(build_model, model_cfg, seed)
    _, params, rest, _, _ = _split_pure(model)
    params = to_float32(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rest=rest)

  shapes = jax.eval_shape(init)
  param_sh = shd.named(mesh, shd.state_specs(params_state, mesh))
  opt_sh = shd.opt_state_shardings(tx, shapes.params, param_sh, mesh)
  shardings = TrainState(step=shd.replicated(mesh), params=param_sh, opt_state=opt_sh,
                         rest=jax.tree.map(lambda _: shd.replicated(mesh), shapes.rest))
  init_fn = jax.jit(init, out_shardings=shardings)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          shapes, shardings)
  abs_params = shapes.params

  num_params = sum(int(x.size) for x in jax.tree.leaves(abs_params))
  param_counts = {'total': num_params}
  if count_params is not None:
    try:
      param_counts = {k: int(v) for k, v in count_params(abstract_model).items()}
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('count_params failed on the abstract model (%s); using the total only', e)
  logging.info('Model: %s parameters (%s)', f'{num_params:,}', param_counts)
  for path, sharding in jax.tree_util.tree_flatten_with_path(param_sh)[0]:
    logging.vlog(1, 'param %s -> %s', jax.tree_util.keystr(path), sharding.spec)
  return StateSetup(graphdef=graphdef, abstract=abstract, shardings=shardings, init_fn=init_fn,
                    num_params=num_params, param_counts=param_counts)

