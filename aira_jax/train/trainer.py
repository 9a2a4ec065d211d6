"""The training loop: budgets, schedule, eval, metrics, checkpoints and resume.

Budgets: training stops at the first of max_steps, max_tokens and max_seconds. max_seconds is the
wall clock of the training loop (steps, eval and checkpoints; not setup and compilation, whose
cost varies with the machine's load and would make budgets noisy), summed over resumed segments.
The schedule length is min(max_steps, ceil(max_tokens / tokens_per_step)) when either is set.
With only max_seconds, the first `estimate_after_steps` steps after compilation are timed and the
schedule length is set to the steps done plus (seconds left / mean seconds per step, eval and
checkpoints included); until then warmup/stable rates are used (they do not depend on the
length). The estimate is refined at each log step until the decay phase begins
(1 - decay_fraction of the schedule), then frozen so the decay is smooth. It is stored in
checkpoints, so a resumed run continues the same schedule.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

from absl import logging
import jax
import ml_collections
import numpy as np

from aira_jax.ops import fallback as kernel_fallback
from aira_jax.train import checkpoint as ckpt_lib
from aira_jax.train import compiled_steps
from aira_jax.train import metrics as metrics_lib
from aira_jax.train import prefetch as prefetch_lib
from aira_jax.train import schedules
from aira_jax.train import sharding as shd
from aira_jax.train import state as state_lib
from aira_jax.train import validation
from aira_jax.train.validate import validate_config

_PROVISIONAL_TOTAL = 1 << 30  # schedule length before a seconds-only budget is estimated


@dataclasses.dataclass
class Builders:
  """The model and data entry points (swappable in tests)."""
  build_model: Callable[..., Any]
  make_tokenizer: Callable[..., Any]
  make_train_iterator: Callable[..., Any]
  make_eval_batches: Callable[..., Any]
  count_params: Callable[..., dict[str, int]] | None = None


def default_builders() -> Builders:
  from aira_jax import data, models  # pylint: disable=g-import-not-at-top
  return Builders(build_model=models.build_model, make_tokenizer=data.make_tokenizer,
                  make_train_iterator=data.make_train_iterator,
                  make_eval_batches=data.make_eval_batches,
                  count_params=getattr(models, 'count_params', None))


class _LearningRates:
  """Host-side table of the schedule, so the loop never waits on the device for a rate."""

  def __init__(self, train_cfg: Any, total_steps: int | None):
    self.total_steps = total_steps
    length = total_steps or _PROVISIONAL_TOTAL
    rows = total_steps or max(train_cfg.warmup_steps, train_cfg.estimate_after_steps) + 64
    self._table = schedules.lr_table(schedules.make_schedule(train_cfg, length), rows)

  def __call__(self, step: int) -> np.float32:
    return self._table[min(step, len(self._table) - 1)]


SPM_FILE = 'tokenizer.model'


def _with_workdir_tokenizer(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """A sentencepiece run without spm_model_path keeps its tokenizer in the workdir (trained there once).

  The path goes into the run's config.json, so a resume, an evaluation or a gallery export finds it.
  """
  data = config.data
  if data.tokenizer != 'sentencepiece' or data.get('spm_model_path'):
    return config
  config = ml_collections.ConfigDict(config.to_dict())  # the caller's config stays as given
  config.data.spm_model_path = os.path.abspath(os.path.join(workdir, SPM_FILE))
  logging.info('data.spm_model_path not set: the sentencepiece model lives at %s', config.data.spm_model_path)
  return config


def train(config: ml_collections.ConfigDict, workdir: str, *, builders: Builders | None = None,
          exit_after_step: int | None = None) -> dict[str, Any]:
  """Trains per `config` in `workdir` (resuming from its checkpoints) and returns the summary.

  `exit_after_step` (debug): hard-exit the process (os._exit(42)) right after that step and its
  checkpoint have been written, to test kill-and-resume.
  """
  validate_config(config)
  metrics_lib.quiet_orbax_logs()
  config = _with_workdir_tokenizer(config, workdir)
  tc = config.train
  shd.initialize_distributed(bool(config.multihost))
  t_run = time.time()
  builders = builders or default_builders()
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:  # the run's full config, so evaluation and the gallery can rebuild the model
    with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
      f.write(config.to_json(indent=2))
  mesh = shd.make_mesh(config.mesh)
  pc, pi = jax.process_count(), jax.process_index()
  _check_batch(tc, mesh, pc)

  tokenizer = builders.make_tokenizer(config.data)
  model_cfg = _resolve_model_config(config.model, tokenizer)
  tx = schedules.make_optimizer(tc)
  setup = state_lib.setup_state(builders.build_model, model_cfg, config.seed, tx, mesh,
                                builders.count_params)
  batch_sh = shd.batch_sharding(mesh)

  iterator = builders.make_train_iterator(
      config.data, tokenizer, seq_len=tc.seq_len, batch_size=tc.global_batch // pc,
      seed=config.seed, shard_index=pi, shard_count=pc)
  eval_batches = []
  if tc.eval_batches > 0:
    eval_batches = builders.make_eval_batches(
        config.data, tokenizer, seq_len=tc.seq_len,
        batch_size=tc.eval_batch_size or tc.global_batch, num_batches=tc.eval_batches)
  unigram = validation.unigram_entropy(eval_batches)
  if unigram is not None:
    logging.info('Validation targets: unigram entropy %.4f nats/token (the loss of a context-free model)',
                 unigram)

  # Resume or start.
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                       save_every=tc.checkpoint_every, keep=tc.keep_checkpoints)
  tokens_per_step = tc.global_batch * tc.seq_len
  total_steps = schedules.total_steps_for(tc.max_steps, tc.max_tokens, tokens_per_step)
  seconds_only = total_steps is None
  elapsed_before = loop_before = 0.0
  latest = checkpointer.latest_step()
  if latest is not None:
    state, data = checkpointer.restore(latest, setup.abstract)
    iterator.set_state(data['iterator'])
    elapsed_before = float(data.get('elapsed_seconds', 0.0))
    loop_before = float(data.get('loop_seconds', 0.0))
    if total_steps is None and data.get('schedule_steps'):
      total_steps = int(data['schedule_steps'])
    logging.info('Resuming from step %d (%.1f s already spent)', latest, elapsed_before)
  else:
    state = setup.init_fn()
  lrs = _LearningRates(tc, total_steps)
  step = int(jax.device_get(state.step))
  start_step = step

  writer = metrics_lib.MetricsWriter(workdir, tensorboard=tc.tensorboard)
  try:
    step_fns = compiled_steps.compile_steps(tc, setup, tx, mesh, state, model_cfg, batch_sh, tokens_per_step,
                                            writer, current_step=lambda: step)
  except BaseException:
    writer.close()
    raise
  compiled, eval_step = step_fns.train, step_fns.eval
  peak = metrics_lib.peak_flops_per_device()
  num_devices = jax.device_count()
  progress_every = tc.progress_every or tc.log_every
  last_eval: dict[str, float] = {}
  t_loop = time.time()
  t_mark, step_mark, paused, paused_total = t_loop, step, 0.0, 0.0
  timed_from: tuple[float, int] | None = None
  rebuild_seconds = 0.0  # schedule-table rebuilds, kept out of the step-time estimate

  def elapsed() -> float:  # whole run, all segments
    return elapsed_before + time.time() - t_run

  def loop_elapsed() -> float:  # what max_seconds limits
    return loop_before + time.time() - t_loop

  def stop_reason() -> str | None:
    if total_steps is not None and step >= total_steps:
      return 'schedule from the time budget done' if seconds_only else 'steps/tokens budget'
    if tc.max_seconds > 0 and loop_elapsed() >= tc.max_seconds:
      return 'time budget'
    return None

  def data_json() -> dict[str, Any]:
    return {'iterator': data_state, 'elapsed_seconds': elapsed(), 'loop_seconds': loop_elapsed(),
            'schedule_steps': total_steps, 'tokens': step * tokens_per_step}

  step_metrics = None
  data_state = iterator.get_state()  # after the batches consumed so far (not those read ahead)
  batches = prefetch_lib.Prefetcher(
      iterator, lambda local: shd.make_global_batch(local, batch_sh), depth=tc.prefetch)
  last_saved = start_step if latest is not None else None
  eval_step_done = None
  try:
    while (reason := stop_reason()) is None:
      try:
        batch, data_state = next(batches)
      except StopIteration:
        reason = 'training data exhausted'
        break
      state, step_metrics = compiled(state, batch, lrs(step))
      step += 1
      if step == start_step + 1:  # the first step has run: a watcher can tell a hung step from a slow run
        jax.block_until_ready(step_metrics)
        writer.write(step, {'seconds_after_compile': time.time() - t_loop}, kind='first_step')

      if seconds_only:  # time the steps, then (re)fit the schedule length to the seconds left
        if timed_from is None:
          jax.block_until_ready(step_metrics)
          timed_from = (time.time(), step)
        elif ((total_steps is None and step >= timed_from[1] + tc.estimate_after_steps) or
              (total_steps is not None and step % tc.log_every == 0
               and step < total_steps * (1.0 - tc.decay_fraction))):
          jax.block_until_ready(step_metrics)
          per_step = (time.time() - timed_from[0] - rebuild_seconds) / (step - timed_from[1])
          estimate = step + int(max(tc.max_seconds - loop_elapsed(), 0.0) / per_step)
          if total_steps is None or abs(estimate - total_steps) > 0.02 * total_steps:
            t_rebuild = time.time()
            total_steps = estimate
            lrs = _LearningRates(tc, total_steps)
            rebuild_seconds += time.time() - t_rebuild
            logging.info('Time budget: %.4f s/step -> schedule of %d steps', per_step,
                         total_steps)

      if step % tc.log_every == 0 or step % progress_every == 0:
        m = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        now = time.time()
        # Eval and checkpoint time is kept out of the step time (and so out of tokens/s and MFU).
        dt = max(now - t_mark - paused, 1e-9) / max(step - step_mark, 1)
        t_mark, step_mark, paused = now, step, 0.0
        m.update(lr=float(lrs(step - 1)), step_time=dt, tokens_per_sec=tokens_per_step / dt,
                 tokens=step * tokens_per_step)
        if peak and step_fns.flops_per_step:
          m['mfu'] = step_fns.flops_per_step / dt / (peak * num_devices)
        mem, mem_key = metrics_lib.peak_memory_bytes()
        m[mem_key] = mem
        if step % tc.log_every == 0:
          writer.write(step, m)
        if step % progress_every == 0 and pi == 0:
          logging.info('%s', metrics_lib.progress_line(step, total_steps, m, dt, tc, loop_elapsed()))

      eval_due = bool(eval_batches) and tc.eval_every > 0 and step % tc.eval_every == 0
      if eval_due or (tc.checkpoint_every > 0 and step % tc.checkpoint_every == 0):
        jax.block_until_ready(step_metrics)  # so queued train steps are not counted as pause
      t_pause = time.time()
      if eval_due:
        last_eval = validation.evaluate_batches(eval_step, state, eval_batches, batch_sh)
        eval_step_done = step
        writer.write(step, last_eval, kind='eval')
      if checkpointer.save(step, state, data_json()):
        last_saved = step
      paused += time.time() - t_pause
      paused_total += time.time() - t_pause
      if exit_after_step is not None and step == exit_after_step:
        checkpointer.wait()
        logging.warning('Debug: hard exit after step %d (last checkpoint: %s)', step, last_saved)
        os._exit(42)  # pylint: disable=protected-access

    jax.block_until_ready(state)
    train_seconds = time.time() - t_loop - paused_total  # steps only: no eval/checkpoint time
    logging.info('Stopping at step %d: %s', step, reason)
    final_loss = None
    if step_metrics is not None:
      final_loss = float(jax.device_get(step_metrics)['loss'])
    if eval_batches and eval_step_done != step:
      last_eval = validation.evaluate_batches(eval_step, state, eval_batches, batch_sh)
      writer.write(step, last_eval, kind='eval')
    if step > start_step and last_saved != step:
      checkpointer.save(step, state, data_json(), force=True)
    checkpointer.wait()
  finally:
    batches.close()
    writer.close()
    checkpointer.close()

  summary = {
      'final_train_loss': final_loss,
      'final_val_loss': last_eval.get('val_loss'),
      'final_val_bpb': last_eval.get('val_bpb'),
      'val_unigram_entropy': unigram,
      'steps': step,
      'tokens': step * tokens_per_step,
      'wall_seconds': elapsed(),
      'loop_seconds': loop_elapsed(),
      'tokens_per_sec': (step - start_step) * tokens_per_step / max(train_seconds, 1e-9),
      'params': setup.num_params,
      'param_counts': setup.param_counts,
      'flops_per_step': step_fns.flops_per_step,
      'compile_seconds': step_fns.compile_seconds,
      'ops': kernel_fallback.merge_ops(step_fns.ops, eval_step.ops),
      'stop_reason': reason,
      'resumed_from_step': start_step or None,
      'devices': num_devices,
      'device_kind': jax.devices()[0].device_kind,
  }
  if pi == 0:
    with open(os.path.join(workdir, 'summary.json'), 'w', encoding='utf-8') as f:
      json.dump(summary, f, indent=2, default=str)
  logging.info('Summary: %s', summary)
  return summary


def _check_batch(tc: Any, mesh: Any, process_count: int) -> None:
  shards = shd.batch_shards(mesh)
  for name, n in (('data*fsdp mesh size', shards), ('process count', process_count)):
    if tc.global_batch % n:
      raise ValueError(f'train.global_batch={tc.global_batch} must divide by the {name} ({n})')
  if tc.global_batch % (tc.grad_accum * shards):
    raise ValueError(f'train.global_batch={tc.global_batch} must divide by grad_accum * '
                     f'data*fsdp = {tc.grad_accum} * {shards}')
  eval_bs = tc.eval_batch_size or tc.global_batch
  if tc.eval_batches > 0 and (eval_bs % shards or eval_bs % process_count):
    raise ValueError(f'eval batch size {eval_bs} must divide by data*fsdp ({shards}) and the '
                     f'process count ({process_count})')


def _resolve_model_config(model_cfg: Any, tokenizer: Any) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(model_cfg.to_dict())
  if cfg.vocab_size <= 0:
    cfg.vocab_size = int(tokenizer.vocab_size)
  elif cfg.vocab_size < tokenizer.vocab_size:
    raise ValueError(f'model.vocab_size={cfg.vocab_size} is smaller than the tokenizer '
                     f'vocabulary ({tokenizer.vocab_size})')
  return cfg
