"""PIQA (lm-eval task piqa, validation split): "Question: {{goal}}\\nAnswer:", choices [sol1, sol2],
gold label; acc and acc_norm."""
from aira_jax.evaluate.harness.data import HFDataset
from aira_jax.evaluate.harness.registry import register_task
from aira_jax.evaluate.harness.task import Doc, MultipleChoiceTask


@register_task
class Piqa(MultipleChoiceTask):
  name = 'piqa'
  data_files = ('piqa_validation.jsonl', 'piqa_validation.jsonl.xz')
  hf = HFDataset('baber/piqa', None, 'validation')
  fewshot_files = ('piqa_train.jsonl',)

  def parse_record(self, record: Doc) -> Doc:
    return {'goal': record['goal'], 'sol1': record['sol1'], 'sol2': record['sol2'], 'label': int(record['label'])}

  def doc_to_text(self, doc: Doc) -> str:
    return f"Question: {doc['goal']}\nAnswer:"

  def doc_to_choice(self, doc: Doc) -> list[str]:
    return [doc['sol1'], doc['sol2']]

  def doc_to_target(self, doc: Doc) -> int:
    return doc['label']
