"""HellaSwag (lm-eval task hellaswag, validation split), with lm-eval's preprocessing of the WikiHow text.

lm-eval (hellaswag/utils.py): query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()),
choices = [preprocess(ending)], gold = int(label); acc and acc_norm.
"""
import re

from aira_jax.evaluate.harness.data import HFDataset
from aira_jax.evaluate.harness.registry import register_task
from aira_jax.evaluate.harness.task import Doc, MultipleChoiceTask


def preprocess(text: str) -> str:
  """lm-eval's cleanup: brackets are artefacts of the WikiHow part of HellaSwag."""
  text = text.strip()
  text = text.replace(' [title]', '. ')
  text = re.sub('\\[.*?\\]', '', text)
  return text.replace('  ', ' ')


@register_task
class HellaSwag(MultipleChoiceTask):
  name = 'hellaswag'
  data_files = ('hellaswag_validation.jsonl.xz', 'hellaswag_validation.jsonl')
  hf = HFDataset('Rowan/hellaswag', None, 'validation')
  fewshot_files = ('hellaswag_train.jsonl.xz', 'hellaswag_train.jsonl')

  def parse_record(self, record: Doc) -> Doc:
    ctx = record['ctx_a'] + ' ' + record['ctx_b'].capitalize()
    return {'query': preprocess(record['activity_label'] + ': ' + ctx),
            'choices': [preprocess(e) for e in record['endings']], 'gold': int(record['label'])}

  def doc_to_text(self, doc: Doc) -> str:
    return doc['query']

  def doc_to_choice(self, doc: Doc) -> list[str]:
    return doc['choices']

  def doc_to_target(self, doc: Doc) -> int:
    return doc['gold']
