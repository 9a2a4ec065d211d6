"""Turns a finished training run (all seeds, their evaluations) into the experiment's Result record."""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from absl import logging

from aira_jax.discovery import failures as fl
from aira_jax.discovery.records import Result
from aira_jax.discovery.training_run import RunOutcome

# The harness metric that stands for a task's accuracy in fitness, in order of preference (lm-eval's habit:
# length-normalised accuracy where a task reports it).
ACCURACY_METRICS = ('acc_norm', 'acc')
_SUMMARY_KEYS = ('final_train_loss', 'final_val_loss', 'final_val_bpb', 'steps', 'tokens', 'wall_seconds',
                 'loop_seconds', 'tokens_per_sec', 'params', 'param_counts', 'flops_per_step', 'stop_reason',
                 'resumed_from_step', 'devices', 'device_kind', 'compile_seconds', 'ops')


def _mean(values: Sequence[float | None]) -> float | None:
  vals = [v for v in values if v is not None]
  if not vals or len(vals) != len(values):
    return None
  return float(statistics.fmean(vals))


def mean_curve(curves: Sequence[Sequence[tuple[int, float]]]) -> tuple[tuple[int, float], ...]:
  """The seeds' loss curves averaged at the steps all of them logged (a resumed run's repeats: last wins)."""
  per_seed = [dict(c) for c in curves if c]
  if not per_seed:
    return ()
  steps = sorted(set.intersection(*(set(c) for c in per_seed)))
  return tuple((s, float(statistics.fmean(c[s] for c in per_seed))) for s in steps)


def accuracy(metrics: dict[str, Any]) -> float | None:
  for name in ACCURACY_METRICS:
    value = fl.as_float(metrics.get(name))
    if value is not None:
      return value
  return None


def benchmark_scores(evals: Sequence[dict[str, Any]]) -> tuple[dict[str, float], dict[str, Any]]:
  """Per-task accuracy averaged over seeds (fitness tasks only) and the full per-seed harness metrics."""
  per_task: dict[str, list[float]] = {}
  no_accuracy: set[str] = set()
  for ev in evals:
    for task, metrics in (ev.get('fitness') or {}).items():
      acc = accuracy(metrics)
      if acc is None:
        no_accuracy.add(task)
      else:
        per_task.setdefault(task, []).append(acc)
  if no_accuracy:
    logging.info('tasks without an accuracy metric kept out of benchmark_scores (reported in meta): %s',
                 sorted(no_accuracy))
  scores = {t: float(statistics.fmean(v)) for t, v in per_task.items() if len(v) == len(evals)}
  return scores, {'no_accuracy_metric': sorted(no_accuracy)}


def build_result(outcome: RunOutcome, *, seeds: Sequence[int], extra_meta: dict[str, Any],
                 wall_time_s: float) -> Result:
  summaries = [outcome.summaries.get(s, {}) for s in seeds]
  val = [fl.as_float(s.get('final_val_loss')) for s in summaries]
  bpb = _mean([fl.as_float(s.get('final_val_bpb')) for s in summaries])
  throughput = []
  for seed, summary in zip(seeds, summaries, strict=True):
    tps = fl.as_float(summary.get('tokens_per_sec'))
    if not tps:  # a run resumed at its last step trained nothing now: use the rates it logged before
      logged = outcome.throughput.get(seed) or []
      tps = float(statistics.fmean(logged)) if logged else None
    throughput.append(tps)
  evals = [outcome.evals[s] for s in seeds if s in outcome.evals]
  scores, score_meta = benchmark_scores(evals)
  meta: dict[str, Any] = {
      **extra_meta,
      'summaries': {str(s): {k: summary.get(k) for k in _SUMMARY_KEYS if k in summary}
                    for s, summary in zip(seeds, summaries, strict=True)},
      'train_wall_s': round(outcome.wall_s, 2),
      'peak_rss_mb': round(outcome.peak_rss_mb, 1),
  }
  if evals:
    meta['harness'] = {str(s): outcome.evals[s].get('fitness', {}) for s in seeds if s in outcome.evals}
    meta['held_out'] = {str(s): outcome.evals[s].get('held_out', {}) for s in seeds if s in outcome.evals}
    skipped = {}
    for ev in evals:
      skipped.update(ev.get('skipped') or {})
    meta['eval_skipped'] = skipped
    meta.update(score_meta)
  return Result(
      loss_curve=mean_curve([outcome.curves.get(s, []) for s in seeds]),
      val_loss=_mean(val),
      bpb=bpb,
      benchmark_scores=scores,
      num_params=summaries[0].get('params'),
      tokens=summaries[0].get('tokens'),
      throughput=_mean(throughput),
      wall_time_s=wall_time_s,
      seeds=tuple(seeds),
      val_loss_per_seed=tuple(val) if all(v is not None for v in val) else (),
      meta=fl.jsonable(meta),
  )
