"""Task base classes that follow lm-eval's ConfigurableTask semantics for the three scored output types.

A task says where its data is and how a document becomes a prompt (doc_to_text / doc_to_choice /
doc_to_target, as in lm-eval's YAML); the base classes build the requests, the per-document metrics and the
aggregation exactly as lm-eval does, so a task ported from a YAML file is a few lines (see tasks/*.py).

  MultipleChoiceTask   one (context, delimiter + choice) log-likelihood per choice; acc, acc_norm (log-likelihood
                       divided by the choice's character length). doc_to_text returning an int marks lm-eval's
                       "multiple input" form (WinoGrande's partial scoring): the choices are contexts and the
                       shared target is the continuation.
  LoglikelihoodTask    one (context, target) request; perplexity = exp(-mean ll) and acc = greedy match.
  RollingLoglikelihoodTask
                       the whole target text scored in rolling windows; word/byte perplexity, bits per byte.
"""
from __future__ import annotations

import abc
import dataclasses
import re
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from aira_jax.evaluate.harness import data as data_lib
from aira_jax.evaluate.harness import metrics as metrics_lib

Doc = dict[str, Any]
LOGLIKELIHOOD = 'loglikelihood'
ROLLING = 'loglikelihood_rolling'
MULTIPLE_CHOICE = 'multiple_choice'


@dataclasses.dataclass(frozen=True)
class Request:
  """What the model is asked: LOGLIKELIHOOD args (context, continuation); ROLLING args (text,)."""
  kind: str
  args: tuple[str, ...]


class Task(abc.ABC):
  """One benchmark. Subclass one of the three output-type classes below, not this one."""

  name: ClassVar[str] = ''
  output_type: ClassVar[str] = ''
  data_files: ClassVar[tuple[str, ...]] = ()  # candidate file names in the data directory, first found wins
  hf: ClassVar[data_lib.HFDataset | None] = None  # lm-eval's own dataset, used when no local file exists
  fewshot_files: ClassVar[tuple[str, ...]] = ()  # a training split for few-shot examples; () = the eval docs
  metrics: ClassVar[tuple[str, ...]] = ()
  aggregations: ClassVar[dict[str, str]] = {}  # metric -> name in metrics.AGGREGATIONS
  higher_is_better: ClassVar[dict[str, bool]] = {}
  target_delimiter: ClassVar[str] = ' '
  fewshot_delimiter: ClassVar[str] = '\n\n'

  # ---- data -----------------------------------------------------------------------------------------
  def parse_record(self, record: Doc) -> Doc:
    """One raw record (local file or HF row) -> the document the prompt functions read.

    Raise KeyError / ValueError / TypeError for a malformed record; the loader adds the file and line.
    """
    return record

  def check_doc(self, doc: Doc) -> None:
    """Validates a parsed document (raises ValueError); the default renders its prompt once."""
    self.doc_to_text(doc)
    self.doc_to_target(doc)

  def load_docs(self, data_dir: Path | str | None = None, source: str = 'auto') -> list[Doc]:
    """The evaluation documents, in file order."""
    data_dir = Path(data_dir) if data_dir else data_lib.default_data_dir()
    path, hf = data_lib.locate(self.name, data_dir, self.data_files, self.hf, source)
    with data_lib.fallback_note(self.name, data_dir, self.data_files, path is None and source == 'auto'):
      return self._parse_all(data_lib.iter_records(path, hf), path or hf)

  def load_fewshot_docs(self, data_dir: Path | str | None = None) -> list[Doc] | None:
    """Few-shot pool from `fewshot_files` if the task names one and it exists; None = use the eval docs."""
    if not self.fewshot_files:
      return None
    data_dir = Path(data_dir) if data_dir else data_lib.default_data_dir()
    path = data_lib.find_file(data_dir, self.fewshot_files)
    if path is None:
      return None
    return self._parse_all(data_lib.read_jsonl(path), path)

  def _parse_all(self, records, origin) -> list[Doc]:
    docs = []
    for rec in records:
      try:
        doc = self.parse_record(rec.data)
        self.check_doc(doc)
      except (KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
        detail = f'missing field {e}' if isinstance(e, KeyError) else f'{type(e).__name__}: {e}'
        raise data_lib.DataError(f'{rec.where}: bad {self.name} record ({detail})') from e
      docs.append(doc)
    if not docs:
      raise data_lib.DataError(f'{origin}: no {self.name} records')
    return docs

  # ---- prompts (lm-eval's doc_to_* fields) ----------------------------------------------------------
  @abc.abstractmethod
  def doc_to_text(self, doc: Doc) -> str | int: ...

  @abc.abstractmethod
  def doc_to_target(self, doc: Doc) -> str | int: ...

  def doc_to_choice(self, doc: Doc) -> list[str] | None:
    del doc
    return None

  def fewshot_context(self, doc: Doc, examples: Sequence[Doc] = ()) -> str | list[str]:
    """lm-eval's plain-text prompt: each example as text + target_delimiter + answer + fewshot_delimiter,
    then the document's text (for multiple-input tasks, one context per choice)."""
    prefix = ''.join(self._labeled_example(ex) for ex in examples)
    text = self.doc_to_text(doc)
    if isinstance(text, int):
      return [prefix + ctx for ctx in self.doc_to_choice(doc)]
    return prefix + text

  def _labeled_example(self, doc: Doc) -> str:
    q, choices, a = self.doc_to_text(doc), self.doc_to_choice(doc), self.doc_to_target(doc)
    if isinstance(q, int):  # multiple input: the example's context is its correct choice
      q, choices = choices[q], None
    answer = choices[a] if choices and isinstance(a, int) else a
    return f'{q}{self.target_delimiter}{answer}{self.fewshot_delimiter}'

  # ---- requests and metrics -------------------------------------------------------------------------
  @abc.abstractmethod
  def construct_requests(self, doc: Doc, ctx: str | list[str]) -> list[Request]: ...

  @abc.abstractmethod
  def process_results(self, doc: Doc, results: Sequence[Any]) -> dict[str, Any]:
    """Per-document metric values from the results of construct_requests (same order)."""

  def aggregate(self, metric: str, values: Sequence[Any]) -> float:
    return metrics_lib.AGGREGATIONS[self.aggregations[metric]](values)

  def stderr(self, metric: str, values: Sequence[Any]) -> float | None:
    if self.aggregations[metric] == 'mean':
      return metrics_lib.mean_stderr(values)
    return None  # lm-eval bootstraps these; not worth the time here


class MultipleChoiceTask(Task):
  output_type = MULTIPLE_CHOICE
  metrics = ('acc', 'acc_norm')
  aggregations = {'acc': 'mean', 'acc_norm': 'mean'}
  higher_is_better = {'acc': True, 'acc_norm': True}

  @abc.abstractmethod
  def doc_to_choice(self, doc: Doc) -> list[str]: ...

  def check_doc(self, doc: Doc) -> None:
    choices = self.doc_to_choice(doc)
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
      raise ValueError(f'choices must be a non-empty list of strings, got {choices!r}')
    text, target = self.doc_to_text(doc), self.doc_to_target(doc)
    if isinstance(text, int):  # multiple input: text is the gold index, target the shared continuation
      gold, ok_target = text, isinstance(target, str)
    else:
      gold, ok_target = target, isinstance(text, str)
    if not ok_target:
      raise ValueError(f'prompt has the wrong types: text {text!r}, target {target!r}')
    if isinstance(gold, str):
      if gold not in choices:
        raise ValueError(f'gold answer {gold!r} is not one of the choices {choices}')
    elif not isinstance(gold, (int, np.integer)) or isinstance(gold, bool) or not 0 <= gold < len(choices):
      raise ValueError(f'gold index {gold!r} is not in [0, {len(choices)})')

  def gold_index(self, doc: Doc) -> int:
    text = self.doc_to_text(doc)
    gold = text if isinstance(text, int) else self.doc_to_target(doc)
    return self.doc_to_choice(doc).index(gold) if isinstance(gold, str) else int(gold)

  def construct_requests(self, doc: Doc, ctx: str | list[str]) -> list[Request]:
    if isinstance(ctx, list):  # multiple input: one context per choice, the target as continuation
      cont = f'{self.target_delimiter}{self.doc_to_target(doc)}'
      return [Request(LOGLIKELIHOOD, (c, cont)) for c in ctx]
    return [Request(LOGLIKELIHOOD, (ctx, f'{self.target_delimiter}{choice}'))
            for choice in self.doc_to_choice(doc)]

  def process_results(self, doc: Doc, results: Sequence[tuple[float, bool]]) -> dict[str, Any]:
    lls = np.asarray([r[0] for r in results], dtype=np.float64)
    choice_chars = np.asarray([float(len(c)) for c in self.doc_to_choice(doc)])
    gold = self.gold_index(doc)
    with np.errstate(divide='ignore', invalid='ignore'):  # an empty choice: inf/nan, as in lm-eval
      per_char = lls / choice_chars
    values = {'acc': float(np.argmax(lls) == gold), 'acc_norm': float(np.argmax(per_char) == gold)}
    return {m: values[m] for m in self.metrics}


class LoglikelihoodTask(Task):
  output_type = LOGLIKELIHOOD
  metrics = ('perplexity', 'acc')
  aggregations = {'perplexity': 'perplexity', 'acc': 'mean'}
  higher_is_better = {'perplexity': False, 'acc': True}

  def check_doc(self, doc: Doc) -> None:
    text, target = self.doc_to_text(doc), self.doc_to_target(doc)
    if not isinstance(text, str) or not isinstance(target, str) or not target:
      raise ValueError(f'needs a text and a non-empty target string, got {text!r}, {target!r}')

  def construct_requests(self, doc: Doc, ctx: str | list[str]) -> list[Request]:
    return [Request(LOGLIKELIHOOD, (ctx, self.doc_to_target(doc)))]

  def process_results(self, doc: Doc, results: Sequence[tuple[float, bool]]) -> dict[str, Any]:
    ll, is_greedy = results[0]
    values = {'perplexity': ll, 'acc': int(is_greedy)}
    return {m: values[m] for m in self.metrics}


class RollingLoglikelihoodTask(Task):
  """The text to score is doc_to_target(doc); doc_to_text is unused (lm-eval sets it to "")."""
  output_type = ROLLING
  metrics = ('word_perplexity', 'byte_perplexity', 'bits_per_byte')
  aggregations = {'word_perplexity': 'weighted_perplexity', 'byte_perplexity': 'weighted_perplexity',
                  'bits_per_byte': 'bits_per_byte'}
  higher_is_better = {'word_perplexity': False, 'byte_perplexity': False, 'bits_per_byte': False}

  def doc_to_text(self, doc: Doc) -> str:
    del doc
    return ''

  def check_doc(self, doc: Doc) -> None:
    if not isinstance(self.doc_to_target(doc), str):
      raise ValueError('the text to score must be a string')

  def fewshot_context(self, doc: Doc, examples: Sequence[Doc] = ()) -> str:
    if examples:
      raise ValueError(f'{self.name}: rolling log-likelihood tasks take no few-shot examples')
    return ''

  def count_words(self, doc: Doc) -> int:
    return len(re.split(r'\s+', self.doc_to_target(doc)))

  def count_bytes(self, doc: Doc) -> int:
    return len(self.doc_to_target(doc).encode('utf-8'))

  def construct_requests(self, doc: Doc, ctx: str | list[str]) -> list[Request]:
    return [Request(ROLLING, (self.doc_to_target(doc),))]

  def process_results(self, doc: Doc, results: Sequence[float]) -> dict[str, Any]:
    ll = results[0]
    words, nbytes = self.count_words(doc), self.count_bytes(doc)
    values = {'word_perplexity': (ll, words), 'byte_perplexity': (ll, nbytes), 'bits_per_byte': (ll, nbytes)}
    return {m: values[m] for m in self.metrics}
