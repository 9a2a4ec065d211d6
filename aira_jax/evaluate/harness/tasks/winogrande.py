"""WinoGrande (lm-eval task winogrande, winogrande_xl validation) with lm-eval's partial scoring.

Each option fills the blank to make a context (sentence up to "_" + option); both contexts are scored on the
same continuation, " " + the sentence after the blank (stripped). doc_to_text returns the gold index, which
marks lm-eval's "multiple input" form; acc only.
"""
from aira_jax.evaluate.harness.data import HFDataset
from aira_jax.evaluate.harness.registry import register_task
from aira_jax.evaluate.harness.task import Doc, MultipleChoiceTask


@register_task
class WinoGrande(MultipleChoiceTask):
  name = 'winogrande'
  data_files = ('winogrande_xl_validation.jsonl', 'winogrande_validation.jsonl')
  hf = HFDataset('allenai/winogrande', 'winogrande_xl', 'validation')
  fewshot_files = ('winogrande_xl_train.jsonl',)
  metrics = ('acc',)

  def parse_record(self, record: Doc) -> Doc:
    if record['answer'] not in ('1', '2'):
      raise ValueError(f"answer must be \"1\" or \"2\", got {record['answer']!r}")
    if '_' not in record['sentence']:
      raise ValueError('sentence has no "_" blank')
    return {k: record[k] for k in ('sentence', 'option1', 'option2', 'answer')}

  def doc_to_text(self, doc: Doc) -> int:
    return {'1': 0, '2': 1}[doc['answer']]

  def doc_to_target(self, doc: Doc) -> str:
    idx = doc['sentence'].index('_') + 1
    return doc['sentence'][idx:].strip()

  def doc_to_choice(self, doc: Doc) -> list[str]:
    idx = doc['sentence'].index('_')
    return [doc['sentence'][:idx] + opt for opt in (doc['option1'], doc['option2'])]
