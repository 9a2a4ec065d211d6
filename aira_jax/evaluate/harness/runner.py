"""Runs tasks against one model: documents -> prompts -> requests -> one batched scoring pass -> metrics.

All tasks' requests are pooled and de-duplicated before scoring, so the scorer sees one long list it can
bucket well. `evaluate_model` is the in-process API (the discovery Engineer calls it); tasks listed as
held-out are scored and reported under 'held_out' and never under 'fitness'.
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Any, Sequence

from absl import logging
import jax

from aira_jax.evaluate.harness import data as data_lib
from aira_jax.evaluate.harness import requests as req_lib
from aira_jax.evaluate.harness.registry import get_task
from aira_jax.evaluate.harness.scorer import Scorer, ScorerConfig
from aira_jax.evaluate.harness.task import LOGLIKELIHOOD, ROLLING, Doc, Request, Task
from aira_jax.ops.fallback import FirstRunWatch

DEFAULT_TASKS = ('arc_easy', 'arc_challenge', 'boolq', 'hellaswag', 'piqa', 'social_iqa', 'winogrande',
                 'lambada_openai', 'wikitext')


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  limit: int | float | None = None  # N docs per task (a float < 1 is a fraction, as in lm-eval); None = all
  sample_seed: int | None = None  # None: the first N docs; an int: N docs drawn with this seed
  num_fewshot: int = 0
  fewshot_seed: int = 1234  # lm-eval's default fewshot_random_seed
  data_dir: str | None = None  # None: $AIRA_HARNESS_DATA or <repo>/../shared/data/harness
  data_source: str = 'auto'  # 'auto' | 'local' | 'hf'
  log_samples: bool = False  # keep per-document requests, log-likelihoods and metrics in the result


@dataclasses.dataclass
class TaskResult:
  name: str
  metrics: dict[str, float]
  stderr: dict[str, float | None]
  higher_is_better: dict[str, bool]
  num_docs: int
  num_requests: int
  samples: list[dict] | None = None

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    if out['samples'] is None:
      out.pop('samples')
    return out


@dataclasses.dataclass
class HarnessResult:
  tasks: dict[str, TaskResult]
  held_out_tasks: tuple[str, ...]
  timing: dict[str, float]
  config: dict[str, Any]

  @property
  def fitness(self) -> dict[str, dict[str, float]]:
    """Metrics of the tasks the discovery loop may use for fitness."""
    return {n: r.metrics for n, r in self.tasks.items() if n not in self.held_out_tasks}

  @property
  def held_out(self) -> dict[str, dict[str, float]]:
    """Metrics of held-out tasks: reported, never used for fitness."""
    return {n: r.metrics for n, r in self.tasks.items() if n in self.held_out_tasks}

  def to_dict(self) -> dict[str, Any]:
    return {'fitness': self.fitness, 'held_out': self.held_out,
            'tasks': {n: r.to_dict() for n, r in self.tasks.items()}, 'timing': self.timing,
            'config': self.config}


def select_indices(num_docs: int, limit: int | float | None, seed: int | None) -> list[int]:
  if limit is None:
    return list(range(num_docs))
  if limit <= 0:
    raise ValueError(f'limit must be > 0, got {limit}')
  k = int(math.ceil(num_docs * limit)) if isinstance(limit, float) and limit < 1.0 else int(limit)
  k = min(k, num_docs)
  if seed is None:
    return list(range(k))
  return sorted(random.Random(seed).sample(range(num_docs), k))


def fewshot_examples(pool: Sequence[Doc], doc: Doc, n: int, rnd: random.Random, exclude_doc: bool) -> list[Doc]:
  """lm-eval's default sampler: n docs drawn from the pool; drawing from the eval split, n + 1 are drawn
  and the evaluated doc removed."""
  if n == 0:
    return []
  if not exclude_doc:
    return rnd.sample(list(pool), n)
  picked = [x for x in rnd.sample(list(pool), n + 1) if x != doc][:n]
  if len(picked) < n:  # duplicates of the doc were drawn: resample without any copy of it
    picked = rnd.sample([x for x in pool if x != doc], n)
  return picked


@dataclasses.dataclass
class _Prepared:
  task: Task
  doc_ids: list[int]
  docs: list[Doc]
  requests: list[list[Request]]


_DOC_CACHE: dict[tuple, list[Doc]] = {}
_DOC_CACHE_SIZE = 64


def _load_docs(task: Task, cfg: EvalConfig) -> list[Doc]:
  """task.load_docs, cached per process: a discovery worker evaluates many models on the same documents.
  Keyed by the task class, data directory, source and the data file's size and mtime (edits invalidate)."""
  data_dir = Path(cfg.data_dir) if cfg.data_dir else data_lib.default_data_dir()
  stamp = None
  if cfg.data_source != 'hf':
    path = data_lib.find_file(data_dir, task.data_files)
    if path is not None:
      st = path.stat()
      stamp = (str(path.resolve()), st.st_size, st.st_mtime_ns)
  key = (type(task), task.name, str(data_dir.resolve()), cfg.data_source, stamp)
  if stamp is None or key not in _DOC_CACHE:
    docs = task.load_docs(data_dir, cfg.data_source)
    if stamp is None:
      return docs
    if len(_DOC_CACHE) >= _DOC_CACHE_SIZE:
      _DOC_CACHE.pop(next(iter(_DOC_CACHE)))
    _DOC_CACHE[key] = docs
  return _DOC_CACHE[key]


def _prepare(task: Task, cfg: EvalConfig) -> _Prepared:
  docs = _load_docs(task, cfg)
  ids = select_indices(len(docs), cfg.limit, cfg.sample_seed)
  pool = task.load_fewshot_docs(cfg.data_dir) if cfg.num_fewshot else None
  exclude = pool is None
  pool = docs if pool is None else pool
  if cfg.num_fewshot and len(pool) <= cfg.num_fewshot:
    raise ValueError(f'{task.name}: {cfg.num_fewshot}-shot needs more than {cfg.num_fewshot} pool documents')
  rnd = random.Random(cfg.fewshot_seed)
  selected, reqs = [], []
  for i in ids:
    doc = docs[i]
    examples = fewshot_examples(pool, doc, cfg.num_fewshot, rnd, exclude)
    ctx = task.fewshot_context(doc, examples)
    selected.append(doc)
    reqs.append(task.construct_requests(doc, ctx))
  return _Prepared(task, ids, selected, reqs)


def evaluate(scorer: Scorer, tokenizer, tasks: Sequence[str | Task], config: EvalConfig = EvalConfig(), *,
             held_out: Sequence[str] = (), prefix_token_id: int | None = None) -> HarnessResult:
  """Scores `tasks` (names or Task objects) plus the `held_out` ones with `scorer`'s model."""
  t0 = time.time()
  names = [t if isinstance(t, str) else t.name for t in tasks]
  all_tasks = list(tasks) + [h for h in held_out if h not in names]
  objs = [get_task(t) if isinstance(t, str) else t for t in all_tasks]
  if len({t.name for t in objs}) != len(objs):
    raise ValueError(f'a task is listed twice: {[t.name for t in objs]}')
  prefix = tokenizer.eos_id if prefix_token_id is None else prefix_token_id
  max_length = scorer.config.max_length
  prepared = [_prepare(t, config) for t in objs]
  t_prep = time.time()

  # Pool and de-duplicate requests across tasks.
  pair_slot: dict[tuple[str, str], int] = {}
  text_slot: dict[str, int] = {}
  for p in prepared:
    for doc_reqs in p.requests:
      for r in doc_reqs:
        if r.kind == LOGLIKELIHOOD:
          pair_slot.setdefault(r.args, len(pair_slot))
        elif r.kind == ROLLING:
          text_slot.setdefault(r.args[0], len(text_slot))
        else:
          raise ValueError(f'unsupported request kind {r.kind!r}')
  pair_rows = req_lib.loglikelihood_rows(tokenizer, list(pair_slot), max_length=max_length,
                                         prefix_token_id=prefix)
  roll_rows, roll_counts = req_lib.rolling_rows(tokenizer, list(text_slot), max_length=max_length,
                                                prefix_token_id=prefix)
  t_tok = time.time()
  ll, greedy = scorer.score(pair_rows + roll_rows)
  t_score = time.time()
  pair_results = list(zip(ll[:len(pair_rows)].tolist(), greedy[:len(pair_rows)].tolist(), strict=True))
  bounds = [0]
  for c in roll_counts:
    bounds.append(bounds[-1] + c)
  roll_ll = ll[len(pair_rows):]
  text_results = [float(roll_ll[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

  results = {}
  for p in prepared:
    per_doc: list[dict[str, Any]] = []
    samples = [] if config.log_samples else None
    for doc_id, doc, doc_reqs in zip(p.doc_ids, p.docs, p.requests, strict=True):
      res = [pair_results[pair_slot[r.args]] if r.kind == LOGLIKELIHOOD else text_results[text_slot[r.args[0]]]
             for r in doc_reqs]
      values = p.task.process_results(doc, res)
      per_doc.append(values)
      if samples is not None:
        samples.append({'doc_id': doc_id, 'arguments': [list(r.args) for r in doc_reqs], 'results': res,
                        **values})
    metrics, stderr = {}, {}
    for m in p.task.metrics:
      vals = [v[m] for v in per_doc]
      metrics[m] = p.task.aggregate(m, vals)
      stderr[m] = p.task.stderr(m, vals)
    results[p.task.name] = TaskResult(p.task.name, metrics, stderr, dict(p.task.higher_is_better),
                                      len(p.docs), sum(len(r) for r in p.requests), samples)
  t_end = time.time()
  num_docs = sum(len(p.docs) for p in prepared)
  timing = {'total_seconds': t_end - t0, 'prepare_seconds': t_prep - t0, 'tokenize_seconds': t_tok - t_prep,
            'score_seconds': t_score - t_tok, 'docs': num_docs, 'docs_per_second': num_docs / (t_end - t0),
            'requests': len(pair_rows) + len(text_slot), 'rows': len(pair_rows) + len(roll_rows),
            'scored_tokens': sum(r.length for r in pair_rows + roll_rows)}
  cfg = {**dataclasses.asdict(config), **dataclasses.asdict(scorer.config), 'batch_tokens': scorer.batch_tokens,
         'prefix_token_id': prefix,
         'devices': jax.device_count(), 'platform': jax.devices()[0].platform,
         'ops': getattr(scorer, 'ops', None)}
  logging.info('harness: %d docs over %d tasks in %.1f s (%.1f docs/s)', num_docs, len(prepared),
               timing['total_seconds'], timing['docs_per_second'])
  return HarnessResult(results, tuple(h for h in held_out), timing, cfg)


def evaluate_model(model, tokenizer, tasks: Sequence[str | Task] = DEFAULT_TASKS, limit: int | float | None = None,
                   *, held_out: Sequence[str] = (), num_fewshot: int = 0, sample_seed: int | None = None,
                   data_dir: str | None = None, data_source: str = 'auto', max_length: int = 2048,
                   compute_dtype: str = 'float32', max_batch_tokens: int = 0, mesh=None,
                   prefix_token_id: int | None = None, log_samples: bool = False,
                   watch: FirstRunWatch | None = None) -> HarnessResult:
  """Evaluates an nnx LanguageModel (tokens [B, T] -> logits [B, T, V]) on the harness tasks.

  Returns a HarnessResult: `.fitness` / `.held_out` map task -> {metric: value}; `.to_dict()` is the JSON form.
  `watch` is told when each batch shape's scorer is compiled and when its first batch is done.
  """
  scorer = Scorer(model, ScorerConfig(max_length=max_length, max_batch_tokens=max_batch_tokens,
                                      compute_dtype=compute_dtype, pad_id=max(int(tokenizer.pad_id), 0)),
                  mesh=mesh, watch=watch)
  config = EvalConfig(limit=limit, sample_seed=sample_seed, num_fewshot=num_fewshot, data_dir=data_dir,
                      data_source=data_source, log_samples=log_samples)
  return evaluate(scorer, tokenizer, tasks, config, held_out=held_out, prefix_token_id=prefix_token_id)
