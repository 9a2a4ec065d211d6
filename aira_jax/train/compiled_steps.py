"""Compiling the train and evaluation steps before the loop, and telling a watcher what they run.

The train step is compiled once up front: its cost analysis gives FLOPs per step, and compile time stays out of
throughput. A Pallas kernel that fails to compile, or fails its self-test against the XLA op (check_kernel_ops;
with check_kernels the whole model's check too), is set aside and the step runs the XLA ops
(aira_jax.ops.fallback). The evaluation step is compiled at the first validation (its batch shape is known then).

Both announce themselves in metrics.jsonl, so a watcher (the Engineer's parent process) knows which kernels ran
if the process dies or hangs, and can tell a kernel that hangs from a slow compile:
  train step   'kernel_check' (step_fn train, before the self-test runs kernels), 'compile' (seconds, FLOPs,
               ops); the trainer writes 'first_step' once the first step has run
  eval step    'kernel_check' (step_fn eval), 'eval_compile', 'first_eval' once its first batch is done
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp

from aira_jax.ops import fallback as kernel_fallback
from aira_jax.train import metrics as metrics_lib
from aira_jax.train import steps as steps_lib


@dataclasses.dataclass
class CompiledSteps:
  train: Any                                  # the compiled train step (state, batch, lr) -> (state, metrics)
  eval: kernel_fallback.CompileOnFirstCall    # (params, rest, batch) -> sums; compiled at its first call
  ops: dict[str, Any]                         # the train step's ops record (kernels, set aside, self-test)
  compile_seconds: float
  flops_per_step: float


def compile_steps(tc: Any, setup: Any, tx: Any, mesh: Any, state: Any, model_cfg: Any, batch_sh: Any,
                  tokens_per_step: int, writer: metrics_lib.MetricsWriter,
                  current_step: Callable[[], int]) -> CompiledSteps:
  """Compiles the train step (writing its records at `current_step()`) and prepares the evaluation step."""
  compute_dtype = jnp.dtype(tc.compute_dtype)
  t0 = time.time()
  _, compiled, ops_info = kernel_fallback.compile_checked(
      lambda: steps_lib.make_train_step(setup, tx, mesh, compute_dtype=compute_dtype, grad_accum=tc.grad_accum),
      lambda step: step.lower(setup.abstract, {'tokens': jax.ShapeDtypeStruct(
          (tc.global_batch, tc.seq_len + 1), jnp.int32, sharding=batch_sh)},
          jax.ShapeDtypeStruct((), jnp.float32)).compile(),
      _model_check(tc, setup, state, model_cfg, batch_sh, compute_dtype), self_test=tc.check_kernel_ops,
      on_self_test=lambda kernels: writer.write(current_step(), {'step_fn': 'train', 'ops': {'kernels': kernels}},
                                                kind='kernel_check'))
  compile_seconds = time.time() - t0
  logging.info('Compiled train_step in %.1f s', compile_seconds)
  flops_per_step = metrics_lib.step_flops(compiled, setup, model_cfg, tc, tokens_per_step)
  if ops_info['kernels']:  # a kernel is a custom call: XLA's cost analysis counts nothing inside it
    logging.info("XLA's cost analysis leaves out the work inside the Pallas kernel(s) %s: where its count is "
                 'used, MFU is a lower bound', ', '.join(ops_info['kernels']))
  writer.write(current_step(), {'compile_seconds': compile_seconds, 'flops_per_step': flops_per_step,
                                'ops': ops_info}, kind='compile')
  # The evaluation step's forward may run kernels (or kernel variants) the train step does not.
  eval_step = kernel_fallback.CompileOnFirstCall(
      lambda: steps_lib.make_eval_step(setup, mesh, compute_dtype=compute_dtype), self_test=tc.check_kernel_ops,
      watch=kernel_fallback.FirstRunWatch(
          self_test=lambda kernels: writer.write(current_step(), {'step_fn': 'eval', 'ops': {'kernels': kernels}},
                                                 kind='kernel_check'),
          compiled=lambda ops, seconds: writer.write(current_step(), {'compile_seconds': seconds, 'ops': ops},
                                                     kind='eval_compile'),
          first_run=lambda seconds: writer.write(current_step(), {'seconds': seconds}, kind='first_eval')))
  return CompiledSteps(train=compiled, eval=eval_step, ops=ops_info, compile_seconds=compile_seconds,
                       flops_per_step=flops_per_step)


def _model_check(tc: Any, setup: Any, state: Any, model_cfg: Any, batch_sh: Any,
                 compute_dtype: Any) -> Callable[[], dict[str, Any]] | None:
  """train.check_kernels: one forward+backward on random tokens, Pallas kernels vs XLA ops (single host)."""
  if not tc.check_kernels:
    return None
  if jax.process_count() > 1:
    logging.info('check_kernels: skipped on a multi-host run')
    return None
  shape = (tc.global_batch // tc.grad_accum, tc.seq_len + 1)
  precision = 'float32' if compute_dtype == jnp.float32 else 'low'
  return lambda: kernel_fallback.compare_with_xla(
      lambda: steps_lib.make_loss_and_grad(setup.graphdef, compute_dtype=compute_dtype),
      (state.params, state.rest, kernel_fallback.random_tokens(shape, model_cfg.vocab_size, batch_sh)),
      precision=precision)
