"""A JAX port of the LM benchmark harness (lm-eval task formats and metrics, batched jit scoring).

    from aira_jax.evaluate.harness import evaluate_model
    result = evaluate_model(model, tokenizer, ['arc_easy', 'hellaswag'], limit=500, held_out=['wikitext'])
    result.fitness, result.held_out, result.to_dict()
"""
from aira_jax.evaluate.harness.data import DataError, HFDataset, default_data_dir
from aira_jax.evaluate.harness.registry import get_task, load_task_module, register_task, task_names
from aira_jax.evaluate.harness.report import format_table, write_json
from aira_jax.evaluate.harness.requests import Row, encode_pair, rolling_windows
from aira_jax.evaluate.harness.runner import (DEFAULT_TASKS, EvalConfig, HarnessResult, TaskResult, evaluate,
                                              evaluate_model, select_indices)
from aira_jax.evaluate.harness.scorer import Scorer, ScorerConfig, bucket_lengths
from aira_jax.evaluate.harness.task import (LoglikelihoodTask, MultipleChoiceTask, Request,
                                            RollingLoglikelihoodTask, Task)

__all__ = [
    'DEFAULT_TASKS', 'DataError', 'EvalConfig', 'HFDataset', 'HarnessResult', 'LoglikelihoodTask',
    'MultipleChoiceTask', 'Request', 'RollingLoglikelihoodTask', 'Row', 'Scorer', 'ScorerConfig', 'Task',
    'TaskResult', 'bucket_lengths', 'default_data_dir', 'encode_pair', 'evaluate', 'evaluate_model',
    'format_table', 'get_task', 'load_task_module', 'register_task', 'rolling_windows', 'select_indices',
    'task_names', 'write_json',
]
