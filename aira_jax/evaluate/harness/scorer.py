"""Batched, jit-compiled log-likelihood scoring of token rows, sharded over the mesh's batch axes.

Rows are sorted by length and grouped into length buckets (64 times 1, 1.5, 2, 3, 4, 6, ..., so padding
wastes under a third and few shapes compile); each bucket runs at a batch size that keeps
batch * length near `max_batch_tokens`. Rows are right-padded: the models are causal, so padding never
changes a scored position. Batches are dispatched without waiting, so host-side packing overlaps the device.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Sequence

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from aira_jax.evaluate.harness.requests import Row
from aira_jax.ops import fallback


@dataclasses.dataclass(frozen=True)
class ScorerConfig:
  max_length: int = 2048  # longest input; longer requests are left-truncated, long texts windowed
  max_batch_tokens: int = 0  # batch * padded length per step; 0 = auto from the [B, T, vocab] logits' size
  max_batch_size: int = 1024
  compute_dtype: str = 'float32'  # 'bfloat16' on accelerators
  bucket_multiple: int = 64
  pad_id: int = 0
  # A bucket's last, partial batch: 'full' pads it to the full batch (no new shape to compile: best where
  # compute is cheap and compiles are not, on accelerators); 'pow2' runs it at the next power of two (fewer
  # wasted rows, a few more shapes: best on CPU); 'auto' picks by platform.
  tail_batch: str = 'auto'


def bucket_lengths(max_length: int, multiple: int = 64) -> list[int]:
  """Padded lengths: multiple * {1, 1.5, 2, 3, 4, 6, ...} below max_length, then max_length itself."""
  out, base = [], multiple
  while base < max_length:
    out.append(base)
    mid = base * 3 // 2
    if mid < max_length:
      out.append(mid)
    base *= 2
  out.append(max_length)
  return sorted(set(out))


@dataclasses.dataclass
class ScoreStats:
  rows: int = 0
  batches: int = 0
  real_tokens: int = 0
  padded_tokens: int = 0
  shapes: set = dataclasses.field(default_factory=set)
  seconds: float = 0.0


def auto_batch_tokens(vocab_size: int | None, platform: str, max_length: int) -> int:
  """Tokens per batch so float32 logits and their temporaries (~2 copies) stay near 1 GiB on CPU and 8 GiB on
  an accelerator; between max_length and 65536."""
  if not vocab_size:
    return max(max_length, 16384)
  budget = (1 if platform == 'cpu' else 8) * 2**30
  return int(min(65536, max(max_length, budget // (8 * int(vocab_size)))))


def _cast(tree: Any, dtype: Any) -> Any:
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


class Scorer:
  """Scores rows with one model: `score(rows) -> (log-likelihood float64 [N], is_greedy bool [N])`."""

  def __init__(self, model: nnx.Module, config: ScorerConfig = ScorerConfig(), *, mesh: Mesh | None = None,
               watch: fallback.FirstRunWatch | None = None):
    self.config = config
    self.watch = watch  # told of each batch shape's compile and first run (a watcher can end a kernel that hangs)
    self.mesh = mesh if mesh is not None else _default_mesh()
    self.batch_axes = tuple(a for a in self.mesh.axis_names if a in ('data', 'fsdp')) or (self.mesh.axis_names[0],)
    self.shards = math.prod(self.mesh.shape[a] for a in self.batch_axes)
    self.batch_sharding = NamedSharding(self.mesh, P(self.batch_axes))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    self._graphdef = graphdef
    self._params, self._rest = self._place(params), self._place(rest)
    dtype = jnp.dtype(config.compute_dtype)
    self.stats = ScoreStats()
    platform = self.mesh.devices.flat[0].platform
    self.batch_tokens = config.max_batch_tokens or auto_batch_tokens(
        getattr(model, 'vocab_size', None), platform, config.max_length)
    if config.tail_batch not in ('auto', 'full', 'pow2'):
      raise ValueError(f"tail_batch must be 'auto', 'full' or 'pow2', got {config.tail_batch!r}")
    self.tail_batch = config.tail_batch if config.tail_batch != 'auto' else ('pow2' if platform == 'cpu' else 'full')

    def score_fn(params, rest, tokens, targets, mask):
      model = nnx.merge(graphdef, _cast(params, dtype), rest)
      logits = model(tokens).astype(jnp.float32)
      # log p(target) = logit[target] - logsumexp(logits); no [B, T, V] log-softmax is kept.
      picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
      token_ll = picked - jax.nn.logsumexp(logits, axis=-1)
      greedy = jnp.argmax(logits, axis=-1) == targets
      all_greedy = jnp.all(greedy | ~mask, axis=-1)
      # Per-token values go back to the host and are summed there in float64: a float32 sum over a
      # 2048-token window would drift by ~1e-3.
      return jnp.where(mask, token_ll, 0.0), all_greedy

    self._score_fn = score_fn
    self._steps: dict[tuple[int, ...], fallback.CompileOnFirstCall] = {}  # (batch, length) -> its scorer

  @property
  def ops(self) -> dict[str, Any]:
    """The backend kernels the scorer runs, and those set aside, over the shapes compiled so far."""
    return fallback.merge_ops(*(step.ops for step in self._steps.values()))

  def _scorer(self, placed: Sequence[jax.Array]) -> fallback.CompileOnFirstCall:
    """The scorer for this batch shape, compiled at its first batch; a Pallas kernel that fails to compile is set
    aside (XLA ops)."""
    key = tuple(placed[0].shape)
    if key not in self._steps:
      self._steps[key] = fallback.CompileOnFirstCall(
          lambda: jax.jit(self._score_fn, out_shardings=(self.batch_sharding, self.batch_sharding)), watch=self.watch)
    return self._steps[key]

  def _place(self, state: nnx.State) -> Any:
    """Params on the mesh by their logical axis names (replicated on a batch-only mesh)."""
    pure = nnx.to_pure_dict(state)
    try:
      from aira_jax.train import sharding as shd  # pylint: disable=g-import-not-at-top
      if set(shd.MESH_AXES) <= set(self.mesh.axis_names):
        specs = shd.state_specs(state, self.mesh)
        return jax.device_put(pure, shd.named(self.mesh, specs))
    except ImportError:
      pass
    return jax.device_put(pure, NamedSharding(self.mesh, P()))

  # ---- batching -------------------------------------------------------------------------------------
  def _batch_size(self, length: int, rows_left: int) -> int:
    c = self.config
    full = max(1, min(c.max_batch_size, self.batch_tokens // length))
    full = max(self.shards, full // self.shards * self.shards)
    if rows_left >= full or self.tail_batch == 'full':
      return full
    # A short tail runs at the next power of two (at most log2(full) extra shapes, little padding).
    small = max(self.shards, 1 << max(rows_left - 1, 0).bit_length())
    return min(full, -(-small // self.shards) * self.shards)

  def _plan(self, rows: Sequence[Row]) -> list[tuple[int, int, list[int]]]:
    """[(padded length, batch size, row indices)], longest rows first."""
    buckets = bucket_lengths(self.config.max_length, self.config.bucket_multiple)
    order = sorted(range(len(rows)), key=lambda i: -rows[i].length)
    by_bucket: dict[int, list[int]] = {}
    for i in order:
      n = rows[i].length
      if n > self.config.max_length:
        raise ValueError(f'row of {n} inputs exceeds max_length {self.config.max_length}')
      by_bucket.setdefault(next(b for b in buckets if b >= n), []).append(i)
    plan = []
    for length in sorted(by_bucket, reverse=True):
      idx = by_bucket[length]
      start = 0
      while start < len(idx):
        bs = self._batch_size(length, len(idx) - start)
        plan.append((length, bs, idx[start:start + bs]))
        start += bs
    return plan

  def _pack(self, rows: Sequence[Row], length: int, batch: int, idx: Sequence[int]):
    tokens = np.full((batch, length), self.config.pad_id, np.int32)
    targets = np.zeros((batch, length), np.int32)
    mask = np.zeros((batch, length), bool)
    for r, i in enumerate(idx):
      row = rows[i]
      n = row.length
      tokens[r, :n] = row.tokens[:-1]
      targets[r, :n] = row.tokens[1:]
      mask[r, n - row.num_scored:n] = True
    return tokens, targets, mask

  def score(self, rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
    """Sum of log p(target) over each row's scored positions (float64) and whether all were greedy."""
    t0 = time.time()
    ll = np.zeros(len(rows), np.float64)
    greedy = np.zeros(len(rows), bool)
    pending = []
    for length, batch, idx in self._plan(rows):
      arrays = self._pack(rows, length, batch, idx)
      placed = [jax.device_put(a, self.batch_sharding) for a in arrays]
      pending.append((idx, self._scorer(placed)(self._params, self._rest, *placed)))  # async dispatch
      self.stats.batches += 1
      self.stats.padded_tokens += length * batch
      self.stats.shapes.add((batch, length))
    for idx, (b_ll, b_greedy) in pending:
      b_ll, b_greedy = jax.device_get((b_ll, b_greedy))
      ll[idx] = np.asarray(b_ll, np.float64)[:len(idx)].sum(axis=1)
      greedy[idx] = np.asarray(b_greedy)[:len(idx)]
    self.stats.rows += len(rows)
    self.stats.real_tokens += sum(r.length for r in rows)
    self.stats.seconds += time.time() - t0
    logging.info('scored %d rows in %d batches (%d shapes so far), %.1f s', len(rows), len(pending),
                 len(self.stats.shapes), time.time() - t0)
    return ll, greedy


def _default_mesh() -> Mesh:
  """All devices on the batch axis, in the trainer's axis names when its module is importable."""
  devices = jax.devices()
  try:
    from aira_jax.train import sharding as shd  # pylint: disable=g-import-not-at-top
    return shd.make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1}, devices)
  except ImportError:
    return jax.make_mesh((len(devices),), ('data',), devices=devices)
