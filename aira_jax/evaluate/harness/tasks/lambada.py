"""LAMBADA, OpenAI's detokenised version (lm-eval task lambada_openai, test split).

lm-eval: context = the text up to its last space-separated word, target = " " + that word; perplexity
(exp of minus the mean log-likelihood) and acc (the word is the greedy continuation). Local rows may be the
Hugging Face {text} form or the shared {context, continuation} form (text = context + " " + continuation).
"""
from aira_jax.evaluate.harness.data import HFDataset
from aira_jax.evaluate.harness.registry import register_task
from aira_jax.evaluate.harness.task import Doc, LoglikelihoodTask


@register_task
class LambadaOpenAI(LoglikelihoodTask):
  name = 'lambada_openai'
  data_files = ('lambada_openai_test.jsonl', 'lambada_openai_test.jsonl.xz')
  hf = HFDataset('EleutherAI/lambada_openai', 'default', 'test')

  def parse_record(self, record: Doc) -> Doc:
    if 'text' in record:
      text = record['text']
    else:
      text = record['context'] + ' ' + record['continuation']
    if not isinstance(text, str) or ' ' not in text:
      raise ValueError(f'text must be a string with at least two words, got {text!r:.60}')
    return {'text': text}

  def doc_to_text(self, doc: Doc) -> str:
    return ' '.join(doc['text'].split(' ')[:-1])

  def doc_to_target(self, doc: Doc) -> str:
    return ' ' + doc['text'].split(' ')[-1]
