"""Items/s of the harness port vs lm-eval driving the same JAX model (plain jitted forwards, batch 1 and batched).

    python bench/harness_speed.py --data_dir=/path/to/harness            # GPU: explore scale, 500 docs/task
    python bench/harness_speed.py --quick                                # CPU smoke check, about a minute

Model: the exploration scale of configs/explore.py (8 layers, d_model 256, 8 heads; --design picks the
mixer) with random weights (speed does not depend on them) and a sentencepiece tokenizer of --spm_vocab
pieces trained on the folder's WikiText file in a second (or --spm_model). Runs offline; lm-eval is optional
(without it only the port is timed).

Timing: the port is timed twice on the same documents, cold (compiles included) and warm. lm-eval runs twice:
with one request per forward (batch 1, lm-eval's default batch size) and with --lm_eval_batch requests per
forward, batched as lm-eval's HFLM does (longest first, each batch padded to its longest); each after its forward
is compiled for every padded length it can meet, so no number is compile time. The port's speedup is given
against both. Items are documents. Writes bench/results/harness_speed_<date>[_quick].{json,md}.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

ALL_TASKS = ['arc_easy', 'arc_challenge', 'boolq', 'hellaswag', 'piqa', 'social_iqa', 'winogrande',
             'lambada_openai', 'wikitext']
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Task data folder (default: <repo>/../shared/data/harness).')
_TASKS = flags.DEFINE_list('tasks', ALL_TASKS, 'Tasks.')
_LIMIT = flags.DEFINE_integer('limit', 500, 'First N docs per task.')
_DESIGN = flags.DEFINE_string('design', 'deltanet', 'Mixer (a baseline name) of the explore-scale model.')
_SPM_VOCAB = flags.DEFINE_integer('spm_vocab', 32000, 'Pieces of the sentencepiece tokenizer trained here.')
_SPM_MODEL = flags.DEFINE_string('spm_model', None, 'An existing sentencepiece .model instead.')
_MAX_LENGTH = flags.DEFINE_integer('max_length', 2048, 'Model context.')
_BATCH_TOKENS = flags.DEFINE_integer('max_batch_tokens', 0, 'Port: batch * padded length per step (0: auto).')
_DTYPE = flags.DEFINE_string('dtype', '', 'Compute dtype (default bfloat16 on GPU/TPU, float32 on CPU).')
_SKIP_LM_EVAL = flags.DEFINE_bool('skip_lm_eval', False, 'Time the port only.')
_LM_EVAL_BATCH = flags.DEFINE_integer('lm_eval_batch', 64, 'lm-eval\'s second run: requests per forward (0: skip).')
_QUICK = flags.DEFINE_bool('quick', False, 'CPU check: tiny model, 8 docs per task, max_length 256.')
_OUT = flags.DEFINE_string('out', str(REPO / 'bench' / 'results'), 'Results directory.')


def _tokenizer(data_dir: Path, vocab: int, model_path: str | None):
  from aira_jax.data import SentencePieceTokenizer, SentencePieceTrainOptions  # pylint: disable=g-import-not-at-top
  from aira_jax.evaluate.harness import data as data_lib  # pylint: disable=g-import-not-at-top
  from aira_jax.evaluate.harness.tasks import wikitext  # pylint: disable=g-import-not-at-top
  if model_path:
    return SentencePieceTokenizer.load(model_path)
  path = data_lib.find_file(data_dir, wikitext.RAW_FILES)
  if path is None:
    raise FileNotFoundError(f'no WikiText raw file in {data_dir} to train the tokenizer on; pass --spm_model')
  text = data_lib.read_text(path)
  docs = [text[i:i + 20000] for i in range(0, len(text), 20000)]
  return SentencePieceTokenizer.train(docs, None, SentencePieceTrainOptions(vocab_size=vocab, max_docs=len(docs)))


def _model_config(vocab_size: int, quick: bool) -> dict:
  from configs.explore import get_config  # pylint: disable=g-import-not-at-top
  cfg = get_config(_DESIGN.value).model.to_dict()
  cfg['vocab_size'] = vocab_size
  if quick:
    cfg.update(d_model=64, num_layers=2, num_heads=4)
  return cfg


def _precompile(lm, max_length: int) -> float:
  """Compiles JaxLM's forward for every power-of-two length it pads to (kept out of its timing)."""
  t0 = time.time()
  n = 16
  while True:
    length = min(n, max_length)
    lm.score_tokens([1] * (length - 1), [1])
    if length >= max_length:
      break
    n *= 2
  return time.time() - t0


def main(argv):
  del argv
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  from aira_jax.evaluate import harness  # pylint: disable=g-import-not-at-top
  from aira_jax.models import build_model, count_params  # pylint: disable=g-import-not-at-top

  quick = _QUICK.value
  limit = 8 if quick else _LIMIT.value
  max_length = 256 if quick else _MAX_LENGTH.value
  platform = jax.devices()[0].platform
  dtype = _DTYPE.value or ('float32' if platform == 'cpu' else 'bfloat16')
  data_dir = Path(_DATA_DIR.value) if _DATA_DIR.value else harness.default_data_dir()
  tasks = list(_TASKS.value)

  tok = _tokenizer(data_dir, 4096 if quick else _SPM_VOCAB.value, _SPM_MODEL.value)
  model_cfg = _model_config(tok.vocab_size, quick)
  model = build_model(model_cfg, rngs=nnx.Rngs(0))
  params = count_params(model)['total']
  logging.info('model %s: %d params, vocab %d, dtype %s', model_cfg['design'], params, tok.vocab_size, dtype)

  # One scorer for both port runs: the second reuses its compiled shapes.
  scorer = harness.Scorer(model, harness.ScorerConfig(max_length=max_length, max_batch_tokens=_BATCH_TOKENS.value,
                                                      compute_dtype=dtype, pad_id=max(tok.pad_id, 0)))
  eval_cfg = harness.EvalConfig(limit=limit, data_dir=str(data_dir), data_source='local', log_samples=True)

  def run_port():
    t0 = time.time()
    res = harness.evaluate(scorer, tok, tasks, eval_cfg)
    return res, time.time() - t0

  port_cold, t_cold = run_port()
  port_warm, t_warm = run_port()
  docs = port_warm.timing['docs']
  rows = [{'system': 'port (cold: compiles included)', 'docs': docs, 'seconds': t_cold},
          {'system': 'port (warm)', 'docs': docs, 'seconds': t_warm}]

  baseline, batched, agreement, lm_eval_version, precompile_s = None, None, None, None, {}
  if not _SKIP_LM_EVAL.value:
    try:
      from aira_jax.evaluate import lm_eval_bridge as bridge  # pylint: disable=g-import-not-at-top
      lm_eval_version = bridge.lm_eval.__version__
    except ImportError as e:
      logging.warning('lm-eval is not installed (%s): timing the port only', e)
      bridge = None
    if bridge is not None:
      with tempfile.TemporaryDirectory() as tmp:
        files = bridge.prepare_lm_eval_data(tasks, data_dir, Path(tmp) / 'data', max_records=limit)
        names = bridge.write_lm_eval_tasks(Path(tmp) / 'tasks', files, cache_dir=Path(tmp) / 'hf_cache')

        def run_lm_eval(batch_size):
          lm = bridge.JaxLM(model, tok, max_length=max_length, pad_to='pow2', compute_dtype=dtype,
                            batch_size=batch_size)
          precompile_s[batch_size] = _precompile(lm, max_length)
          t0 = time.time()
          out = bridge.run_lm_eval(lm, Path(tmp) / 'tasks', names, limit=limit)
          how = ('one request per forward (batch 1)' if batch_size == 1 else
                 f'batched JAX forward ({batch_size} requests, longest first)')
          return out, {'system': f'lm-eval {lm_eval_version}, {how}', 'docs': docs, 'seconds': time.time() - t0,
                       'forward_calls': lm.forward_calls, 'batch_size': batch_size}

        ref, baseline = run_lm_eval(1)
        rows.insert(0, baseline)
        if _LM_EVAL_BATCH.value > 1:
          _, batched = run_lm_eval(_LM_EVAL_BATCH.value)
          rows.insert(1, batched)
      cmp = bridge.compare(ref, port_warm)
      agreement = {t: {k: s[k] for k in ('requests', 'prompt_mismatches', 'max_abs_ll_diff', 'greedy_mismatches',
                                         'doc_metric_mismatches')} for t, s in cmp.items()}

  for r in rows:
    r['docs_per_second'] = r['docs'] / r['seconds']
    if baseline:
      r['speedup_vs_lm_eval'] = r['docs_per_second'] / (baseline['docs'] / baseline['seconds'])
    if batched:
      r['speedup_vs_lm_eval_batched'] = r['docs_per_second'] / (batched['docs'] / batched['seconds'])
  date = datetime.date.today().isoformat()
  device = f'{jax.device_count()} x {jax.devices()[0].device_kind}'
  lines = [f'# Harness speed, {date}{" (quick)" if quick else ""}', '',
           f'{model_cfg["design"]} model, {model_cfg["num_layers"]} layers, d_model {model_cfg["d_model"]}, '
           f'{params:,} params, vocab {tok.vocab_size}, {dtype}, max_length {max_length}, on {device}; '
           f'{len(tasks)} tasks, first {limit} docs each ({docs} docs, {port_warm.timing["rows"]} port rows, '
           f'{port_warm.timing["scored_tokens"]:,} tokens).', '',
           '| system | docs | seconds | docs/s | speedup vs lm-eval (batch 1) | vs lm-eval batched |',
           '|---|---:|---:|---:|---:|---:|']
  speed = lambda r, k: f'{r[k]:.1f}x' if k in r else 'n/a'  # noqa: E731
  for r in rows:
    lines.append(f"| {r['system']} | {r['docs']} | {r['seconds']:.1f} | {r['docs_per_second']:.1f} | "
                 f"{speed(r, 'speedup_vs_lm_eval')} | {speed(r, 'speedup_vs_lm_eval_batched')} |")
  if baseline is None:
    lines.append('\nlm-eval baseline not run (not installed or --skip_lm_eval).')
  else:
    lines.append('\nlm-eval forwards precompiled for all padded lengths (not timed): '
                 + ', '.join(f'batch {b} in {s:.1f} s' for b, s in precompile_s.items()) + '; forward calls: '
                 + ', '.join(f'{r["forward_calls"]} at batch {r["batch_size"]}' for r in (baseline, batched) if r)
                 + '.')
    worst = max(a['max_abs_ll_diff'] for a in agreement.values())
    mism = sum(a['prompt_mismatches'] + a['greedy_mismatches'] + sum(a['doc_metric_mismatches'].values())
               for a in agreement.values())
    lines.append(f'Agreement ({dtype}): max |Δll| {worst:.2e}; prompt/greedy/per-doc-acc mismatches: {mism}.')
  text = '\n'.join(lines)
  print(text)
  out = Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  stem = f'harness_speed_{date}{"_quick" if quick else ""}'
  (out / f'{stem}.md').write_text(text + '\n', encoding='utf-8')
  (out / f'{stem}.json').write_text(json.dumps(
      {'date': date, 'quick': quick, 'device': device, 'dtype': dtype, 'model': model_cfg, 'params': params,
       'limit': limit, 'max_length': max_length, 'tasks': tasks, 'rows': rows, 'lm_eval_version': lm_eval_version,
       'lm_eval_precompile_seconds': precompile_s, 'port_timing_cold': port_cold.timing,
       'port_timing_warm': port_warm.timing, 'port_metrics': port_warm.fitness, 'agreement': agreement},
      indent=2, default=str), encoding='utf-8')
  print(f'wrote {out / stem}.{{md,json}}')


if __name__ == '__main__':
  app.run(main)
