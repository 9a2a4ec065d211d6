"""OpenBookQA (lm-eval task openbookqa, main config, test split): the bare question_stem as prompt (no
"Question:" wrapper), choices choices.text, gold choices.label.index(answerKey.lstrip()); acc and acc_norm.
No offline copy ships with the project: put openbookqa_test.jsonl (Hugging Face rows) in the data directory
or let it load from Hugging Face."""
from aira_jax.evaluate.harness.data import HFDataset
from aira_jax.evaluate.harness.registry import register_task
from aira_jax.evaluate.harness.task import Doc, MultipleChoiceTask


@register_task
class OpenBookQA(MultipleChoiceTask):
  name = 'openbookqa'
  data_files = ('openbookqa_test.jsonl', 'openbookqa_main_test.jsonl')
  hf = HFDataset('allenai/openbookqa', 'main', 'test')
  fewshot_files = ('openbookqa_train.jsonl',)

  def parse_record(self, record: Doc) -> Doc:
    choices = record['choices']
    return {'id': record.get('id'), 'question_stem': record['question_stem'], 'choices': list(choices['text']),
            'gold': list(choices['label']).index(record['answerKey'].lstrip())}

  def doc_to_text(self, doc: Doc) -> str:
    return doc['question_stem']

  def doc_to_choice(self, doc: Doc) -> list[str]:
    return doc['choices']

  def doc_to_target(self, doc: Doc) -> int:
    return doc['gold']
