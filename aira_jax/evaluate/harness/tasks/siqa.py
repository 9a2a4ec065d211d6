"""Social IQa (lm-eval task social_iqa, validation split): "Q: {{context}} {{question}}\\nA:", choices
[answerA, answerB, answerC], gold int(label) - 1 (labels are "1".."3"); acc only."""
from aira_jax.evaluate.harness.data import HFDataset
from aira_jax.evaluate.harness.registry import register_task
from aira_jax.evaluate.harness.task import Doc, MultipleChoiceTask


@register_task
class SocialIQA(MultipleChoiceTask):
  name = 'social_iqa'
  data_files = ('social_i_qa_validation.jsonl', 'siqa_validation.jsonl')
  hf = HFDataset('lighteval/siqa', None, 'validation')
  fewshot_files = ('social_i_qa_train.jsonl',)
  metrics = ('acc',)

  def parse_record(self, record: Doc) -> Doc:
    return {k: record[k] for k in ('context', 'question', 'answerA', 'answerB', 'answerC')} | {
        'label': int(record['label']) - 1}

  def doc_to_text(self, doc: Doc) -> str:
    return f"Q: {doc['context']} {doc['question']}\nA:"

  def doc_to_choice(self, doc: Doc) -> list[str]:
    return [doc['answerA'], doc['answerB'], doc['answerC']]

  def doc_to_target(self, doc: Doc) -> int:
    return doc['label']
