"""An offline, seeded artificial English-like language that a small LM can learn on a CPU in minutes.

Why this shape: it gives a learning curve with several distinct levels, so architectures differ visibly.
  * local structure: a fixed lexicon of made-up words with English function words, morphology
    (plural '-s', verb agreement '-s'), a stochastic grammar with prepositional phrases between subject and
    verb (agreement across an attractor) and embedded clauses;
  * document-level structure: each document has a topic that skews its content words;
  * in-context memory: each document invents its own entity names (only copyable from context),
    key-value facts ("define zorp = blue .") that are queried later ("what is zorp ? blue ."), and
    copy segments ("list : a b c . again : a b c .").
Document i is a pure function of (seed, i): random access and reproducible across processes.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import random
from typing import Iterable, Sequence

import numpy as np

_CONSONANTS = 'p t k b d g m n l r s z f v h j w'.split()
_VOWELS = 'a e i o u'.split()
_CODAS = ['', '', '', 'n', 'r', 'l', 'k', 'm']  # most syllables open, some closed.
_VALUES = ('red blue green black white gold silver pink gray brown '
           'one two three four five six seven eight nine ten').split()
_PREPS = 'near under behind with beside above'.split()
_ADVERBS = 'slowly quickly often rarely again together'.split()
_FUNCTION_WORDS = set(_VALUES) | set(_PREPS) | set(_ADVERBS) | set(
    'the a an some every many this these that and says what is define list again'.split())
# (determiner, number): agreement between determiner, noun and verb.
_DETERMINERS = (('the', 0), ('the', 1), ('a', 0), ('every', 0), ('this', 0), ('some', 1), ('many', 1),
                ('these', 1))

_NUM_TOPICS = 8


def _make_word(rng: random.Random, min_syl: int, max_syl: int) -> str:
  return ''.join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                 for _ in range(rng.randint(min_syl, max_syl)))


@dataclasses.dataclass(frozen=True)
class Lexicon:
  nouns: tuple[str, ...]
  verbs: tuple[str, ...]  # transitive
  intransitive: tuple[str, ...]
  adjectives: tuple[str, ...]
  noun_weights: tuple[float, ...]  # Zipfian: a few frequent words, a long tail.


@functools.lru_cache(maxsize=8)
def make_lexicon(seed: int) -> Lexicon:
  """The fixed vocabulary of the language for `seed` (shared by all its documents)."""
  rng = random.Random(f'aira-synthetic-lexicon-v1/{seed}')
  used = set(_FUNCTION_WORDS)

  def fresh(n: int, lo: int, hi: int) -> tuple[str, ...]:
    out = []
    while len(out) < n:
      w = _make_word(rng, lo, hi)
      # Stems must not end in 's', so plural/agreement '-s' is unambiguous.
      if w not in used and not w.endswith('s') and len(w) > 2:
        used.add(w)
        out.append(w)
    return tuple(out)

  nouns = fresh(160, 1, 2)
  return Lexicon(nouns=nouns, verbs=fresh(64, 1, 2), intransitive=fresh(24, 1, 2),
                 adjectives=fresh(48, 1, 2),
                 noun_weights=tuple(1.0 / (r + 1) for r in range(len(nouns))))


class _DocWriter:
  """Writes one document; all randomness comes from its own Random."""

  def __init__(self, lex: Lexicon, rng: random.Random):
    self.lex, self.rng = lex, rng
    topic = rng.randrange(_NUM_TOPICS)
    # Topic words: a contiguous-by-stride slice of each class, preferred 70% of the time.
    self.topic_nouns = lex.nouns[topic::_NUM_TOPICS]
    self.topic_verbs = lex.verbs[topic::_NUM_TOPICS]
    self.topic_adjs = lex.adjectives[topic::_NUM_TOPICS]
    self.names: list[str] = []
    num_names = rng.randint(2, 4)
    while len(self.names) < num_names:
      name = _make_word(rng, 2, 3).capitalize()
      if name not in self.names:
        self.names.append(name)

  def _noun(self) -> str:
    if self.rng.random() < 0.7:
      return self.rng.choice(self.topic_nouns)
    return self.rng.choices(self.lex.nouns, weights=self.lex.noun_weights)[0]

  def _pick(self, topic: Sequence[str], everything: Sequence[str]) -> str:
    return self.rng.choice(topic if self.rng.random() < 0.7 else everything)

  def noun_phrase(self, allow_pp: bool) -> tuple[list[str], int]:
    """Returns (words, number) with number 0 = singular, 1 = plural."""
    rng = self.rng
    if rng.random() < 0.3:
      return [rng.choice(self.names)], 0
    det, number = rng.choice(_DETERMINERS)
    words = [det]
    if rng.random() < 0.35:
      words.append(self._pick(self.topic_adjs, self.lex.adjectives))
    words.append(self._noun() + ('s' if number else ''))
    if allow_pp and rng.random() < 0.3:
      pp_words, _ = self.noun_phrase(allow_pp=False)  # its number is an attractor, not the subject's.
      words += [rng.choice(_PREPS)] + pp_words
    return words, number

  def verb_phrase(self, number: int, depth: int) -> list[str]:
    rng = self.rng
    r = rng.random()
    if depth == 0 and r < 0.12:  # embedded clause: "<subj> says that <sentence>"
      verb = 'says' if number == 0 else 'say'
      return [verb, 'that'] + self.clause(depth + 1)
    if r < 0.35:
      words = [rng.choice(self.lex.intransitive) + ('s' if number == 0 else '')]
      if rng.random() < 0.5:
        words.append(rng.choice(_ADVERBS))
      return words
    verb = self._pick(self.topic_verbs, self.lex.verbs) + ('s' if number == 0 else '')
    obj, _ = self.noun_phrase(allow_pp=False)
    return [verb] + obj

  def clause(self, depth: int = 0) -> list[str]:
    subj, number = self.noun_phrase(allow_pp=True)
    return subj + self.verb_phrase(number, depth)

  def sentence(self) -> str:
    words = self.clause()
    words[0] = words[0][0].upper() + words[0][1:]
    return ' '.join(words) + ' .'

  def copy_segment(self) -> str:
    items = [self.rng.choice(self.lex.nouns + self.lex.adjectives) for _ in range(self.rng.randint(3, 6))]
    return 'list : ' + ' '.join(items) + ' . again : ' + ' '.join(items) + ' .'


def generate_document(seed: int, index: int, *, min_sentences: int = 12, max_sentences: int = 30) -> str:
  """Document `index` of the language `seed`: a pure function of its arguments."""
  if index < 0:
    raise IndexError(f'synthetic document index must be >= 0, got {index}')
  lex = make_lexicon(seed)
  rng = random.Random(f'aira-synthetic-doc-v1/{seed}/{index}')
  w = _DocWriter(lex, rng)
  n = rng.randint(min_sentences, max_sentences)
  parts: list[list[str]] = [[w.sentence()] for _ in range(n)]
  # Key-value facts: defined in the first half, queried (and maybe re-queried) strictly later.
  num_facts = rng.randint(2, 4)
  keys: list[str] = []
  while len(keys) < num_facts:
    k = _make_word(rng, 2, 3)
    if k not in keys and k not in _FUNCTION_WORDS:
      keys.append(k)
  half = max(1, n // 2)
  for k in keys:
    value = rng.choice(_VALUES)
    at = rng.randrange(half)
    parts[at].append(f'define {k} = {value} .')
    if at + 1 < n:
      for _ in range(rng.randint(1, 2)):
        parts[rng.randrange(at + 1, n)].append(f'what is {k} ? {value} .')
  if rng.random() < 0.5:
    parts[rng.randrange(n)].append(w.copy_segment())
  # Paragraphs of 3-6 sentence groups: newlines are part of what the model learns.
  sentences = [s for group in parts for s in group]
  paragraphs, i = [], 0
  while i < len(sentences):
    step = rng.randint(3, 6)
    paragraphs.append(' '.join(sentences[i:i + step]))
    i += step
  title = f'{w.names[0]} and the {rng.choice(w.topic_nouns)}'
  return title + '\n\n' + '\n'.join(paragraphs) + '\n'


@dataclasses.dataclass(frozen=True)
class SyntheticSource:
  """Random-access documents of the synthetic language (len = num_docs)."""

  seed: int = 0
  num_docs: int = 100_000
  min_sentences: int = 12
  max_sentences: int = 30
  name: str = 'synthetic'

  def __post_init__(self):
    if self.num_docs <= 0:
      raise ValueError(f'synthetic_num_docs must be > 0, got {self.num_docs}')
    if not 1 <= self.min_sentences <= self.max_sentences:
      raise ValueError('need 1 <= synthetic_min_sentences <= synthetic_max_sentences, got '
                       f'{self.min_sentences}, {self.max_sentences}')

  def __len__(self) -> int:
    return self.num_docs

  def __getitem__(self, index: int) -> str:
    index = int(index)
    if not 0 <= index < self.num_docs:
      raise IndexError(f'synthetic document {index} out of range [0, {self.num_docs})')
    return generate_document(self.seed, index, min_sentences=self.min_sentences,
                             max_sentences=self.max_sentences)

  def unigram_entropy(self, tokenizer, num_docs: int = 200) -> float:
    return unigram_entropy(tokenizer, (self[i] for i in range(min(num_docs, self.num_docs))))


def unigram_entropy(tokenizer, docs: Iterable[str], *, append_eos: bool = True) -> float:
  """Empirical unigram entropy, in nats per token, of `docs` under `tokenizer`.

  This is the loss of the best context-free model of these documents; an LM that learned anything about
  context beats it. EOS is counted (as training targets include it) unless append_eos is False.
  """
  counts = np.zeros(tokenizer.vocab_size, dtype=np.int64)
  for doc in docs:
    ids = tokenizer.encode_array(doc)
    counts += np.bincount(ids, minlength=tokenizer.vocab_size)
    if append_eos:
      counts[tokenizer.eos_id] += 1
  total = counts.sum()
  if total == 0:
    raise ValueError('unigram_entropy: the documents produced no tokens')
  p = counts[counts > 0] / total
  return float(-(p * np.log(p)).sum())


def nats_to_bits(x: float) -> float:
  return x / math.log(2)
