"""Tokenisers: lossless round trips and exact UTF-8 byte accounting."""
import numpy as np
import pytest

from aira_jax.data import (ByteTokenizer, SentencePieceTokenizer, SentencePieceTrainOptions, SyntheticSource,
                           Tokenizer, default_data_config, make_tokenizer)

ODD_TEXTS = [
    '',
    ' ',
    'plain words here',
    ' leading space',
    '  two leading spaces and trailing  ',
    'tab\there\tand\nnewline\n\nblank line\r\nwindows',
    'unicode: naïve café, Ελληνικά, 日本語のテキスト, emoji 🦊🚀, combining é',
    '\u3000ideographic space and\u00a0nbsp',
    'digits 1234567890 and punctuation !?.,;:"\'()[]{}<>',
    '\n starts with newline',
    'zero\x00byte and \x7f del',
]


@pytest.fixture(scope='module')
def spm_tok(tmp_path_factory):
  docs = [SyntheticSource(seed=3, num_docs=200)[i] for i in range(200)]
  path = tmp_path_factory.mktemp('spm') / 'tok.model'
  tok = SentencePieceTokenizer.train(docs, path, SentencePieceTrainOptions(vocab_size=600, max_docs=200))
  assert path.is_file()
  return tok


def test_byte_tokenizer_ids_and_specials():
  tok = ByteTokenizer()
  assert isinstance(tok, Tokenizer)
  assert tok.vocab_size == 259
  assert len({tok.pad_id, tok.bos_id, tok.eos_id}) == 3
  ids = tok.encode('Aé')
  assert ids == [ord('A') + 3, 0xC3 + 3, 0xA9 + 3]
  assert max(tok.encode('\xff\U0010ffff')) < tok.vocab_size
  # Specials decode to nothing and count zero bytes.
  assert tok.decode([tok.bos_id] + ids + [tok.eos_id, tok.pad_id]) == 'Aé'
  assert tok.token_byte_lengths([tok.bos_id] + ids + [tok.eos_id]).tolist() == [0, 1, 1, 1, 0]


@pytest.mark.parametrize('text', ODD_TEXTS)
def test_byte_tokenizer_round_trip_and_bytes(text):
  tok = ByteTokenizer()
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert int(tok.token_byte_lengths(ids).sum()) == len(text.encode('utf-8'))
  np.testing.assert_array_equal(tok.encode_array(text), np.asarray(ids, np.int32))


def test_spm_round_trip_and_byte_lengths(spm_tok):
  assert isinstance(spm_tok, Tokenizer)
  assert 260 < spm_tok.vocab_size <= 600
  for text in ODD_TEXTS:
    ids = spm_tok.encode(text)
    assert spm_tok.decode(ids) == text, repr(text)
    lengths = spm_tok.token_byte_lengths(ids)
    assert lengths.shape == (len(ids),)
    assert (lengths >= 0).all()
    assert int(lengths.sum()) == len(text.encode('utf-8')), repr(text)


def test_spm_compresses_in_domain_text(spm_tok):
  doc = SyntheticSource(seed=3, num_docs=300)[250]  # unseen document of the training language
  ids = spm_tok.encode(doc)
  assert len(ids) < 0.5 * len(doc.encode('utf-8'))
  assert spm_tok.decode(ids) == doc
  assert int(spm_tok.token_byte_lengths(ids).sum()) == len(doc.encode('utf-8'))


def test_spm_byte_lengths_of_concatenated_documents(spm_tok):
  # A packed stream "d1 EOS d2 EOS": each text after a special token starts with a dummy prefix.
  texts = ['the first doc', ' second one', '日本 third']
  ids, expected = [], 0
  for t in texts:
    ids += spm_tok.encode(t) + [spm_tok.eos_id]
    expected += len(t.encode('utf-8'))
  assert int(spm_tok.token_byte_lengths(ids).sum()) == expected
  # Mid-text windows: text_start=False stops a leading '▁word' piece losing its real space.
  full = spm_tok.encode('alpha beta gamma delta')
  lengths = spm_tok.token_byte_lengths(full)
  tail = spm_tok.token_byte_lengths(full[1:], text_start=False)
  np.testing.assert_array_equal(tail, lengths[1:])


def test_spm_save_load_identical(spm_tok, tmp_path):
  path = tmp_path / 'nested' / 'copy.model'
  spm_tok.save(path)
  loaded = SentencePieceTokenizer.load(path)
  assert loaded.vocab_size == spm_tok.vocab_size
  assert (loaded.pad_id, loaded.bos_id, loaded.eos_id) == (spm_tok.pad_id, spm_tok.bos_id, spm_tok.eos_id)
  for text in ODD_TEXTS + [SyntheticSource(seed=3)[7]]:
    assert loaded.encode(text) == spm_tok.encode(text)
    np.testing.assert_array_equal(loaded.token_byte_lengths(loaded.encode(text)),
                                  spm_tok.token_byte_lengths(spm_tok.encode(text)))


def test_spm_unigram_model_also_exact():
  docs = [SyntheticSource(seed=5, num_docs=80)[i] for i in range(80)]
  tok = SentencePieceTokenizer.train(docs, None, SentencePieceTrainOptions(vocab_size=500, model_type='unigram'))
  for text in ODD_TEXTS:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert int(tok.token_byte_lengths(ids).sum()) == len(text.encode('utf-8'))


def test_spm_bad_inputs(tmp_path):
  with pytest.raises(FileNotFoundError, match='not found'):
    SentencePieceTokenizer.load(tmp_path / 'missing.model')
  with pytest.raises(ValueError, match='too small'):
    SentencePieceTokenizer.train(['abc'], None, SentencePieceTrainOptions(vocab_size=100))
  with pytest.raises(ValueError, match='model_type'):
    SentencePieceTokenizer.train(['abc'], None, SentencePieceTrainOptions(model_type='wordpiece'))
  with pytest.raises(ValueError, match='no non-empty'):
    SentencePieceTokenizer.train(['', '\n'], None)


def test_make_tokenizer(tmp_path):
  cfg = default_data_config()
  assert isinstance(make_tokenizer(cfg), ByteTokenizer)
  cfg.tokenizer = 'wordpiece'
  with pytest.raises(ValueError, match="'byte' or 'sentencepiece'"):
    make_tokenizer(cfg)

  cfg = default_data_config()
  cfg.tokenizer = 'sentencepiece'
  with pytest.raises(ValueError, match='spm_model_path'):
    make_tokenizer(cfg)
  cfg.spm_model_path = str(tmp_path / 'spm' / 'x.model')
  cfg.spm_train = False
  with pytest.raises(FileNotFoundError, match='spm_train'):
    make_tokenizer(cfg)

  # Missing + spm_train: trains on the source's training documents and saves the model there.
  cfg.spm_train = True
  cfg.synthetic_num_docs = 120
  cfg.val_docs = 20
  cfg.spm_vocab_size = 500
  cfg.spm_train_docs = 100
  tok = make_tokenizer(cfg)
  assert isinstance(tok, SentencePieceTokenizer)
  assert (tmp_path / 'spm' / 'x.model').is_file()
  again = make_tokenizer(cfg)  # now loads the saved file
  assert again.path == cfg.spm_model_path
  text = 'Some text, with ünïcode.'
  assert again.encode(text) == tok.encode(text)
