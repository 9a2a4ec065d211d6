"""lm-eval driving a project model: the reference for parity tests and the baseline of the speed benchmark.

`JaxLM` is an lm-eval `LM` (TemplateLM) over any project model: lm-eval's own tokenisation split, truncation
and rolling windows, and a plain jitted forward: one request per call by default (batch 1, lm-eval's default
batch size), or with batch_size > 1 the way lm-eval's HFLM batches (requests sorted longest first, cut into
batches, each padded to its longest). Inputs are right-padded to a fixed or power-of-two length, which a causal
model cannot see. It shares no scoring code with the harness port.

`write_lm_eval_tasks` makes lm-eval's own task YAMLs read local JSON-lines files: one small YAML per task that
`include`s the installed lm-eval YAML and overrides only where the data comes from, so prompts, choices,
preprocessing and metrics are lm-eval's. Needs `pip install lm-eval` (no torch needed for these parts).
"""
from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import Any, Iterable, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import lm_eval
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
import numpy as np

from aira_jax.evaluate.harness.tasks import wikitext as wikitext_task

# Our task name -> (lm-eval YAML under lm_eval/tasks, the split lm-eval evaluates).
LM_EVAL_TASKS: dict[str, tuple[str, str]] = {
    'arc_easy': ('arc/arc_easy.yaml', 'test'),
    'arc_challenge': ('arc/arc_challenge.yaml', 'test'),
    'boolq': ('super_glue/boolq/default.yaml', 'validation'),
    'hellaswag': ('hellaswag/hellaswag.yaml', 'validation'),
    'piqa': ('piqa/piqa.yaml', 'validation'),
    'social_iqa': ('siqa/siqa.yaml', 'validation'),
    'winogrande': ('winogrande/default.yaml', 'validation'),
    'lambada_openai': ('lambada/lambada_openai.yaml', 'test'),
    'wikitext': ('wikitext/wikitext.yaml', 'test'),
    'openbookqa': ('openbookqa/openbookqa.yaml', 'test'),
}
LM_EVAL_PREFIX = 'aira_'


class JaxLM(TemplateLM):
  """lm-eval LM over a project model (tokens [B, T] -> logits [B, T, V]); batch_size requests per forward."""

  def __init__(self, model: nnx.Module, tokenizer, *, max_length: int = 2048, pad_to: str = 'max_length',
               compute_dtype: str = 'float32', prefix_token_id: int | None = None, batch_size: int = 1):
    super().__init__()
    if pad_to not in ('max_length', 'pow2'):
      raise ValueError(f"pad_to must be 'max_length' or 'pow2', got {pad_to!r}")
    if int(batch_size) < 1:
      raise ValueError(f'batch_size must be at least 1, got {batch_size}')
    self.batch_size = int(batch_size)
    self.tok = tokenizer
    self._max_length = int(max_length)
    self._pad_to = pad_to
    self._prefix = tokenizer.eos_id if prefix_token_id is None else int(prefix_token_id)
    graphdef, state = nnx.split(model)
    dtype = jnp.dtype(compute_dtype)
    self._state = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                               state)

    def forward(state, tokens, targets):  # [B, L] each -> per-position target log-probs and greedy tokens
      logits = nnx.merge(graphdef, state)(tokens).astype(jnp.float32)
      logp = jax.nn.log_softmax(logits, axis=-1)
      return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0], jnp.argmax(logits, axis=-1)

    self._forward = jax.jit(forward)
    self.forward_calls = 0

  @property
  def eot_token_id(self) -> int:
    return self.tok.eos_id

  @property
  def prefix_token_id(self) -> int:
    return self._prefix

  @property
  def max_length(self) -> int:
    return self._max_length

  def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
    del add_special_tokens, kwargs  # project tokenizers never add specials
    return list(self.tok.encode(string))

  def _padded(self, n: int) -> int:
    if self._pad_to == 'max_length':
      return self._max_length
    return min(self._max_length, max(16, 1 << (n - 1).bit_length()))

  def _window(self, context: Sequence[int], continuation: Sequence[int]) -> tuple[list[int], int]:
    """lm-eval's HFLM input window: (context + continuation)[-(max_length + 1):], and the continuation length."""
    if not context or not continuation or len(continuation) > self._max_length:
      # lm-eval's HFLM asserts the same: a continuation must fit in one forward pass.
      raise ValueError(f'cannot score a continuation of {len(continuation)} tokens after {len(context)} context '
                       f'tokens with max_length {self._max_length}')
    return (list(context) + list(continuation))[-(self._max_length + 1):], len(continuation)

  def score_batch(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[tuple[float, bool]]:
    """Scores (context, continuation) token pairs in one forward: rows right-padded to the longest one's padded
    length, and (batch_size > 1) the batch padded with empty rows to batch_size, so few shapes compile."""
    windows = [self._window(c, x) for c, x in pairs]
    length = self._padded(max(len(seq) - 1 for seq, _ in windows))
    rows = max(len(windows), self.batch_size)
    tokens = np.zeros((rows, length), np.int32)
    targets = np.zeros((rows, length), np.int32)
    for i, (seq, _) in enumerate(windows):
      tokens[i, :len(seq) - 1] = seq[:-1]
      targets[i, :len(seq) - 1] = seq[1:]
    logp, argmax = jax.device_get(self._forward(self._state, tokens, targets))
    self.forward_calls += 1
    out = []
    for i, (seq, n_cont) in enumerate(windows):
      sl = slice(len(seq) - 1 - n_cont, len(seq) - 1)
      out.append((float(np.sum(logp[i, sl].astype(np.float64))), bool(np.all(argmax[i, sl] == targets[i, sl]))))
    return out

  def score_tokens(self, context: Sequence[int], continuation: Sequence[int]) -> tuple[float, bool]:
    """lm-eval's HFLM scoring of one (context, continuation) token pair."""
    return self.score_batch([(context, continuation)])[0]

  def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
    del disable_tqdm, kwargs
    requests = list(requests)
    # HFLM's order: longest (context + continuation) first, ties by the tokens; results go back in request order.
    order = sorted(range(len(requests)), key=lambda i: (-len(requests[i][1] + requests[i][2]),
                                                       tuple(requests[i][1] + requests[i][2])))
    out: list[Any] = [None] * len(requests)
    for start in range(0, len(order), self.batch_size):
      batch = order[start:start + self.batch_size]
      for i, result in zip(batch, self.score_batch([(requests[i][1], requests[i][2]) for i in batch])):
        if requests[i][0] is not None:
          self.cache_hook.add_partial('loglikelihood', requests[i][0], result)
        out[i] = result
    return out

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    out = []
    for (text,) in [req.args for req in requests]:
      windows = map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
          token_list=self.tok_encode(text), prefix_token=self._prefix, max_seq_len=self._max_length,
          context_len=1))
      out.append(sum(ll for ll, _ in self._loglikelihood_tokens([(None, c, x) for c, x in windows])))
    return out

  def generate_until(self, requests, disable_tqdm: bool = False):
    raise NotImplementedError('JaxLM scores log-likelihoods only')


# ---- lm-eval task configs over local files -------------------------------------------------------------
def to_lm_eval_records(task: str, records: Iterable[dict]) -> list[dict]:
  """Rows in the shared data's forms -> the Hugging Face rows lm-eval's task reads (others pass through)."""
  out = []
  for i, r in enumerate(records):
    r = dict(r)
    if task in ('arc_easy', 'arc_challenge') and 'query' in r:
      labels = list(string.ascii_uppercase[:len(r['choices'])])
      q = r['query']
      if not (q.startswith('Question: ') and q.endswith('\nAnswer:')):
        raise ValueError(f'{task} record {i}: query is not "Question: ...\\nAnswer:"')
      r = {'id': r.get('id', str(i)), 'question': q[len('Question: '):-len('\nAnswer:')],
           'choices': {'text': list(r['choices']), 'label': labels}, 'answerKey': labels[r['gold']]}
    elif task == 'boolq' and 'label' not in r:
      r = {'question': r['question'], 'passage': r['passage'], 'idx': i, 'label': int(r['answer'])}
    elif task == 'lambada_openai' and 'text' not in r:
      r = {'text': r['context'] + ' ' + r['continuation']}
    out.append(r)
  return out


def wikitext_pages(raw_text: str) -> list[dict]:
  """The raw WikiText file as lm-eval's document-level rows ({'page': ...})."""
  return [{'page': p} for p in wikitext_task.split_pages(raw_text.replace('\r\n', '\n'))]


def write_jsonl(rows: Iterable[dict], path: str | os.PathLike) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    for r in rows:
      f.write(json.dumps(r) + '\n')
  return path


def write_lm_eval_tasks(out_dir: str | os.PathLike, data_files: dict[str, str | os.PathLike], *,
                        cache_dir: str | os.PathLike | None = None) -> dict[str, str]:
  """One YAML per task in out_dir, each lm-eval's own task reading `data_files[task]` (JSON lines in lm-eval's
  Hugging Face format) as its evaluation split. Returns {our name: lm-eval task name}."""
  tasks_root = Path(lm_eval.__file__).parent / 'tasks'
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  cache_dir = Path(cache_dir) if cache_dir else out_dir / 'hf_cache'
  names = {}
  for task, path in data_files.items():
    if task not in LM_EVAL_TASKS:
      raise ValueError(f'no lm-eval mapping for task {task}; known: {", ".join(LM_EVAL_TASKS)}')
    yaml_rel, split = LM_EVAL_TASKS[task]
    name = LM_EVAL_PREFIX + task
    lines = [
        f'include: {tasks_root / yaml_rel}',
        f'task: {name}',
        'tag: []',
        'dataset_path: json',
        'dataset_name: null',
        'dataset_kwargs:',
        '  data_files:',
        f'    {split}: {json.dumps(str(Path(path).resolve()))}',
        f'  cache_dir: {json.dumps(str(cache_dir))}',
        'training_split: null',
        # The one split is both validation and test split (lm-eval evaluates the test split when it has
        # one) and the few-shot pool; with few-shot split == test split lm-eval removes the evaluated doc
        # from its examples, as the port does when it draws examples from the evaluation docs.
        f'validation_split: {split}',
        f'test_split: {split}',
        f'fewshot_split: {split}',
    ]
    (out_dir / f'{name}.yaml').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    names[task] = name
  return names


def run_lm_eval(lm: TemplateLM, task_dir: str | os.PathLike, names: dict[str, str], *,
                limit: int | float | None = None, samples: dict[str, list[int]] | None = None,
                num_fewshot: int | None = None) -> dict[str, dict[str, Any]]:
  """simple_evaluate over the tasks `write_lm_eval_tasks` made; {our name: {'metrics', 'samples'}}."""
  from lm_eval import simple_evaluate  # pylint: disable=g-import-not-at-top
  from lm_eval.tasks import TaskManager  # pylint: disable=g-import-not-at-top
  tm = TaskManager(include_path=str(task_dir), include_defaults=False)
  lm_samples = {names[k]: v for k, v in samples.items()} if samples else None
  out = simple_evaluate(model=lm, tasks=list(names.values()), task_manager=tm, limit=limit, samples=lm_samples,
                        num_fewshot=num_fewshot, log_samples=True, bootstrap_iters=0)
  results = {}
  for ours, theirs in names.items():
    metrics = {k.split(',')[0]: v for k, v in out['results'][theirs].items()
               if ',' in k and '_stderr' not in k and isinstance(v, (int, float))}
    results[ours] = {'metrics': metrics, 'samples': out['samples'][theirs]}
  return results


def prepare_lm_eval_data(tasks: Sequence[str], data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                         max_records: int | None = None) -> dict[str, Path]:
  """The port's local task files (any supported form) rewritten as lm-eval rows in out_dir/<task>.jsonl."""
  from aira_jax.evaluate.harness import data as data_lib  # pylint: disable=g-import-not-at-top
  from aira_jax.evaluate.harness import get_task  # pylint: disable=g-import-not-at-top
  files = {}
  for name in tasks:
    task = get_task(name)
    path, _ = data_lib.locate(name, Path(data_dir), task.data_files, None, 'local')
    if name == 'wikitext' and path.name in wikitext_task.RAW_FILES:
      rows = wikitext_pages(data_lib.read_text(path))
    else:
      rows = to_lm_eval_records(name, [r.data for r in data_lib.read_jsonl(path)])
    files[name] = write_jsonl(rows[:max_records] if max_records else rows, Path(out_dir) / f'{name}.jsonl')
  return files


def compare(ref: dict[str, dict[str, Any]], port) -> dict[str, dict[str, Any]]:
  """Per task: prompt, log-likelihood, greedy and per-document metric agreement of lm-eval (`run_lm_eval`
  output) and the port (a HarnessResult made with log_samples=True), and both systems' metrics."""
  out = {}
  for task, r in ref.items():
    p = port.tasks[task]
    theirs = sorted(r['samples'], key=lambda s: s['doc_id'])
    stats = {'docs': len(theirs), 'requests': 0, 'prompt_mismatches': 0, 'max_abs_ll_diff': 0.0,
             'max_rel_ll_diff': 0.0, 'greedy_mismatches': 0, 'doc_metric_mismatches': {}}
    if [s['doc_id'] for s in theirs] != [s['doc_id'] for s in p.samples]:
      raise ValueError(f'{task}: the two systems scored different documents')
    for a, b in zip(theirs, p.samples, strict=True):
      if [list(x) for x in a['arguments']] != b['arguments']:
        stats['prompt_mismatches'] += 1
      for ra, pb in zip(a['filtered_resps'], b['results'], strict=False):
        stats['requests'] += 1
        la, lb = (ra[0], pb[0]) if isinstance(ra, (list, tuple)) else (ra, pb)
        diff = abs(float(la) - float(lb))
        stats['max_abs_ll_diff'] = max(stats['max_abs_ll_diff'], diff)
        stats['max_rel_ll_diff'] = max(stats['max_rel_ll_diff'], diff / max(abs(float(la)), 1e-12))
        if isinstance(ra, (list, tuple)) and bool(ra[1]) != bool(pb[1]):
          stats['greedy_mismatches'] += 1
      for m in ('acc', 'acc_norm'):
        if m in p.metrics and a.get(m) != b.get(m):
          stats['doc_metric_mismatches'][m] = stats['doc_metric_mismatches'].get(m, 0) + 1
    stats['metrics'] = {m: {'lm_eval': r['metrics'].get(m), 'port': v} for m, v in p.metrics.items()}
    out[task] = stats
  return out
