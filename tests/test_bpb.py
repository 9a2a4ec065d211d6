"""Bits-per-byte: arithmetic, and tokeniser independence on fixed text (checks the byte accounting).

The "models" here assign each token the probability of the UTF-8 bytes it covers, with the covered bytes
taken from sentencepiece's own character offsets (not from token_byte_lengths), so the NLL numerator is
computed independently of the byte denominator under test.
"""
import math

import numpy as np
import pytest

from aira_jax.data import (BpbAccumulator, ByteTokenizer, SentencePieceTokenizer, SentencePieceTrainOptions,
                           bits_per_byte, bits_per_byte_from_tokens, default_data_config, load_splits,
                           make_eval_batches, token_nll)

SEQ_LEN, BATCH = 40, 3


def _cfg():
  cfg = default_data_config()
  cfg.synthetic_num_docs = 60
  cfg.val_docs = 5
  return cfg


@pytest.fixture(scope='module')
def tokenizers(tmp_path_factory):
  train, _ = load_splits(_cfg())
  spm = SentencePieceTokenizer.train((train[i] for i in range(50)), tmp_path_factory.mktemp('s') / 'bpb.model',
                                     SentencePieceTrainOptions(vocab_size=700))
  return {'byte': ByteTokenizer(), 'spm': spm}


def covered_bytes(tok, text: str) -> list[bytes]:
  """The UTF-8 bytes of `text` each token of encode(text) covers, from an independent source."""
  raw = text.encode('utf-8')
  if isinstance(tok, ByteTokenizer):
    return [raw[i:i + 1] for i in range(len(raw))]
  proto = tok.processor.encode(text, return_type='proto')
  assert [p.id for p in proto.pieces] == tok.encode(text)
  return [raw[p.begin:p.end] for p in proto.pieces]


def eval_bpb(tok, byte_logprob: np.ndarray) -> tuple[float, float, float]:
  """Runs a byte-factorised 'model' over make_eval_batches; returns (bpb, nll_nats, bytes counted)."""
  cfg = _cfg()
  _, val = load_splits(cfg)
  # Stream NLL in the layout make_eval_batches documents: EOS d1 EOS d2 EOS ...; EOS covers no bytes.
  stream_ids, stream_nll = [tok.eos_id], [0.0]
  for i in range(len(val)):
    stream_ids += tok.encode(val[i]) + [tok.eos_id]
    stream_nll += [-sum(byte_logprob[b] for b in piece) for piece in covered_bytes(tok, val[i])] + [0.0]
  batches = make_eval_batches(cfg, tok, seq_len=SEQ_LEN, batch_size=BATCH, num_batches=None)
  # Overlapping windows: the targets of all rows, in order, are the stream after its first token.
  targets = np.concatenate([b['tokens'][:, 1:] for b in batches]).reshape(-1)
  n = len(stream_ids) - 1
  np.testing.assert_array_equal(targets[:n], stream_ids[1:])
  nll = np.zeros(targets.size)
  nll[:n] = stream_nll[1:]
  nll = nll.reshape(-1, SEQ_LEN)
  acc = BpbAccumulator()
  for k, b in enumerate(batches):
    acc.add(nll[k * BATCH:(k + 1) * BATCH], b)
  return acc.bits_per_byte, acc.nll_nats, acc.num_bytes


def test_bits_per_byte_arithmetic():
  assert bits_per_byte(8 * 100 * math.log(2), 100) == pytest.approx(8.0)
  assert bits_per_byte(0.0, 5) == 0.0
  with pytest.raises(ValueError, match='num_bytes'):
    bits_per_byte(1.0, 0)
  with pytest.raises(ValueError, match='non-finite'):
    bits_per_byte(float('nan'), 10)
  nll = np.array([[1.0, 2.0, 3.0]])
  nbytes = np.array([[1, 3, 0]])
  w = np.array([[1.0, 1.0, 0.0]])
  assert bits_per_byte_from_tokens(nll, nbytes, w) == pytest.approx(3.0 / math.log(2) / 4)
  with pytest.raises(ValueError, match='shape'):
    bits_per_byte_from_tokens(nll, nbytes[:, :2])


def test_token_nll_matches_log_softmax():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7)) * 3
  targets = rng.integers(0, 7, size=(2, 5))
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  want = -np.log(np.take_along_axis(p, targets[..., None], -1)[..., 0])
  np.testing.assert_allclose(token_nll(logits, targets), want, rtol=1e-10)
  assert np.isfinite(token_nll(np.array([[1e4, 0.0]]), np.array([1]))).all()  # stable for large logits


@pytest.mark.parametrize('name', ['byte', 'spm'])
def test_uniform_byte_model_is_exactly_8_bits_per_byte(tokenizers, name):
  tok = tokenizers[name]
  bpb, nll, counted = eval_bpb(tok, np.full(256, -math.log(256)))
  _, val = load_splits(_cfg())
  true_bytes = sum(len(val[i].encode('utf-8')) for i in range(len(val)))
  assert counted == true_bytes
  assert nll == pytest.approx(true_bytes * math.log(256))
  assert bpb == pytest.approx(8.0, abs=1e-12)


def test_bpb_is_tokenizer_independent(tokenizers):
  # A non-uniform byte model: add-one smoothed byte frequencies of the training split.
  train, val = load_splits(_cfg())
  counts = np.ones(256)
  for i in range(30):
    np.add.at(counts, np.frombuffer(train[i].encode('utf-8'), np.uint8), 1)
  logp = np.log(counts / counts.sum())
  byte_bpb = eval_bpb(tokenizers['byte'], logp)[0]
  spm_bpb = eval_bpb(tokenizers['spm'], logp)[0]
  assert tokenizers['spm'].vocab_size > 300  # really a different tokenisation
  # Direct cross-entropy of the validation bytes under the same model.
  raw = np.concatenate([np.frombuffer(val[i].encode('utf-8'), np.uint8) for i in range(len(val))])
  direct = -logp[raw].sum() / math.log(2) / raw.size
  assert byte_bpb == pytest.approx(direct, rel=1e-12)
  assert spm_bpb == pytest.approx(direct, rel=1e-12)
  assert 1.0 < direct < 8.0


def test_accumulator_reports_per_token_and_bytes():
  batch = {'weights': np.array([[1.0, 1.0, 0.0]], np.float32), 'bytes': np.array([[2, 0, 5]], np.int32)}
  acc = BpbAccumulator()
  acc.add(np.array([[1.0, 0.5, 9.0]]), batch)
  assert acc.num_tokens == 2 and acc.num_bytes == 2
  assert acc.loss_per_token == pytest.approx(0.75)
  assert acc.bits_per_byte == pytest.approx(1.5 / math.log(2) / 2)
  with pytest.raises(ValueError, match='shape'):
    acc.add(np.zeros((1, 2)), batch)
  with pytest.raises(ValueError):
    _ = BpbAccumulator().bits_per_byte
