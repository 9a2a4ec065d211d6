"""Device mesh, logical-axis rules, and shardings for params, optimizer state and batches.

Models name the *logical* axes of their parameters ('embed', 'mlp', ...) through
nnx.with_partitioning; one table here maps those to mesh axes, so no model ever names a device.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

from absl import logging
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import optax
from flax import nnx

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')

# logical axis name -> mesh axis, tuple of mesh axes, or None (replicated).
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ('batch', BATCH_AXES),
    ('vocab', 'tensor'),
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('kv', None),
    ('layers', None),
    ('length', None),
)


def resolve_mesh_shape(mesh_cfg: Any, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) sizes; at most one may be -1 (= the remaining devices)."""
  sizes = [int(getattr(mesh_cfg, a) if not isinstance(mesh_cfg, Mapping) else mesh_cfg[a])
           for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f'mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}')
  for a, s in zip(MESH_AXES, sizes):
    if s == 0 or s < -1:
      raise ValueError(f'mesh.{a} must be a positive size or -1, got {s}')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f'mesh {dict(zip(MESH_AXES, sizes))}: {num_devices} devices do not divide '
                       f'by the fixed axes (product {known})')
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f'mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, '
                     f'but {num_devices} are available')
  return tuple(sizes)  # type: ignore[return-value]


def make_mesh(mesh_cfg: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over `devices` (default: all devices of all hosts)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(mesh_cfg, len(devices))
  # Auto axes: shardings are given to jit (GSPMD propagates), models stay sharding-agnostic.
  mesh = jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)
  logging.info('Mesh %s over %d %s device(s)', dict(zip(MESH_AXES, shape)), len(devices),
               devices[0].platform)
  return mesh


def _axis_size(mesh: Mesh, axes: str | tuple[str, ...] | None) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh.shape[a] for a in axes)


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES, name: str = '') -> P:
  """PartitionSpec for an array whose dims carry `logical_axes`.

  A dim whose logical name is unknown, whose size does not divide the mesh axes, or whose mesh
  axis is already used by an earlier dim is replicated (with a log line for the first two cases).
  """
  if len(logical_axes) != len(shape):
    raise ValueError(f'{name or "param"}: {len(logical_axes)} logical axes {tuple(logical_axes)} '
                     f'for shape {tuple(shape)}')
  table = dict(rules)
  used: set[str] = set()
  spec: list[Any] = []
  for dim, (logical, size) in enumerate(zip(logical_axes, shape)):
    if logical is None:
      spec.append(None)
      continue
    if logical not in table:
      logging.log_first_n(logging.WARNING, 'No sharding rule for logical axis %r (%s); replicated',
                          20, logical, name)
      spec.append(None)
      continue
    axes = table[logical]
    axes = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    # Size-1 mesh axes are dropped so specs show only real splits.
    axes = tuple(a for a in axes if a not in used and mesh.shape[a] > 1)
    if not axes:
      spec.append(None)
      continue
    n = _axis_size(mesh, axes)
    if size % n:
      logging.info('%s dim %d (%s, size %d) does not divide mesh axes %s (size %d); replicated',
                   name or 'param', dim, logical, size, axes, n)
      spec.append(None)
      continue
    used.update(axes)
    spec.append(axes[0] if len(axes) == 1 else axes)
  return P(*spec)


def fallback_spec(shape: Sequence[int], mesh: Mesh) -> P:
  """For params without logical names: shard the largest dim that divides over 'fsdp'."""
  n = mesh.shape['fsdp']
  if n == 1 or not shape:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):  # largest first; stable on ties
    if shape[dim] % n == 0:
      spec = [None] * len(shape)
      spec[dim] = 'fsdp'
      return P(*spec)
  return P()


def _path_str(path: Sequence[Any]) -> str:
  return '/'.join(str(p) for p in path)


def _nest(flat: dict[tuple, Any]) -> dict:
  out: dict = {}
  for path, value in flat.items():
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = value
  return out


def state_specs(state: nnx.State, mesh: Mesh,
                rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES) -> dict:
  """Pure-dict tree of PartitionSpecs for an (abstract) nnx.State, same layout as to_pure_dict."""
  flat = {}
  for path, var in nnx.to_flat_state(state):
    value = var.get_value() if isinstance(var, nnx.Variable) else var
    shape = tuple(getattr(value, 'shape', ()))
    logical = var.get_metadata().get('out_sharding') if isinstance(var, nnx.Variable) else None
    if logical:
      flat[tuple(path)] = logical_to_spec(tuple(logical), shape, mesh, rules, _path_str(path))
    else:
      flat[tuple(path)] = fallback_spec(shape, mesh)
  return _nest(flat)


def named(mesh: Mesh, specs: Any) -> Any:
  """Maps a tree of PartitionSpecs to NamedShardings."""
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                      is_leaf=lambda x: isinstance(x, P))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def opt_state_shardings(tx: optax.GradientTransformation, abstract_params: Any,
                        param_shardings: Any, mesh: Mesh) -> Any:
  """Optimizer-state shardings: moments follow their params, everything else is replicated."""
  abstract_state = jax.eval_shape(tx.init, abstract_params)
  return optax.tree_utils.tree_map_params(
      tx, lambda _, s: s, abstract_state, param_shardings,
      transform_non_params=lambda _: replicated(mesh),
      is_leaf=lambda x: isinstance(x, NamedSharding))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches split on their leading dim over ('data', 'fsdp'); other dims replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def batch_shards(mesh: Mesh) -> int:
  return _axis_size(mesh, BATCH_AXES)


def make_global_batch(local: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict:
  """Global arrays from this host's rows (rows of host i = slice i of process_count)."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def host_slice(num_rows: int) -> slice:
  """The rows of a global batch that this host feeds."""
  pc, pi = jax.process_count(), jax.process_index()
  per = num_rows // pc
  return slice(pi * per, (pi + 1) * per)


def initialize_distributed(enabled: bool) -> None:
  """jax.distributed.initialize() (cluster auto-detection) when running on several hosts."""
  if not enabled or jax.distributed.is_initialized():  # once per process (train() may run often)
    return
  # JAX reads JAX_COORDINATOR_ADDRESS itself; the process count and id are read here too so a
  # multi-process run can be started by hand (e.g. several CPU processes on one machine).
  kwargs = {}
  if os.environ.get('JAX_NUM_PROCESSES'):
    kwargs['num_processes'] = int(os.environ['JAX_NUM_PROCESSES'])
  if os.environ.get('JAX_PROCESS_ID'):
    kwargs['process_id'] = int(os.environ['JAX_PROCESS_ID'])
  try:
    jax.distributed.initialize(**kwargs)
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(
        'multihost: jax.distributed.initialize() failed; it auto-detects SLURM, Open MPI, '
        'Kubernetes and Cloud TPU, or reads JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / '
        f'JAX_PROCESS_ID: {e}') from e
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
