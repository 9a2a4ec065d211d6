"""Parity of the harness port with lm-eval itself.

lm-eval (its own task YAMLs, preprocessing and metrics, driven through simple_evaluate over local files the
test writes in each task's Hugging Face format) scores a tiny random-init project model through `JaxLM`, an
lm-eval LM doing one plain jitted forward per request. The port scores the same files with its batched,
bucketed scorer. Per-request log-likelihoods must agree to 1e-4, greedy flags and per-document acc/acc_norm
exactly, and the aggregated metrics to float rounding.
"""
import json
import math
import os
import random

import numpy as np
import pytest

pytest.importorskip('lm_eval', reason='lm-eval is a test dependency (pip install lm-eval)')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')  # never the network: the json builder is local
os.environ.setdefault('HF_HUB_OFFLINE', '1')

from flax import nnx  # noqa: E402

from aira_jax.data import ByteTokenizer  # noqa: E402
from aira_jax.evaluate import harness  # noqa: E402
from aira_jax.evaluate import lm_eval_bridge as bridge  # noqa: E402
from aira_jax.models import build_model  # noqa: E402

MAX_LENGTH = 64  # short, so left truncation and several rolling windows per page are exercised
TOL = 1e-4
WORDS = ('the cat sat on a mat while two dogs ran far away from old red barn near green hill under blue sky '
         'and water flows into deep cold lake because warm wind moves light clouds over tall trees').split()


def _phrase(rnd, lo, hi):
  return ' '.join(rnd.choice(WORDS) for _ in range(rnd.randint(lo, hi)))


def _records(rnd: random.Random, n: int = 5) -> dict[str, list[dict]]:
  """Small documents in the Hugging Face formats lm-eval's tasks read (with a few awkward cases)."""
  recs: dict[str, list[dict]] = {k: [] for k in bridge.LM_EVAL_TASKS}
  for i in range(n):
    k = rnd.randint(3, 5)
    labels = [str(j + 1) for j in range(k)] if i % 2 else list('ABCDE'[:k])  # ARC mixes both label styles
    for task in ('arc_easy', 'arc_challenge'):
      recs[task].append({'id': f'q{i}', 'question': _phrase(rnd, 3, 25) + '?',
                         'choices': {'text': [_phrase(rnd, 1, 6) for _ in range(k)], 'label': labels},
                         'answerKey': rnd.choice(labels)})
    recs['openbookqa'].append({'id': f'o{i}', 'question_stem': _phrase(rnd, 3, 15),
                               'choices': {'text': [_phrase(rnd, 1, 5) for _ in range(4)], 'label': list('ABCD')},
                               'answerKey': rnd.choice('ABCD')})
    recs['boolq'].append({'question': _phrase(rnd, 3, 8), 'passage': _phrase(rnd, 5, 30), 'idx': i,
                          'label': rnd.randint(0, 1)})
    recs['hellaswag'].append({'ind': i, 'activity_label': _phrase(rnd, 1, 2), 'ctx_a': _phrase(rnd, 3, 12) + '.',
                              'ctx_b': _phrase(rnd, 1, 3), 'ctx': '', 'split': 'val', 'split_type': 'indomain',
                              'source_id': f's{i}', 'label': str(rnd.randint(0, 3)),
                              'endings': [_phrase(rnd, 1, 6) + (' [title] step [header] two' if j == 1 else '')
                                          for j in range(4)]})
    recs['piqa'].append({'goal': _phrase(rnd, 2, 10), 'sol1': _phrase(rnd, 1, 8), 'sol2': _phrase(rnd, 1, 8),
                         'label': rnd.randint(0, 1)})
    recs['social_iqa'].append({'context': _phrase(rnd, 4, 12) + '.', 'question': _phrase(rnd, 2, 5) + '?',
                               'answerA': _phrase(rnd, 1, 4), 'answerB': _phrase(rnd, 1, 4),
                               'answerC': _phrase(rnd, 1, 4), 'label': str(rnd.randint(1, 3))})
    recs['winogrande'].append({'sentence': f'{_phrase(rnd, 2, 8)} _ {_phrase(rnd, 2, 8)}.',
                               'option1': _phrase(rnd, 1, 2), 'option2': _phrase(rnd, 1, 2),
                               'answer': rnd.choice('12')})
    recs['lambada_openai'].append({'text': _phrase(rnd, 5, 30)})
    heading = f' = {_phrase(rnd, 1, 3)} = \n'
    body = ' \n'.join(f' {_phrase(rnd, 5, 20)} @-@ {_phrase(rnd, 1, 4)} , {_phrase(rnd, 2, 9)} . '
                      for _ in range(rnd.randint(1, 3)))
    recs['wikitext'].append({'page': heading + body + f'\n = = {_phrase(rnd, 1, 2)} = = \n'})
  return recs


def _port_file(task: str) -> str:
  return next(f for f in harness.get_task(task).data_files if f.endswith('.jsonl'))


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp('parity')
  recs = _records(random.Random(0))
  files = {t: bridge.write_jsonl(rows, root / 'data' / _port_file(t)) for t, rows in recs.items()}
  names = bridge.write_lm_eval_tasks(root / 'tasks', files, cache_dir=root / 'hf_cache')
  return root, names, _model('attention'), ByteTokenizer()


def _model(design: str):
  return build_model({'vocab_size': 259, 'd_model': 32, 'num_layers': 2, 'num_heads': 2, 'design': design,
                      'init_std': 0.1}, rngs=nnx.Rngs(0))


def _flat(x):
  return x[0] if isinstance(x, (list, tuple)) else x


def _compare(ref: dict, port: harness.TaskResult, task: str) -> None:
  assert len(ref['samples']) == len(port.samples), task
  for a, b in zip(sorted(ref['samples'], key=lambda s: s['doc_id']), port.samples, strict=True):
    assert a['doc_id'] == b['doc_id'], task
    assert [list(x) for x in a['arguments']] == b['arguments'], f'{task} doc {a["doc_id"]}: prompts differ'
    for ra, pb in zip(a['filtered_resps'], b['results'], strict=True):
      if isinstance(ra, (list, tuple)):  # (loglikelihood, is_greedy)
        assert abs(ra[0] - pb[0]) <= TOL, f'{task} doc {a["doc_id"]}: ll {ra[0]} vs {pb[0]}'
        assert bool(ra[1]) == bool(pb[1]), f'{task} doc {a["doc_id"]}: greedy flags differ'
      else:
        assert abs(ra - pb) <= TOL, f'{task} doc {a["doc_id"]}: rolling ll {ra} vs {pb}'
    for m in port.metrics:
      if m in ('acc', 'acc_norm'):
        assert a[m] == b[m], f'{task} doc {a["doc_id"]}: {m} {a[m]} vs {b[m]}'
  for m, v in port.metrics.items():
    assert math.isclose(ref['metrics'][m], v, rel_tol=1e-4, abs_tol=1e-9), f'{task} {m}: {ref["metrics"][m]} vs {v}'


@pytest.mark.parametrize('design', ['attention', 'gated_deltanet'])
def test_zero_shot_parity_all_tasks(setup, design):
  root, names, model, tok = setup
  model = model if design == 'attention' else _model(design)  # a softmax and a recurrent mixer
  lm = bridge.JaxLM(model, tok, max_length=MAX_LENGTH)
  ref = bridge.run_lm_eval(lm, root / 'tasks', names)
  port = harness.evaluate_model(model, tok, list(names), data_dir=str(root / 'data'), data_source='local',
                                max_length=MAX_LENGTH, max_batch_tokens=1024, log_samples=True)
  for task in names:
    _compare(ref[task], port.tasks[task], task)
  # The comparison is not vacuous: contexts were truncated and pages split into several windows.
  assert any(len(a[0]) > MAX_LENGTH for s in port.tasks['boolq'].samples for a in s['arguments'])
  assert lm.forward_calls > sum(r.num_requests for r in port.tasks.values())


def test_seeded_sample_and_fewshot_parity(setup):
  root, names, model, tok = setup
  sub = {t: names[t] for t in ('arc_easy', 'winogrande', 'lambada_openai')}
  port = harness.evaluate_model(model, tok, list(sub), limit=3, sample_seed=7, num_fewshot=2,
                                data_dir=str(root / 'data'), data_source='local', max_length=MAX_LENGTH,
                                log_samples=True)
  ids = {t: [s['doc_id'] for s in port.tasks[t].samples] for t in sub}
  assert ids['arc_easy'] == harness.select_indices(5, 3, 7) and ids['arc_easy'] != [0, 1, 2]
  ref = bridge.run_lm_eval(bridge.JaxLM(model, tok, max_length=MAX_LENGTH), root / 'tasks', sub, samples=ids,
                           num_fewshot=2)
  for task in sub:
    _compare(ref[task], port.tasks[task], task)
  assert '\n\n' in port.tasks['arc_easy'].samples[0]['arguments'][0][0]  # the examples are really there
  # The benchmarks' summary (bridge.compare) agrees, and notices a changed score.
  cmp = bridge.compare(ref, port)
  assert all(c['prompt_mismatches'] == c['greedy_mismatches'] == 0 and not c['doc_metric_mismatches']
             and c['max_abs_ll_diff'] <= TOL for c in cmp.values())
  ll, greedy = port.tasks['arc_easy'].samples[0]['results'][0]
  port.tasks['arc_easy'].samples[0]['results'][0] = (ll - 1.0, greedy)
  assert bridge.compare(ref, port)['arc_easy']['max_abs_ll_diff'] >= 1.0 - TOL


def test_bridge_converts_shared_formats(tmp_path):
  """The shared data's own forms convert to lm-eval's rows that the port reads to the same prompts."""
  shared = {
      'arc_easy': [{'id': 'x', 'query': 'Question: Why?\nAnswer:', 'choices': ['a', 'b c'], 'gold': 1}],
      'boolq': [{'question': 'is it', 'passage': 'It is.', 'answer': True}],
      'lambada_openai': [{'context': 'one two\nthree', 'continuation': 'four'}],
  }
  for task, rows in shared.items():
    t = harness.get_task(task)
    a = [t.construct_requests(d, t.fewshot_context(d)) for d in map(t.parse_record, rows)]
    b = [t.construct_requests(d, t.fewshot_context(d))
         for d in map(t.parse_record, bridge.to_lm_eval_records(task, rows))]
    assert a == b, task
  assert bridge.to_lm_eval_records('arc_easy', shared['arc_easy'])[0]['answerKey'] == 'B'
  raw = ' = A = \r\n x @-@ y \r\n = = B = = \r\n z \r\n = C = \r\n w \r\n'
  assert [p['page'] for p in bridge.wikitext_pages(raw)] == [' = A = \n x @-@ y \n = = B = = \n z ', ' = C = \n w \n']
  json.dumps(bridge.wikitext_pages(raw))


def test_jaxlm_padding_is_invisible(setup):
  """The reference's right padding cannot change a causal model's scores (padded vs unpadded forward)."""
  _, _, model, tok = setup
  ctx, cont = tok.encode('the cat sat on'), tok.encode(' a mat')
  a = bridge.JaxLM(model, tok, max_length=MAX_LENGTH, pad_to='max_length').score_tokens(ctx, cont)
  b = bridge.JaxLM(model, tok, max_length=MAX_LENGTH, pad_to='pow2').score_tokens(ctx, cont)
  logits = np.asarray(model(np.asarray([ctx + cont[:-1]], np.int32))[0], np.float64)
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(
      -1, keepdims=True)
  direct = sum(logp[len(ctx) - 1 + i, t] for i, t in enumerate(cont))
  assert abs(a[0] - direct) < TOL and abs(b[0] - direct) < TOL and a[1] == b[1]


def test_batched_jaxlm_scores_like_one_request_per_forward(setup):
  """batch_size > 1 (lm-eval's HFLM batching: longest first, padded batches) changes the speed, not the scores:
  the same results in request order, through lm-eval too, in fewer forward calls."""
  root, names, model, tok = setup
  rnd = random.Random(3)
  pairs = [(tok.encode(_phrase(rnd, 1, 30)), tok.encode(' ' + _phrase(rnd, 1, 4))) for _ in range(11)]
  pairs.append((tok.encode(_phrase(rnd, 40, 60)), tok.encode(' end')))  # truncated on the left
  one = bridge.JaxLM(model, tok, max_length=MAX_LENGTH, pad_to='pow2')
  four = bridge.JaxLM(model, tok, max_length=MAX_LENGTH, pad_to='pow2', batch_size=4)
  requests = [(None, c, x) for c, x in pairs]
  a, b = one._loglikelihood_tokens(requests), four._loglikelihood_tokens(requests)
  assert len(a) == len(b) == 12 and one.forward_calls == 12 and four.forward_calls == 3
  for (la, ga), (lb, gb) in zip(a, b, strict=True):
    assert abs(la - lb) <= TOL and ga == gb
  assert len({round(ll, 3) for ll, _ in a}) > 6  # distinct requests: a shuffled order would not pass
  sub = {t: names[t] for t in ('arc_easy', 'wikitext')}  # multiple choice and rolling windows
  ref = bridge.run_lm_eval(bridge.JaxLM(model, tok, max_length=MAX_LENGTH), root / 'tasks', sub)
  got = bridge.run_lm_eval(bridge.JaxLM(model, tok, max_length=MAX_LENGTH, batch_size=8), root / 'tasks', sub)
  for task in sub:
    assert got[task]['metrics'] == pytest.approx(ref[task]['metrics'], rel=1e-4), task
  with pytest.raises(ValueError, match='batch_size must be at least 1'):
    bridge.JaxLM(model, tok, batch_size=0)
