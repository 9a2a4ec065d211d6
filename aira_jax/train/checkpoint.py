"""Orbax checkpoints of the train state plus the data-iterator state and run metadata.

One checkpoint = two items: 'state' (params, optimizer state, step, model state; StandardSave)
and 'data' (JSON: every host's iterator state and the trainer's bookkeeping).
"""
from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from aira_jax.train.state import TrainState

def _is_key(x: Any) -> bool:
  return hasattr(x, 'dtype') and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree: Any) -> Any:
  # Typed PRNG keys are stored as their raw uint32 data (Orbax saves plain arrays).
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract_keys_to_data(tree: Any) -> Any:
  def f(x):
    if not _is_key(x):
      return x
    data = jax.eval_shape(jax.random.key_data, x)
    return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=x.sharding)
  return jax.tree.map(f, tree)


def _data_to_keys(tree: Any, abstract: Any) -> Any:
  return jax.tree.map(lambda x, a: jax.random.wrap_key_data(x) if _is_key(a) else x,
                      tree, abstract)


def gather_host_json(value: Any) -> list[Any]:
  """Every host's JSON-serialisable `value`, in process order (a collective on multi-host)."""
  if jax.process_count() == 1:
    return [value]
  raw = np.frombuffer(json.dumps(value).encode('utf-8'), dtype=np.uint8)
  lengths = multihost_utils.process_allgather(np.array([raw.size], np.int32))
  padded = np.zeros(int(np.max(lengths)), np.uint8)
  padded[:raw.size] = raw
  everyone = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(row[:int(n)]).decode('utf-8'))
          for row, n in zip(everyone, np.ravel(lengths))]


class Checkpointer:
  """CheckpointManager with save-every-N and keep-N policies under `<workdir>/checkpoints`."""

  def __init__(self, directory: str, *, save_every: int, keep: int):
    self.directory = os.path.abspath(directory)
    self.save_every = save_every
    # The interval is decided here (Orbax would also save the first step it sees); Orbax keeps
    # the keep-N policy and the atomic, async writes.
    options = ocp.CheckpointManagerOptions(max_to_keep=keep if keep > 0 else None, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=('state', 'data'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: TrainState, data: dict[str, Any], *,
           force: bool = False) -> bool:
    """Saves when the interval policy (or `force`) says so; returns whether it did.

    `data` is this host's JSON: the 'iterator' entry is gathered from all hosts.
    """
    due = force or (self.save_every > 0 and step % self.save_every == 0)
    if not due or step in self._manager.all_steps():
      return False
    data = dict(data)
    data['iterators'] = gather_host_json(data.pop('iterator', None))
    saved = self._manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(_keys_to_data(state)),
                                      data=ocp.args.JsonSave(data)),
        force=True)
    if saved:
      logging.info('Checkpoint: saving step %d to %s', step, self.directory)
    return saved

  def restore(self, step: int, abstract: TrainState) -> tuple[TrainState, dict[str, Any]]:
    """State placed on the shardings of `abstract`, and this host's data JSON."""
    restored = self._manager.restore(
        step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract_keys_to_data(abstract)),
            data=ocp.args.JsonRestore()))
    state = _data_to_keys(restored['state'], abstract)
    data = dict(restored['data'])
    iterators = data.pop('iterators', None) or [None]
    if len(iterators) != jax.process_count():
      raise ValueError(f'checkpoint step {step} was written by {len(iterators)} host(s); this run '
                       f'has {jax.process_count()}: the data-iterator states cannot be mapped')
    data['iterator'] = iterators[jax.process_index()]
    logging.info('Checkpoint: restored step %d from %s', step, self.directory)
    return state, data

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
