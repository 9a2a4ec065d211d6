"""Throughput, FLOPs/MFU and memory estimates, and the metric sinks (absl, JSONL, TensorBoard)."""
from __future__ import annotations

import json
import logging as std_logging
import math
import os
import resource
import sys
from typing import Any, Mapping

from absl import logging
import jax

# Dense bf16 peak FLOP/s per device, matched by lower-cased substring of device_kind (first match
# wins, so the more specific names come first).
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ('gh200', 989e12),
    ('h200', 989e12),
    ('h100', 989e12),
    ('h800', 989e12),
    ('b200', 2250e12),
    ('a100', 312e12),
    ('tpu v6 lite', 918e12),
    ('tpu v6e', 918e12),
    ('tpu v5 lite', 197e12),
    ('tpu v5e', 197e12),
    ('tpu v5p', 459e12),
    ('tpu v5', 459e12),
    ('tpu v4', 275e12),
)


class _QuietOrbax:
  """Drops Orbax's INFO chatter (dozens of lines per save) unless --verbosity >= 1."""

  def filter(self, record) -> bool:
    return (record.levelno > std_logging.INFO or 'orbax' not in record.pathname
            or logging.get_verbosity() >= 1)


def quiet_orbax_logs() -> None:
  # On the 'absl' logger itself (Orbax logs through absl), so it holds with or without app.run.
  logger = std_logging.getLogger('absl')
  if not any(isinstance(f, _QuietOrbax) for f in logger.filters):
    logger.addFilter(_QuietOrbax())


def peak_flops_per_device(device: jax.Device | None = None) -> float | None:
  """bf16 peak of `device` (default: the first), or None when unknown (e.g. CPU)."""
  device = device or jax.devices()[0]
  if device.platform == 'cpu':
    return None
  kind = device.device_kind.lower()
  for key, peak in PEAK_BF16_FLOPS:
    if key in kind:
      return peak
  return None


def analytic_flops_per_step(num_params: int, embedding_params: int, tokens: int, *,
                            num_layers: int, d_model: int, seq_len: int) -> float:
  """6·N·tokens (N without the input-embedding lookup) + causal-attention term 6·L·T·d·tokens.

  The attention term (PaLM appendix B, halved for causal masking) is exact only for softmax
  attention; for sub-quadratic mixers it overstates the work, which makes MFU conservative-high.
  """
  n = max(num_params - embedding_params, 0)
  return 6.0 * n * tokens + 6.0 * num_layers * seq_len * d_model * tokens


def compiled_flops(compiled: Any, num_devices: int) -> float | None:
  """FLOPs of one call of a compiled jit, summed over devices, or None if XLA does not say.

  XLA's cost analysis describes one device's partitioned program, hence the scaling by the device
  count. It counts a while loop's body once, so scans (grad accumulation, chunked kernels) are
  under-counted; the trainer falls back to the analytic count when this is far below it.
  """
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or 'flops' not in cost:
    return None
  flops = float(cost['flops'])
  if not math.isfinite(flops) or flops <= 0:
    return None
  return flops * num_devices


def peak_memory_bytes() -> tuple[int | None, str]:
  """Peak device memory of local device 0 (GPU/TPU), else the process max RSS (CPU)."""
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    stats = None
  if stats and 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), 'device_peak_bytes'
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(rss if sys.platform == 'darwin' else rss * 1024), 'host_max_rss_bytes'


def format_duration(seconds: float) -> str:
  if not math.isfinite(seconds) or seconds < 0:
    return '?'
  s = int(round(seconds))
  return f'{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}'


class MetricsWriter:
  """Writes scalars to absl logging, `<workdir>/metrics.jsonl` and TensorBoard (process 0 only)."""

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self._enabled = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if not self._enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
      except ImportError:
        logging.warning('tensorboardX is not installed; TensorBoard logging is off')

  def write(self, step: int, scalars: Mapping[str, Any], *, kind: str = 'train') -> None:
    if not self._enabled:
      return
    clean = {k: _to_py(v) for k, v in scalars.items()}
    logging.info('[%s] step %d: %s', kind, step,
                 ', '.join(f'{k}={_fmt(v)}' for k, v in clean.items()))
    self._jsonl.write(json.dumps({'kind': kind, 'step': step, **clean}) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in clean.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
          self._tb.add_scalar(f'{kind}/{k}', v, step)

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def _to_py(v: Any) -> Any:
  if hasattr(v, 'item'):
    v = v.item()
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)  # JSON has no NaN/inf
  return v


def _fmt(v: Any) -> str:
  if isinstance(v, float):
    return f'{v:.4g}'
  return str(v)


def step_flops(compiled: Any, setup: Any, model_cfg: Any, tc: Any, tokens_per_step: int) -> float:
  """XLA's count of the compiled step when it is credible, else 6·N·tokens + attention.

  Any training step does at least 6 FLOPs per matmul parameter per token, so an XLA count below
  that bound is an under-count: loop bodies counted once (scans over microbatches or chunks) or,
  on GPU, GEMMs lowered to library calls that the cost model does not see.
  """
  embed = 0 if model_cfg.get('tie_embeddings', False) else model_cfg.vocab_size * model_cfg.d_model
  analytic = analytic_flops_per_step(
      setup.num_params, embed, tokens_per_step, num_layers=model_cfg.num_layers,
      d_model=model_cfg.d_model, seq_len=tc.seq_len)
  lower_bound = 6.0 * max(setup.num_params - embed, 0) * tokens_per_step
  xla = compiled_flops(compiled, jax.device_count())
  if xla is None:
    logging.info('FLOPs/step %.3e (analytic 6ND + attention; no XLA cost analysis)', analytic)
    return analytic
  if xla < 0.95 * lower_bound:
    logging.info('FLOPs/step %.3e analytic (XLA cost analysis %.3e is below 6ND = %.3e, an '
                 'under-count)', analytic, xla, lower_bound)
    return analytic
  logging.info('FLOPs/step %.3e from XLA cost analysis (analytic %.3e)', xla, analytic)
  return xla


def progress_line(step: int, total: int | None, m: dict, dt: float, tc: Any, elapsed: float) -> str:
  """The trainer's progress line: step, loss, lr, tokens/s, step time and the ETA of the set budget."""
  eta = float('inf')
  if total is not None:
    eta = (total - step) * dt
  if tc.max_seconds > 0:
    eta = min(eta, tc.max_seconds - elapsed)
  of = f'/{total}' if total is not None else ''
  return (f'step {step}{of} | loss {m["loss"]:.4f} | lr {m["lr"]:.3e} | '
          f'{m["tokens_per_sec"]:,.0f} tok/s | {dt * 1e3:.1f} ms/step | '
          f'ETA {format_duration(eta)}')
