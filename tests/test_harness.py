"""The harness port on its own: tokenisation rules, rolling windows, the batched scorer against direct
per-row forwards, task prompts and data errors, sampling, few-shot, registry, held-out results, the CLI and
restoring a trained run. (Parity with lm-eval itself: test_harness_parity.py.)"""
import json
import math
import os
import subprocess
import sys
import textwrap

from flax import nnx
import jax
import numpy as np
import pytest

from aira_jax.data import ByteTokenizer
from aira_jax.evaluate import harness
from aira_jax.evaluate.harness import requests as req_lib
from aira_jax.evaluate.harness.data import DataError
from aira_jax.evaluate.harness.tasks import hellaswag, wikitext
from aira_jax.models import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOK = ByteTokenizer()


@pytest.fixture(scope='module')
def model():
  return build_model({'vocab_size': 259, 'd_model': 32, 'num_layers': 2, 'num_heads': 2, 'design': 'attention',
                      'init_std': 0.1}, rngs=nnx.Rngs(1))


def _write(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows), encoding='utf-8')
  return path


# ---------------------------------------------------------------- requests -> rows
def test_encode_pair_moves_trailing_space_and_handles_empty_context():
  ctx, cont = req_lib.encode_pair(TOK, 'Answer: ', 'yes', prefix_token_id=2)
  assert TOK.decode(ctx) == 'Answer:' and TOK.decode(cont) == ' yes'
  ctx, cont = req_lib.encode_pair(TOK, '', 'abc', prefix_token_id=2)
  assert ctx == [2] and TOK.decode(cont) == 'abc'


def test_pair_row_truncates_left_and_scores_continuation():
  row = req_lib.pair_row(list(range(10, 30)), [7, 8, 9], max_length=8)
  assert row.tokens.tolist() == [24, 25, 26, 27, 28, 29, 7, 8, 9] and row.length == 8 and row.num_scored == 3
  long = req_lib.pair_row([1], list(range(20)), max_length=8)  # continuation longer than the window
  assert long.num_scored == 8 and long.tokens.tolist() == list(range(11, 20))


@pytest.mark.parametrize('n,L', [(1, 4), (4, 4), (5, 4), (9, 4), (23, 5), (7, 1)])
def test_rolling_windows_predict_each_token_once_with_full_context(n, L):
  tokens = list(range(100, 100 + n))
  windows = req_lib.rolling_windows(tokens, prefix_token_id=2, max_length=L)
  predicted = [t for _, cont in windows for t in cont]
  assert predicted == tokens
  assert windows[0][0] == [2]
  for i, (ctx, cont) in enumerate(windows):
    row = req_lib.pair_row(ctx, cont, L)
    assert row.length <= L and row.num_scored == len(cont)
    full = tokens[:tokens.index(cont[-1]) + 1]
    # Inputs are exactly the tokens before each prediction (the prefix only for the first window).
    expected = ([2] + full)[-(L + 1):]
    assert row.tokens.tolist() == expected
    if i > 0:
      assert row.length == L  # later windows keep a full max_length context
  assert req_lib.rolling_windows([], 2, 4) == []


def test_bucket_lengths():
  assert harness.bucket_lengths(2048) == [64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]
  assert harness.bucket_lengths(100) == [64, 96, 100]
  assert harness.bucket_lengths(40) == [40]


# ---------------------------------------------------------------- the batched scorer
def _direct(forward, row):
  """Unpadded, unbatched forward and float64 log-softmax: what a row's score must be."""
  logits = np.asarray(forward(row.tokens[None, :-1]), np.float64)[0]
  logp = logits - logits.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  n = row.length
  pos = range(n - row.num_scored, n)
  ll = sum(logp[p, row.tokens[p + 1]] for p in pos)
  greedy = all(np.argmax(logits[p]) == row.tokens[p + 1] for p in pos)
  return ll, greedy


def test_scorer_matches_direct_forward_across_buckets_and_tails(model):
  forward = jax.jit(lambda t: model(t))  # one function: compiled once per distinct length
  rng = np.random.default_rng(0)
  rows = []
  for n in [3, 10, 64, 70, 100, 10, 3, 97, 100, 3]:
    toks = rng.integers(3, 259, size=n + 1).astype(np.int32)
    rows.append(req_lib.Row(toks, int(rng.integers(1, n + 1))))
  # A continuation the model predicts greedily: extend a row with its own argmax, one token at a time.
  seq = list(rows[1].tokens[:7])
  for _ in range(4):
    seq.append(int(np.argmax(np.asarray(forward(np.asarray([seq], np.int32)))[0, -1])))
  rows.append(req_lib.Row(np.asarray(seq, np.int32), 4))
  scorer = harness.Scorer(model, harness.ScorerConfig(max_length=100, max_batch_tokens=256))
  ll, greedy = scorer.score(rows)
  for i, row in enumerate(rows):
    d_ll, d_greedy = _direct(forward, row)
    assert abs(ll[i] - d_ll) < 1e-4, (i, ll[i], d_ll)
    assert greedy[i] == d_greedy
  assert greedy[-1] and not greedy[:-1].all()
  assert scorer.stats.batches > 3 and len(scorer.stats.shapes) <= 8
  # Padding a bucket's last batch to the full size (the accelerator policy): same scores, one shape a bucket. A
  # watch hears of each shape's compile and then of its first batch (how the discovery child lets its parent end a
  # kernel that hangs in scoring).
  from aira_jax.ops.fallback import FirstRunWatch
  heard = []
  watch = FirstRunWatch(compiled=lambda ops, s: heard.append(('compiled', ops['kernels'], s >= 0)),
                        first_run=lambda s: heard.append(('first_run', s >= 0)))
  full = harness.Scorer(model, harness.ScorerConfig(max_length=100, max_batch_tokens=256, tail_batch='full'),
                        watch=watch)
  ll_full, greedy_full = full.score(rows)
  assert np.allclose(ll_full, ll, atol=1e-4) and (greedy_full == greedy).all()
  assert len({length for _, length in full.stats.shapes}) == len(full.stats.shapes)
  assert heard == [('compiled', [], True), ('first_run', True)] * len(full.stats.shapes), heard


# ---------------------------------------------------------------- tasks: prompts and data
def test_task_prompts_follow_lm_eval():
  arc = harness.get_task('arc_easy')
  hf = arc.parse_record({'id': 'a', 'question': 'Why?', 'choices': {'text': ['x', 'y z'], 'label': ['1', '2']},
                         'answerKey': '2'})
  shared = arc.parse_record({'id': 'a', 'query': 'Question: Why?\nAnswer:', 'choices': ['x', 'y z'], 'gold': 1})
  for doc in (hf, shared):
    assert [r.args for r in arc.construct_requests(doc, arc.fewshot_context(doc))] == [
        ('Question: Why?\nAnswer:', ' x'), ('Question: Why?\nAnswer:', ' y z')]
    assert arc.gold_index(doc) == 1
  boolq = harness.get_task('boolq')
  d = boolq.parse_record({'question': 'is it', 'passage': 'P.', 'answer': True})
  assert boolq.fewshot_context(d) == 'P.\nQuestion: is it?\nAnswer:' and boolq.gold_index(d) == 1
  siqa = harness.get_task('social_iqa')
  d = siqa.parse_record({'context': 'C.', 'question': 'Q?', 'answerA': 'a', 'answerB': 'b', 'answerC': 'c',
                         'label': '3'})
  assert siqa.fewshot_context(d) == 'Q: C. Q?\nA:' and siqa.gold_index(d) == 2
  wino = harness.get_task('winogrande')
  d = wino.parse_record({'sentence': 'Ann beat Bo so _ won .', 'option1': 'Ann', 'option2': 'Bo', 'answer': '1'})
  assert [r.args for r in wino.construct_requests(d, wino.fewshot_context(d))] == [
      ('Ann beat Bo so Ann', ' won .'), ('Ann beat Bo so Bo', ' won .')]
  lam = harness.get_task('lambada_openai')
  for rec in ({'text': 'a b\nc d'}, {'context': 'a b\nc', 'continuation': 'd'}):
    d = lam.parse_record(rec)
    assert lam.construct_requests(d, lam.fewshot_context(d))[0].args == ('a b\nc', ' d')
  hs = harness.get_task('hellaswag')
  d = hs.parse_record({'activity_label': 'Cook', 'ctx_a': 'A man cooks.', 'ctx_b': 'he', 'label': '1',
                       'endings': ['stirs [title] the pot.', 'eats [step] it  now.']})
  assert hs.fewshot_context(d) == 'Cook: A man cooks. He'
  assert hs.doc_to_choice(d) == ['stirs. the pot.', 'eats it now.']
  assert hellaswag.preprocess(' x [header] y ') == 'x y'
  obqa = harness.get_task('openbookqa')
  d = obqa.parse_record({'question_stem': 'Sun is', 'choices': {'text': ['hot', 'cold'], 'label': ['A', 'B']},
                         'answerKey': ' A'})
  assert obqa.fewshot_context(d) == 'Sun is' and obqa.gold_index(d) == 0


def test_wikitext_pages_detokenisation_and_counts():
  raw = ' = Title = \n Some text @-@ here , and ( more ) . \n = = Sub = = \n Next line . \n = Other = \n x \n'
  pages = wikitext.split_pages(raw)
  assert len(pages) == 2 and pages[0].startswith(' = Title = ') and pages[1] == ' = Other = \n x \n'
  assert wikitext.detokenize(pages[0]) == ' = Title =\nSome text-here, and (more).\n== Sub ==\nNext line. '
  task = harness.get_task('wikitext')
  doc = {'page': pages[0]}
  res = task.process_results(doc, [-10.0])
  assert res['word_perplexity'] == (-10.0, len(pages[0].split()) + 2)  # re.split on \s+ with edge spaces
  assert res['bits_per_byte'] == (-10.0, len(pages[0].encode()))


def test_multiple_choice_metrics_acc_vs_acc_norm():
  task = harness.get_task('arc_easy')
  doc = {'question': 'q', 'choices': ['a', 'bbbbbbbbbb'], 'gold': 1}
  # Raw log-likelihood favours the short choice; per character the long one wins.
  assert task.process_results(doc, [(-2.0, False), (-5.0, False)]) == {'acc': 0.0, 'acc_norm': 1.0}
  lam = harness.get_task('lambada_openai')
  assert lam.aggregate('perplexity', [-1.0, -3.0]) == pytest.approx(math.exp(2.0))


def test_data_errors_name_file_and_line(tmp_path):
  piqa = harness.get_task('piqa')
  with pytest.raises(DataError, match=r'piqa_validation\.jsonl.*data_dir'):
    piqa.load_docs(tmp_path, 'local')
  good = {'goal': 'g', 'sol1': 'a', 'sol2': 'b', 'label': 0}
  path = tmp_path / 'piqa_validation.jsonl'
  path.write_text(json.dumps(good) + '\n{"goal": broken\n', encoding='utf-8')
  with pytest.raises(DataError, match=r'piqa_validation\.jsonl:2: malformed JSON'):
    piqa.load_docs(tmp_path)
  _write(path, [good, good, {'goal': 'g', 'sol1': 'a', 'label': 0}])
  with pytest.raises(DataError, match=r'piqa_validation\.jsonl:3: bad piqa record \(missing field .sol2.\)'):
    piqa.load_docs(tmp_path)
  _write(path, [good, {**good, 'label': 2}])
  with pytest.raises(DataError, match=r':2: .*gold index 2 is not in \[0, 2\)'):
    piqa.load_docs(tmp_path)
  with pytest.raises(ValueError, match='unknown task'):
    harness.get_task('no_such_task')


def test_default_data_dir_env_override(monkeypatch, tmp_path):
  assert harness.default_data_dir().parts[-3:] == ('shared', 'data', 'harness')
  monkeypatch.setenv('AIRA_HARNESS_DATA', str(tmp_path))
  assert harness.default_data_dir() == tmp_path


# ---------------------------------------------------------------- sampling, few-shot, registry, held-out
def test_select_indices():
  assert harness.select_indices(10, None, None) == list(range(10))
  assert harness.select_indices(10, 3, None) == [0, 1, 2]
  assert harness.select_indices(10, 0.25, None) == [0, 1, 2]  # ceil, as lm-eval
  drawn = harness.select_indices(100, 5, 3)
  assert drawn == sorted(drawn) and drawn == harness.select_indices(100, 5, 3) != harness.select_indices(100, 5, 4)
  assert harness.select_indices(4, 50, 1) == [0, 1, 2, 3]


def test_fewshot_context_format_and_exclusion(tmp_path):
  rows = [{'goal': f'goal {i}', 'sol1': f'a{i}', 'sol2': f'b{i}', 'label': i % 2} for i in range(6)]
  _write(tmp_path / 'piqa_validation.jsonl', rows)
  task = harness.get_task('piqa')
  docs = task.load_docs(tmp_path)
  ctx = task.fewshot_context(docs[0], [docs[1], docs[2]])
  assert ctx == ('Question: goal 1\nAnswer: b1\n\nQuestion: goal 2\nAnswer: a2\n\nQuestion: goal 0\nAnswer:')
  import random  # pylint: disable=g-import-not-at-top
  from aira_jax.evaluate.harness.runner import fewshot_examples  # pylint: disable=g-import-not-at-top
  rnd = random.Random(0)
  for _ in range(20):
    ex = fewshot_examples(docs, docs[3], 5, rnd, exclude_doc=True)
    assert len(ex) == 5 and docs[3] not in ex


def test_custom_task_module_and_held_out(tmp_path, model):
  module = tmp_path / 'my_task.py'
  module.write_text(textwrap.dedent('''
      from aira_jax.evaluate.harness import MultipleChoiceTask, register_task

      @register_task
      class Colors(MultipleChoiceTask):
        name = 'my_colors'
        data_files = ('colors.jsonl',)
        metrics = ('acc',)

        def doc_to_text(self, doc):
          return f"Color of {doc['thing']}:"

        def doc_to_choice(self, doc):
          return doc['options']

        def doc_to_target(self, doc):
          return doc['answer']
  '''), encoding='utf-8')
  harness.load_task_module(module)
  _write(tmp_path / 'colors.jsonl', [{'thing': t, 'options': ['red', 'green', 'blue'], 'answer': 'green'}
                                      for t in ('grass', 'leaf', 'frog')])
  _write(tmp_path / 'piqa_validation.jsonl', [{'goal': 'g', 'sol1': 'a', 'sol2': 'b', 'label': 1}] * 2)
  res = harness.evaluate_model(model, TOK, ['my_colors'], held_out=['piqa'], data_dir=str(tmp_path),
                               max_length=64, log_samples=True)
  assert set(res.fitness) == {'my_colors'} and set(res.held_out) == {'piqa'}
  assert res.tasks['my_colors'].num_docs == 3 and res.tasks['my_colors'].num_requests == 9
  assert res.tasks['my_colors'].samples[0]['arguments'][1] == ['Color of grass:', ' green']
  out = res.to_dict()
  assert set(out) >= {'fitness', 'held_out', 'tasks', 'timing', 'config'}
  json.dumps(out)
  table = harness.format_table(res)
  assert 'held-out' in table and 'my_colors' in table


# ---------------------------------------------------------------- CLI and restore
def test_cli_on_two_devices_matches_in_process(tmp_path):
  """The CLI end to end, with the batch sharded over 2 (virtual CPU) devices, agrees with one device."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  bad = subprocess.run([sys.executable, '-m', 'aira_jax.evaluate', f'--workdir={tmp_path}', '--tasks=nope'],
                       cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
  assert bad.returncode == 2 and "unknown task 'nope'" in bad.stderr
  _write(tmp_path / 'data' / 'piqa_validation.jsonl',
         [{'goal': f'g{i}', 'sol1': 'a' * i, 'sol2': 'bb', 'label': i % 2} for i in range(5)])
  out = tmp_path / 'res.json'
  overrides = ['--config.model.d_model=32', '--config.model.num_heads=2', '--config.train.seq_len=64']
  ok = subprocess.run([sys.executable, '-m', 'aira_jax.evaluate', '--config=configs/tiny.py:attention', *overrides,
                       '--random_init', '--tasks=piqa', '--limit=3', '--log_samples', f'--data_dir={tmp_path / "data"}',
                       f'--output={out}'], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert '| piqa |' in ok.stdout
  result = json.loads(out.read_text())
  assert result['config']['devices'] == 2 and result['tasks']['piqa']['num_docs'] == 3

  from aira_jax.evaluate.restore import load_run  # pylint: disable=g-import-not-at-top
  from configs.tiny import get_config  # pylint: disable=g-import-not-at-top
  cfg = get_config('attention')
  cfg.model.update(d_model=32, num_heads=2)
  run = load_run(config=cfg, random_init=True)
  mine = harness.evaluate_model(run.model, run.tokenizer, ['piqa'], 3, data_dir=str(tmp_path / 'data'),
                                max_length=64, log_samples=True)
  for a, b in zip(result['tasks']['piqa']['samples'], mine.tasks['piqa'].samples, strict=True):
    assert a['arguments'] == b['arguments']
    assert np.allclose([r[0] for r in a['results']], [r[0] for r in b['results']], atol=1e-4)


def test_restore_trained_run_matches_trainer_validation(tmp_path):
  """load_run's weights reproduce the trainer's own final validation loss."""
  from aira_jax.evaluate import bpb as bpb_lib  # pylint: disable=g-import-not-at-top
  from aira_jax.evaluate.restore import load_run  # pylint: disable=g-import-not-at-top
  from aira_jax.train import base_config, train  # pylint: disable=g-import-not-at-top
  c = base_config()
  c.model.update(d_model=32, num_layers=1, num_heads=2, mlp_hidden=64, design='attention')
  c.data.update(synthetic_num_docs=100, val_docs=4)
  c.train.update(seq_len=32, global_batch=4, max_steps=3, warmup_steps=1, eval_every=0, eval_batches=1,
                 checkpoint_every=0, compute_dtype='float32', tensorboard=False)
  summary = train(c, str(tmp_path))
  run = load_run(tmp_path)
  assert run.step == 3
  val = bpb_lib.evaluate_run_bpb(run.model, run.tokenizer, run.config)
  assert val['loss'] == pytest.approx(summary['final_val_loss'], abs=1e-4)
  fresh = load_run(tmp_path, random_init=True)
  assert bpb_lib.evaluate_run_bpb(fresh.model, fresh.tokenizer, fresh.config)['loss'] != pytest.approx(val['loss'])
  assert load_run(checkpoint=tmp_path / 'checkpoints' / '3').step == 3  # config from the dir above
  assert load_run(checkpoint=tmp_path).step == 3  # a run directory (or a gallery entry) as --checkpoint
  with pytest.raises(FileNotFoundError, match='config.json'):
    load_run(tmp_path / 'checkpoints')
