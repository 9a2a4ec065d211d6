"""BoolQ (lm-eval task boolq from super_glue, validation split).

lm-eval: doc_to_text "{{passage}}\\nQuestion: {{question}}?\\nAnswer:", choices ["no", "yes"], gold label; acc.
Local rows may carry super_glue's `label` (0 = no, 1 = yes) or google/boolq's boolean `answer`.
"""
from aira_jax.evaluate.harness.data import HFDataset
from aira_jax.evaluate.harness.registry import register_task
from aira_jax.evaluate.harness.task import Doc, MultipleChoiceTask


@register_task
class BoolQ(MultipleChoiceTask):
  name = 'boolq'
  data_files = ('boolq_validation.jsonl', 'boolq_validation.jsonl.xz')
  hf = HFDataset('aps/super_glue', 'boolq', 'validation')
  fewshot_files = ('boolq_train.jsonl',)
  metrics = ('acc',)

  def parse_record(self, record: Doc) -> Doc:
    if 'label' in record:
      label = record['label']
    else:
      answer = record['answer']
      if not isinstance(answer, bool):
        raise ValueError(f'answer must be true/false, got {answer!r}')
      label = int(answer)
    return {'question': record['question'], 'passage': record['passage'], 'label': label}

  def doc_to_text(self, doc: Doc) -> str:
    return f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:"

  def doc_to_choice(self, doc: Doc) -> list[str]:
    return ['no', 'yes']

  def doc_to_target(self, doc: Doc) -> int:
    return doc['label']
