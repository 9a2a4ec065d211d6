"""Harness port vs lm-eval on the real task data: the same tiny random-init model, the same documents.

    python bench/harness_parity.py                      # 200 docs per task, CPU, ~ a few minutes
    python bench/harness_parity.py --limit=20 --tasks=arc_easy,piqa

lm-eval (installed: `pip install lm-eval`) runs its own task YAMLs over the shared files rewritten in its
Hugging Face formats and scores them through JaxLM (one plain forward per request); the port reads the shared
files directly. Prints both systems' scores and the request-level agreement; writes
bench/results/harness_parity_<date>.{json,md}.
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

_TASKS = flags.DEFINE_list('tasks', ['arc_easy', 'arc_challenge', 'boolq', 'hellaswag', 'piqa', 'social_iqa',
                                     'winogrande', 'lambada_openai', 'wikitext'], 'Tasks to compare.')
_LIMIT = flags.DEFINE_integer('limit', 200, 'First N docs per task.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Task data (default: <repo>/../shared/data/harness).')
_MAX_LENGTH = flags.DEFINE_integer('max_length', 1024, 'Model context (bytes: the tokenizer is bytes).')
_DESIGN = flags.DEFINE_string('design', 'attention', 'Mixer of the tiny model.')
_OUT = flags.DEFINE_string('out', str(Path(__file__).resolve().parent / 'results'), 'Results directory.')

TOL = 1e-4


def _table(cmp: dict) -> str:
  lines = ['| task | metric | lm-eval | port | requests | max abs Δll | max rel Δll | mismatches: prompt / greedy / '
           'doc acc |', '|---|---|---:|---:|---:|---:|---:|---|']
  for task, s in cmp.items():
    mism = f"{s['prompt_mismatches']} / {s['greedy_mismatches']} / {sum(s['doc_metric_mismatches'].values())}"
    for i, (m, v) in enumerate(s['metrics'].items()):
      cells = [task, str(s['requests']), f"{s['max_abs_ll_diff']:.2e}", f"{s['max_rel_ll_diff']:.2e}", mism]
      if i:
        cells = [''] * len(cells)
      lines.append(f"| {cells[0]} | {m} | {v['lm_eval']:.6g} | {v['port']:.6g} | {cells[1]} | {cells[2]} | "
                   f"{cells[3]} | {cells[4]} |")
  return '\n'.join(lines)


def main(argv):
  del argv
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  from aira_jax.data import ByteTokenizer  # pylint: disable=g-import-not-at-top
  from aira_jax.evaluate import harness  # pylint: disable=g-import-not-at-top
  from aira_jax.evaluate import lm_eval_bridge as bridge  # pylint: disable=g-import-not-at-top
  from aira_jax.models import build_model, count_params  # pylint: disable=g-import-not-at-top

  data_dir = Path(_DATA_DIR.value) if _DATA_DIR.value else harness.default_data_dir()
  tasks = list(_TASKS.value)
  tok = ByteTokenizer()
  model_cfg = {'vocab_size': tok.vocab_size, 'd_model': 64, 'num_layers': 2, 'num_heads': 4,
               'design': _DESIGN.value, 'init_std': 0.1}
  model = build_model(model_cfg, rngs=nnx.Rngs(0))
  with tempfile.TemporaryDirectory() as tmp:
    files = bridge.prepare_lm_eval_data(tasks, data_dir, Path(tmp) / 'data', max_records=_LIMIT.value)
    names = bridge.write_lm_eval_tasks(Path(tmp) / 'tasks', files, cache_dir=Path(tmp) / 'hf_cache')
    lm = bridge.JaxLM(model, tok, max_length=_MAX_LENGTH.value, pad_to='pow2')
    t0 = time.time()
    ref = bridge.run_lm_eval(lm, Path(tmp) / 'tasks', names, limit=_LIMIT.value)
    t_ref = time.time() - t0
  t0 = time.time()
  port = harness.evaluate_model(model, tok, tasks, _LIMIT.value, data_dir=str(data_dir), data_source='local',
                                max_length=_MAX_LENGTH.value, log_samples=True)
  t_port = time.time() - t0
  cmp = bridge.compare(ref, port)

  ok = all(s['prompt_mismatches'] == 0 and s['greedy_mismatches'] == 0 and not s['doc_metric_mismatches']
           and (s['max_abs_ll_diff'] <= TOL or s['max_rel_ll_diff'] <= 1e-7) for s in cmp.values())
  table = _table(cmp)
  date = datetime.date.today().isoformat()
  header = (f'# Harness parity, {date}\n\nTiny random-init {_DESIGN.value} model ({count_params(model)["total"]:,} '
            f'params, byte tokenizer, float32, max_length {_MAX_LENGTH.value}) on {jax.devices()[0].platform}; '
            f'first {_LIMIT.value} docs per task from {data_dir}.\nlm-eval {bridge.lm_eval.__version__} '
            f'({t_ref:.1f} s) vs port ({t_port:.1f} s). Parity (prompts, greedy flags and per-doc acc identical; '
            f'log-likelihoods within {TOL} absolute or 1e-7 relative): **{"PASS" if ok else "FAIL"}**\n')
  print(header)
  print(table)
  out = Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  (out / f'harness_parity_{date}.md').write_text(header + '\n' + table + '\n', encoding='utf-8')
  (out / f'harness_parity_{date}.json').write_text(json.dumps(
      {'date': date, 'pass': ok, 'limit': _LIMIT.value, 'max_length': _MAX_LENGTH.value, 'model': model_cfg,
       'lm_eval_version': bridge.lm_eval.__version__, 'seconds': {'lm_eval': t_ref, 'port': t_port},
       'platform': jax.devices()[0].platform, 'tasks': cmp}, indent=2), encoding='utf-8')
  logging.info('wrote %s', out)
  if not ok:
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
