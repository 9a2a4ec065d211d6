"""ARC-Easy and ARC-Challenge (lm-eval tasks arc_easy / arc_challenge, test split).

lm-eval: doc_to_text "Question: {{question}}\\nAnswer:", choices choices.text, gold
choices.label.index(answerKey); acc and acc_norm. Local files may be the Hugging Face allenai/ai2_arc rows or
the shared copy's pre-rendered form {id, query: "Question: ...\\nAnswer:", choices: [...], gold: int}.
"""
from aira_jax.evaluate.harness.data import HFDataset
from aira_jax.evaluate.harness.registry import register_task
from aira_jax.evaluate.harness.task import Doc, MultipleChoiceTask

_PREFIX, _SUFFIX = 'Question: ', '\nAnswer:'


def parse_arc(record: Doc) -> Doc:
  if 'query' in record:  # pre-rendered prompt: recover the question so the prompt is rebuilt the lm-eval way
    query = record['query']
    if not (query.startswith(_PREFIX) and query.endswith(_SUFFIX)):
      raise ValueError(f'query is not of the form "Question: ...\\nAnswer:": {query[:60]!r}')
    return {'id': record.get('id'), 'question': query[len(_PREFIX):-len(_SUFFIX)],
            'choices': list(record['choices']), 'gold': record['gold']}
  choices = record['choices']
  return {'id': record.get('id'), 'question': record['question'], 'choices': list(choices['text']),
          'gold': list(choices['label']).index(record['answerKey'])}


class _Arc(MultipleChoiceTask):

  def parse_record(self, record: Doc) -> Doc:
    return parse_arc(record)

  def doc_to_text(self, doc: Doc) -> str:
    return f"{_PREFIX}{doc['question']}{_SUFFIX}"

  def doc_to_choice(self, doc: Doc) -> list[str]:
    return doc['choices']

  def doc_to_target(self, doc: Doc) -> int:
    return doc['gold']


@register_task
class ArcEasy(_Arc):
  name = 'arc_easy'
  data_files = ('arc_easy_test.jsonl', 'arc_easy_test.jsonl.xz')
  hf = HFDataset('allenai/ai2_arc', 'ARC-Easy', 'test')
  fewshot_files = ('arc_easy_train.jsonl',)


@register_task
class ArcChallenge(_Arc):
  name = 'arc_challenge'
  data_files = ('arc_challenge_test.jsonl', 'arc_challenge_test.jsonl.xz')
  hf = HFDataset('allenai/ai2_arc', 'ARC-Challenge', 'test')
  fewshot_files = ('arc_challenge_train.jsonl',)
