"""Evaluation: the LM benchmark harness (harness/), bits-per-byte on the data pipeline (bpb), and restoring
trained runs for evaluation (restore). `python -m aira_jax.evaluate --workdir=RUN --tasks=...` is the CLI."""
from aira_jax.evaluate.harness import (DEFAULT_TASKS, EvalConfig, HarnessResult, evaluate, evaluate_model,
                                       format_table, get_task, register_task, task_names, write_json)

__all__ = ['DEFAULT_TASKS', 'EvalConfig', 'HarnessResult', 'evaluate', 'evaluate_model', 'format_table',
           'get_task', 'register_task', 'task_names', 'write_json']
