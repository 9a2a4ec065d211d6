"""Sources, the synthetic language, train/val split and the grain pipelines (resume, sharding, eval)."""
import collections
import gzip
import json
import lzma
import math
import re

import numpy as np
import pytest

from aira_jax.data import (ByteTokenizer, SentencePieceTokenizer, SentencePieceTrainOptions, SyntheticSource,
                           default_data_config, generate_document, load_splits, make_eval_batches,
                           make_source, make_train_iterator, split_source, unigram_entropy)
from aira_jax.data import sources as sources_lib


def small_cfg(**overrides):
  cfg = default_data_config()
  cfg.synthetic_num_docs = 40
  cfg.val_docs = 6
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def take(it, n):
  return [next(it)['tokens'].copy() for _ in range(n)]


# ---- config -------------------------------------------------------------------------------------
def test_default_config_fields():
  cfg = default_data_config()
  assert cfg.source == 'synthetic' and cfg.tokenizer == 'byte'
  for field in ('paths', 'text_key', 'hf_name', 'hf_config', 'hf_split', 'spm_model_path', 'spm_vocab_size',
                'val_docs', 'seed', 'text_split', 'openstax_path', 'num_epochs', 'val_fraction'):
    assert field in cfg, field
  assert cfg.hf_name == 'HuggingFaceFW/fineweb-edu' and cfg.hf_config == 'sample-10BT'


# ---- synthetic language -------------------------------------------------------------------------
def test_synthetic_is_pure_function_of_seed_and_index():
  a = SyntheticSource(seed=1, num_docs=100)
  b = SyntheticSource(seed=1, num_docs=100)
  assert a[57] == b[57] == generate_document(1, 57)
  assert [a[i] for i in (3, 2, 1)] == [b[i] for i in (3, 2, 1)]  # order of access does not matter
  assert a[0] != a[1]
  assert SyntheticSource(seed=2)[57] != a[57]
  with pytest.raises(IndexError):
    a[100]


def test_synthetic_has_learnable_structure():
  src = SyntheticSource(seed=0, num_docs=200)
  docs = [src[i] for i in range(200)]
  assert all(200 < len(d) < 6000 for d in docs)
  # Key-value recall: every query's answer equals the value defined earlier in the same document.
  queries = 0
  for doc in docs:
    defined = {}
    for m in re.finditer(r'define (\w+) = (\w+) \.|what is (\w+) \? (\w+) \.', doc):
      if m.group(1):
        defined[m.group(1)] = m.group(2)
      else:
        assert defined[m.group(3)] == m.group(4)
        queries += 1
  assert queries > 200
  # Copy segments repeat their list verbatim.
  for m in re.finditer(r'list : ([\w ]+) \. again : ([\w ]+) \.', '\n'.join(docs)):
    assert m.group(1) == m.group(2)
  # Entity names are per-document: most capitalised words of a doc recur inside it.
  names = re.findall(r'\b[A-Z][a-z]{3,}\b', docs[0])
  counts = collections.Counter(names)
  assert max(counts.values()) >= 3


def test_synthetic_context_beats_unigram():
  """A bigram model of the byte stream has lower entropy than the unigram one: there is structure."""
  tok = ByteTokenizer()
  src = SyntheticSource(seed=0, num_docs=300)
  h1 = src.unigram_entropy(tok, num_docs=300)
  assert h1 == pytest.approx(unigram_entropy(tok, (src[i] for i in range(300))))
  assert 1.0 < h1 < math.log(tok.vocab_size)
  ids = np.concatenate([np.append(tok.encode_array(src[i]), tok.eos_id) for i in range(300)])
  pair = np.zeros((tok.vocab_size, tok.vocab_size))
  np.add.at(pair, (ids[:-1], ids[1:]), 1)
  joint = pair / pair.sum()
  cond = pair / np.maximum(pair.sum(1, keepdims=True), 1)
  h2 = -(joint[pair > 0] * np.log(cond[pair > 0])).sum()
  assert h2 < h1 - 0.5


# ---- files --------------------------------------------------------------------------------------
def test_text_source_file_and_paragraph(tmp_path):
  (tmp_path / 'a.txt').write_text('first para\nline two\n\n  \nsecond para\n', encoding='utf-8')
  (tmp_path / 'b.txt').write_text('only one', encoding='utf-8')
  per_file = make_source(small_cfg(source='text', paths=str(tmp_path / '*.txt')))
  assert len(per_file) == 2 and per_file[1] == 'only one'
  per_para = make_source(small_cfg(source='text', paths=str(tmp_path / '*.txt'), text_split='paragraph'))
  assert [per_para[i] for i in range(len(per_para))] == ['first para\nline two', 'second para\n', 'only one']
  with pytest.raises(ValueError, match='text_split'):
    make_source(small_cfg(source='text', paths=str(tmp_path / '*.txt'), text_split='sentence'))


def test_jsonl_sources_plain_xz_gz(tmp_path):
  rows = [{'text': f'doc {i} ü'} for i in range(3)]
  body = ''.join(json.dumps(r) + '\n' for r in rows) + '\n'
  (tmp_path / 'p.jsonl').write_text(body, encoding='utf-8')
  with lzma.open(tmp_path / 'x.jsonl.xz', 'wt', encoding='utf-8') as f:
    f.write(body)
  with gzip.open(tmp_path / 'g.jsonl.gz', 'wt', encoding='utf-8') as f:
    f.write(body)
  for name in ('p.jsonl', 'x.jsonl.xz', 'g.jsonl.gz'):
    src = make_source(small_cfg(source='jsonl', paths=str(tmp_path / name)))
    assert [src[i] for i in range(len(src))] == [r['text'] for r in rows]
  # A plain dict config with a list of globs works too (missing fields take defaults).
  both = make_source({'source': 'jsonl', 'paths': [str(tmp_path / 'p.jsonl'), str(tmp_path / '*.xz')]})
  assert len(both) == 6


def test_file_source_errors_name_file_and_line(tmp_path):
  with pytest.raises(FileNotFoundError, match='nothing_here'):
    make_source(small_cfg(source='text', paths=str(tmp_path / 'nothing_here*.txt')))
  with pytest.raises(ValueError, match='paths is empty'):
    make_source(small_cfg(source='jsonl', paths=''))
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"text": "ok"}\n{"text": "broken\n', encoding='utf-8')
  with pytest.raises(ValueError, match=r'bad\.jsonl:2: malformed JSON'):
    make_source(small_cfg(source='jsonl', paths=str(bad)))
  nokey = tmp_path / 'nokey.jsonl'
  nokey.write_text('{"body": "x"}\n', encoding='utf-8')
  with pytest.raises(ValueError, match=r"nokey\.jsonl:1: no 'text' field"):
    make_source(small_cfg(source='jsonl', paths=str(nokey)))
  (tmp_path / 'num.jsonl').write_text('{"text": 3}\n', encoding='utf-8')
  with pytest.raises(ValueError, match=r'num\.jsonl:1: .*not a string'):
    make_source(small_cfg(source='jsonl', paths=str(tmp_path / 'num.jsonl')))
  with pytest.raises(ValueError, match="source must be one of"):
    make_source(small_cfg(source='web'))


def test_openstax_missing_and_default_path(tmp_path):
  with pytest.raises(FileNotFoundError, match='OpenStax corpus not found'):
    make_source(small_cfg(source='openstax', openstax_path=str(tmp_path / 'absent.jsonl.xz')))
  assert str(sources_lib.default_openstax_path()).endswith('shared/data/corpus/openstax_textbooks.jsonl.xz')
  # The convenience source reads the same JSON lines (a small stand-in file here).
  path = tmp_path / 'mini.jsonl.xz'
  with lzma.open(path, 'wt', encoding='utf-8') as f:
    f.write(json.dumps({'title': 't', 'text': 'Preface\n\nAbout OpenStax'}) + '\n')
  src = make_source(small_cfg(source='openstax', openstax_path=str(path)))
  assert len(src) == 1 and src[0].startswith('Preface')


def test_hf_source_clear_error_without_datasets(monkeypatch):
  import builtins
  real_import = builtins.__import__

  def no_datasets(name, *args, **kwargs):
    if name == 'datasets':
      raise ImportError('No module named datasets')
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, '__import__', no_datasets)
  with pytest.raises(ImportError, match='Hugging Face `datasets`'):
    make_source(small_cfg(source='hf'))


# ---- split --------------------------------------------------------------------------------------
def test_split_is_deterministic_and_disjoint():
  src = SyntheticSource(seed=0, num_docs=50)
  train, val = split_source(src, val_docs=7, seed=3)
  train2, val2 = split_source(src, val_docs=7, seed=3)
  assert len(val) == 7 and len(train) == 43
  np.testing.assert_array_equal(val.indices, val2.indices)
  assert set(train.indices.tolist()).isdisjoint(val.indices.tolist())
  assert sorted(train.indices.tolist() + val.indices.tolist()) == list(range(50))
  assert val[0] == src[int(val.indices[0])]
  _, other = split_source(src, val_docs=7, seed=4)
  assert set(other.indices.tolist()) != set(val.indices.tolist())
  _, frac = split_source(src, val_docs=0, val_fraction=0.2)
  assert len(frac) == 10
  with pytest.raises(ValueError, match='leaving none to train'):
    split_source(src, val_docs=50)
  with pytest.raises(ValueError, match='val_fraction'):
    split_source(src, val_docs=0, val_fraction=1.5)


# ---- training pipeline --------------------------------------------------------------------------
def test_train_batches_are_packed_without_padding():
  tok = ByteTokenizer()
  cfg = small_cfg()
  it = make_train_iterator(cfg, tok, seq_len=64, batch_size=4, seed=0)
  batches = take(it, 60)
  for b in batches:
    assert b.shape == (4, 65) and b.dtype == np.int32
    assert (b != tok.pad_id).all()  # concatenate-then-split: no padding while repeating
  stream = np.concatenate([b.reshape(-1) for b in batches])
  # Documents are separated by EOS and decode to training documents.
  train, val = load_splits(cfg)
  train_docs = {train[i] for i in range(len(train))}
  pieces = np.split(stream, np.flatnonzero(stream == tok.eos_id))
  whole = [tok.decode(p[1:]) for p in pieces[1:-1]]  # complete docs between two EOS
  assert len(whole) >= 5 and all(d in train_docs for d in whole)
  assert not {val[i] for i in range(len(val))} & set(whole)


def test_train_seed_changes_order():
  tok = ByteTokenizer()
  a = take(make_train_iterator(small_cfg(), tok, seq_len=16, batch_size=2, seed=0), 3)
  b = take(make_train_iterator(small_cfg(), tok, seq_len=16, batch_size=2, seed=0), 3)
  c = take(make_train_iterator(small_cfg(), tok, seq_len=16, batch_size=2, seed=1), 3)
  assert all((x == y).all() for x, y in zip(a, b))
  assert not all((x == y).all() for x, y in zip(a, c))


@pytest.mark.parametrize('seq_len,batch_size,skip', [(16, 2, 5), (64, 4, 0), (200, 8, 0)])
def test_exact_resume(seq_len, batch_size, skip):
  tok = ByteTokenizer()
  cfg = small_cfg(synthetic_num_docs=12, val_docs=2)  # tiny corpus: epochs are short
  it = make_train_iterator(cfg, tok, seq_len=seq_len, batch_size=batch_size, seed=7)
  take(it, skip + 5)
  state = it.get_state()
  json.dumps(state)  # must be JSON-serialisable as is
  expected = take(it, 5)
  fresh = make_train_iterator(cfg, tok, seq_len=seq_len, batch_size=batch_size, seed=7)
  fresh.set_state(json.loads(json.dumps(state)))
  got = take(fresh, 5)
  for e, g in zip(expected, got):
    np.testing.assert_array_equal(e, g)


def test_resume_across_epoch_boundaries():
  """A 10-doc corpus: 60 batches of 8x129 tokens span several epochs; resume from every 7th batch."""
  tok = ByteTokenizer()
  cfg = small_cfg(synthetic_num_docs=12, val_docs=2)
  train, _ = load_splits(cfg)
  epoch_tokens = sum(len(train[i].encode('utf-8')) + 1 for i in range(len(train)))
  it = make_train_iterator(cfg, tok, seq_len=128, batch_size=8, seed=3)
  states, batches = [], []
  for _ in range(60):
    states.append(it.get_state())
    batches.append(next(it)['tokens'].copy())
  assert 60 * 8 * 129 > 3 * epoch_tokens  # really crossed epochs
  for start in range(0, 55, 7):
    fresh = make_train_iterator(cfg, tok, seq_len=128, batch_size=8, seed=3)
    fresh.set_state(states[start])
    for k in range(5):
      np.testing.assert_array_equal(next(fresh)['tokens'], batches[start + k])


def test_epochs_reshuffle_and_cover_all_docs():
  tok = ByteTokenizer()
  cfg = small_cfg(synthetic_num_docs=12, val_docs=2, num_epochs=2)
  it = make_train_iterator(cfg, tok, seq_len=31, batch_size=1, seed=0)
  stream = np.concatenate([b['tokens'].reshape(-1) for b in it])  # finite: 2 epochs
  pieces = np.split(stream, np.flatnonzero(stream == tok.eos_id) + 1)
  docs = [tok.decode(p[:-1]) for p in pieces if p.size and p[-1] == tok.eos_id]
  train, _ = load_splits(cfg)
  assert len(docs) == 20
  assert sorted(docs[:10]) == sorted(docs[10:]) == sorted(train[i] for i in range(10))
  assert docs[:10] != docs[10:]  # a new order each epoch


def test_two_shards_partition_one_shard():
  tok = ByteTokenizer()
  cfg = small_cfg(synthetic_num_docs=25, val_docs=4, num_epochs=1)

  def docs_of(**kw):
    it = make_train_iterator(cfg, tok, seq_len=40, batch_size=1, seed=5, **kw)
    stream = np.concatenate([b['tokens'].reshape(-1) for b in it])
    pieces = np.split(stream, np.flatnonzero(stream == tok.eos_id) + 1)
    return [tok.decode(p[:-1]) for p in pieces if p.size and p[-1] == tok.eos_id]

  whole = docs_of()
  s0, s1 = docs_of(shard_index=0, shard_count=2), docs_of(shard_index=1, shard_count=2)
  assert len(whole) == 21 and len(s0) + len(s1) == 21
  assert set(s0).isdisjoint(s1)
  assert sorted(s0 + s1) == sorted(whole)


def test_train_iterator_bad_args_and_state():
  tok = ByteTokenizer()
  with pytest.raises(ValueError, match='shard_index'):
    make_train_iterator(small_cfg(), tok, seq_len=8, batch_size=1, seed=0, shard_index=2, shard_count=2)
  with pytest.raises(ValueError, match='seq_len'):
    make_train_iterator(small_cfg(), tok, seq_len=0, batch_size=1, seed=0)
  a = make_train_iterator(small_cfg(), tok, seq_len=8, batch_size=1, seed=0)
  b = make_train_iterator(small_cfg(), tok, seq_len=9, batch_size=1, seed=0)
  with pytest.raises(ValueError, match='different pipeline'):
    b.set_state(a.get_state())
  with pytest.raises(ValueError, match='Not a data iterator state'):
    a.set_state({'foo': 1})


def test_train_pipeline_with_sentencepiece(tmp_path):
  cfg = small_cfg(synthetic_num_docs=60, val_docs=5)
  train, _ = load_splits(cfg)
  tok = SentencePieceTokenizer.train((train[i] for i in range(50)), tmp_path / 's.model',
                                     SentencePieceTrainOptions(vocab_size=500))
  it = make_train_iterator(cfg, tok, seq_len=24, batch_size=2, seed=0)
  take(it, 3)
  state = it.get_state()
  want = take(it, 3)
  fresh = make_train_iterator(cfg, tok, seq_len=24, batch_size=2, seed=0)
  fresh.set_state(state)
  for w, g in zip(want, take(fresh, 3)):
    np.testing.assert_array_equal(w, g)
  assert max(int(b.max()) for b in want) < tok.vocab_size


# ---- eval batches -------------------------------------------------------------------------------
def test_eval_batches_cover_validation_bytes_exactly():
  tok = ByteTokenizer()
  cfg = small_cfg()
  _, val = load_splits(cfg)
  batches = make_eval_batches(cfg, tok, seq_len=50, batch_size=4, num_batches=None)
  total_bytes = sum(int((b['bytes'] * b['weights']).sum()) for b in batches)
  assert total_bytes == sum(len(val[i].encode('utf-8')) for i in range(len(val)))
  n_tokens = sum(len(tok.encode(val[i])) + 1 for i in range(len(val)))
  assert sum(float(b['weights'].sum()) for b in batches) == n_tokens
  for b in batches:
    assert b['tokens'].shape == (4, 51) and b['tokens'].dtype == np.int32
    assert b['weights'].shape == (4, 50) and b['weights'].dtype == np.float32
    assert b['bytes'].shape == (4, 50) and b['bytes'].dtype == np.int32
  # Windows overlap by one token: the last token of a row is the first input of the next.
  flat_rows = np.concatenate([b['tokens'] for b in batches])
  np.testing.assert_array_equal(flat_rows[:-1, -1], flat_rows[1:, 0])
  # Deterministic.
  again = make_eval_batches(cfg, tok, seq_len=50, batch_size=4, num_batches=None)
  for a, b in zip(batches, again):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_eval_batches_requested_count_and_shortfall():
  tok = ByteTokenizer()
  cfg = small_cfg()
  two = make_eval_batches(cfg, tok, seq_len=32, batch_size=2, num_batches=2)
  assert len(two) == 2 and all(float(b['weights'].min()) == 1.0 for b in two)  # full: no padding
  many = make_eval_batches(cfg, tok, seq_len=32, batch_size=2, num_batches=10_000)
  assert len(many) < 10_000
  assert float(many[-1]['weights'].min()) == 0.0  # tail padded with weight 0
  with pytest.raises(ValueError, match='val_docs'):
    make_eval_batches(small_cfg(val_docs=0), tok, seq_len=8, batch_size=1, num_batches=1)
