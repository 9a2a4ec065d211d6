"""Default data configuration (one ConfigDict holding every field the data package reads)."""
from __future__ import annotations

import ml_collections

SOURCES = ('synthetic', 'text', 'jsonl', 'openstax', 'hf')
TOKENIZERS = ('byte', 'sentencepiece')


def default_data_config() -> ml_collections.ConfigDict:
  """Returns the data config with every field set to a sensible offline default.

  Fields are type-locked by ConfigDict, so "unset" is spelled '' for strings and 0 for counts.
  """
  c = ml_collections.ConfigDict()
  # Which documents: 'synthetic' | 'text' | 'jsonl' | 'openstax' | 'hf'.
  c.source = 'synthetic'
  # Seeds the synthetic language and the train/validation split. The shuffle order is seeded by
  # make_train_iterator(seed=...) so that different runs can share one split.
  c.seed = 0

  # 'text' / 'jsonl': comma-separated globs (a list or tuple is accepted too when built in code).
  c.paths = ''
  c.text_split = 'file'  # 'file': one document per file; 'paragraph': split on blank lines.
  c.text_key = 'text'  # jsonl field holding the document text.
  c.openstax_path = ''  # '' = <repo>/../shared/data/corpus/openstax_textbooks.jsonl.xz
  c.min_doc_chars = 1  # documents shorter than this (after stripping nothing) are dropped.

  # 'hf': Hugging Face datasets (optional dependency).
  c.hf_name = 'HuggingFaceFW/fineweb-edu'
  c.hf_config = 'sample-10BT'
  c.hf_split = 'train'
  c.hf_streaming = True
  c.hf_max_docs = 20_000  # streaming reads this many documents into memory (random access); 0 = all.
  c.hf_cache_dir = ''

  # 'synthetic': the offline artificial language (see aira_jax.data.synthetic).
  c.synthetic_num_docs = 100_000
  c.synthetic_min_sentences = 12
  c.synthetic_max_sentences = 30

  # Train / validation split: a deterministic held-out set of documents.
  c.val_docs = 256  # count of held-out documents ...
  c.val_fraction = 0.0  # ... or, when > 0, this fraction of the documents (overrides val_docs).

  # Tokeniser.
  c.tokenizer = 'byte'  # 'byte' | 'sentencepiece'
  c.spm_model_path = ''
  c.spm_train = True  # train (and save to spm_model_path) when the model file is missing.
  c.spm_vocab_size = 4096
  c.spm_model_type = 'bpe'  # 'bpe' | 'unigram'
  c.spm_train_docs = 2000  # training documents fed to the sentencepiece trainer.
  c.spm_character_coverage = 0.9995

  # Pipeline.
  c.num_epochs = 0  # 0 = repeat forever (training never pads); N = stop after N epochs.
  c.read_num_threads = 1  # grain threads tokenising documents (cheap: tokenisation is in C/numpy).
  c.read_prefetch = 32  # documents tokenised ahead.
  return c


def resolve(cfg) -> ml_collections.ConfigDict:
  """Defaults overlaid with `cfg` (a ConfigDict or dict; fields it lacks take their defaults).

  A list/tuple of paths becomes the comma-separated string the defaults use.
  """
  if cfg is None:
    return default_data_config()
  given = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg)
  if isinstance(given.get('paths'), (list, tuple)):
    given['paths'] = ','.join(str(p) for p in given['paths'])
  merged = default_data_config().to_dict()
  merged.update(given)
  # Built fresh (not .update on the defaults) so a float val_docs etc. reaches our own checks,
  # which name the field, instead of ConfigDict's type-lock error.
  return ml_collections.ConfigDict(merged)
