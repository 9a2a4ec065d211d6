"""WikiText-2 (lm-eval task wikitext: EleutherAI/wikitext_document_level, wikitext-2-raw-v1, test split).

Each page (an article, from one " = Title = " heading to the next) is detokenised with lm-eval's rules and
scored whole in rolling windows; word_perplexity and byte_perplexity / bits_per_byte count the words and UTF-8
bytes of the page *before* detokenisation, exactly as lm-eval does.

Local data: the raw test file (lines; split into pages with the document-level dataset's rule) or JSON lines
with a `page` field. The shared raw copy dropped the blank lines of the original, so its pages are a few
bytes shorter than lm-eval's and the numbers differ slightly from published ones (word counts do not change).
"""
import re
from pathlib import Path

from aira_jax.evaluate.harness import data as data_lib
from aira_jax.evaluate.harness.data import HFDataset
from aira_jax.evaluate.harness.registry import register_task
from aira_jax.evaluate.harness.task import Doc, RollingLoglikelihoodTask

RAW_FILES = ('wikitext2_raw_test.txt', 'wiki.test.raw')
PAGE_FILES = ('wikitext2_test.jsonl', 'wikitext_document_level_test.jsonl')


def split_pages(text: str) -> list[str]:
  """Raw WikiText lines -> pages, cut before each level-1 heading (the document-level dataset's rule)."""
  pages, page = [], []
  for line in text.split('\n'):
    rline = line.replace('= = =', '===').replace('= =', '==').strip()
    if rline.startswith('= ') and rline.endswith(' ='):
      joined = '\n'.join(page)
      if joined.strip():
        pages.append(joined)
      page = []
    page.append(line)
  joined = '\n'.join(page)
  if joined.strip():
    pages.append(joined)
  return pages


def detokenize(page: str) -> str:
  """lm-eval's wikitext_detokenizer."""
  s = page
  s = s.replace("s '", "s'")
  s = re.sub(r"/' [0-9]/", r"/'[0-9]/", s)
  s = s.replace(' @-@ ', '-').replace(' @,@ ', ',').replace(' @.@ ', '.')
  for p in (':', ';', '.', '!', '?', ','):
    s = s.replace(f' {p} ', f'{p} ')
  s = re.sub(r'\(\s*([^\)]*?)\s*\)', r'(\1)', s)
  s = re.sub(r'\[\s*([^\]]*?)\s*\]', r'[\1]', s)
  s = re.sub(r'{\s*([^}]*?)\s*}', r'{\1}', s)
  s = re.sub(r'\"\s*([^\"]*?)\s*\"', r'"\1"', s)
  s = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", s)
  s = s.replace('= = = =', '====').replace('= = =', '===').replace('= =', '==')
  s = s.replace(' ' + chr(176) + ' ', chr(176))
  s = s.replace(' \n', '\n').replace('\n ', '\n')
  s = s.replace(' N ', ' 1 ')
  return s.replace(" 's", "'s")


@register_task
class WikiText2(RollingLoglikelihoodTask):
  name = 'wikitext'
  data_files = RAW_FILES + PAGE_FILES
  hf = HFDataset('EleutherAI/wikitext_document_level', 'wikitext-2-raw-v1', 'test')

  def load_docs(self, data_dir=None, source: str = 'auto') -> list[Doc]:
    data_dir = Path(data_dir) if data_dir else data_lib.default_data_dir()
    path, hf = data_lib.locate(self.name, data_dir, self.data_files, self.hf, source)
    if path is not None and path.name in RAW_FILES:
      pages = split_pages(data_lib.read_text(path))
      if not pages:
        raise data_lib.DataError(f'{path}: no WikiText pages (expected " = Title = " heading lines)')
      return [{'page': p} for p in pages]
    with data_lib.fallback_note(self.name, data_dir, self.data_files, path is None and source == 'auto'):
      return self._parse_all(data_lib.iter_records(path, hf), path or hf)

  def parse_record(self, record: Doc) -> Doc:
    page = record['page']
    if not isinstance(page, str):
      raise ValueError(f'page must be a string, got {type(page).__name__}')
    return {'page': page}

  def doc_to_target(self, doc: Doc) -> str:
    return detokenize(doc['page'])

  def count_words(self, doc: Doc) -> int:
    return len(re.split(r'\s+', doc['page']))

  def count_bytes(self, doc: Doc) -> int:
    return len(doc['page'].encode('utf-8'))
