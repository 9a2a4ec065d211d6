"""Overhead of one discovery experiment (gates + child start + setup/compile + evaluation) vs. its training run.

    python bench/overhead.py --quick                 # tiny, CPU: the whole run is measured (minutes)
    python bench/overhead.py                         # GPU, ASI-Arch exploration scale (configs/explore.py sizes)

What runs is what a discovery worker does: the Checker's gates on the design program (check_program, default
settings), then the Engineer on a one-experiment store: a training child (process start, imports, data, model
init, compile, the training steps, final validation and checkpoint) and the harness tasks with --eval_limit.

Default (GPU) mode: the exploration scale is 2,000 steps at batch 256, T=2048 (~1B tokens); that full run takes too
long for a benchmark, so only --measure_steps steps are trained, the median step time is measured, and the full
run's training time is EXTRAPOLATED as full_steps x median step time (the output says so). Data: the synthetic
language with the byte tokenizer but a 32k-entry embedding and head (model.vocab_size=32000), so the FLOPs match the
paper's 32k vocabulary without needing FineWeb or its tokenizer offline.

Overhead fraction = (everything but the training steps) / (training steps of the full run). Writes the table to
bench/results/overhead_<date>_<cpu|gpu>.md (--out), and prints it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform as platform_lib
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from aira_jax.discovery.engineer import Engineer, EngineerSettings  # noqa: E402
from aira_jax.discovery.gates import GateSettings  # noqa: E402
from aira_jax.discovery.records import Design  # noqa: E402
from aira_jax.discovery.sandbox import check_program  # noqa: E402
from aira_jax.discovery.store import ExperimentStore  # noqa: E402
from aira_jax.models import baseline_source  # noqa: E402
from aira_jax.models.scales import get_scale  # noqa: E402
from aira_jax.train.config import base_config  # noqa: E402

QUICK_TASKS = 'piqa,arc_easy'
FULL_TASKS = 'arc_easy,arc_challenge,boolq,hellaswag,piqa,social_iqa,winogrande,lambada_openai'


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--quick', action='store_true', help='tiny CPU run, measured whole (no extrapolation)')
  p.add_argument('--design', default='deltanet', help='baseline design program to run (default deltanet)')
  p.add_argument('--measure_steps', type=int, default=None, help='steps actually trained (quick: 200; GPU: 30)')
  p.add_argument('--full_steps', type=int, default=None, help='steps of the full run (quick: = measure; GPU: 2000)')
  p.add_argument('--global_batch', type=int, default=None, help='sequences per step (quick: 8; GPU: 256)')
  p.add_argument('--grad_accum', type=int, default=None, help='microbatches per step (quick: 1; GPU: 4)')
  p.add_argument('--seq_len', type=int, default=None, help='quick: 128; GPU: 2048')
  p.add_argument('--data_source', default='synthetic', help="trainer data.source ('synthetic', 'openstax', ...)")
  p.add_argument('--tasks', default=None, help=f'harness tasks (quick: {QUICK_TASKS}; GPU: {FULL_TASKS})')
  p.add_argument('--eval_limit', type=int, default=None, help='docs per task (quick: 10; GPU: 100)')
  p.add_argument('--platform', default=None, help="training child's JAX_PLATFORMS (quick: cpu; GPU: '' = auto)")
  p.add_argument('--skip_gates', action='store_true', help='leave out the Checker (reported as not measured)')
  p.add_argument('--out', default=os.path.join(ROOT, 'bench', 'results'), help="result directory ('-': none)")
  p.add_argument('--workdir', default=None, help='where runs go (default: a temporary directory)')
  args = p.parse_args(argv)
  quick = args.quick
  defaults = dict(measure_steps=200 if quick else 30, global_batch=8 if quick else 256,
                  grad_accum=1 if quick else 4, seq_len=128 if quick else 2048,
                  tasks=QUICK_TASKS if quick else FULL_TASKS, eval_limit=10 if quick else 100,
                  platform='cpu' if quick else '')
  for key, value in defaults.items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  if args.full_steps is None:
    args.full_steps = args.measure_steps if quick else 2000
  if args.measure_steps < 10 or args.full_steps < args.measure_steps:
    p.error('need --measure_steps >= 10 and --full_steps >= --measure_steps')
  return args


def train_config(args: argparse.Namespace):
  c = base_config()
  if args.quick:
    c.model.update(get_scale('tiny'))
    c.model.d_model, c.model.num_heads = 128, 4
    c.train.compute_dtype = 'float32'  # CPUs have no fast bf16 matmul
  else:
    c.model.update(get_scale('explore'))
    c.model.vocab_size = 32000  # the paper's vocabulary size (the byte tokenizer uses the first 259 ids)
  c.data.source = args.data_source
  c.data.tokenizer = 'byte'
  c.data.val_docs = 64 if args.quick else 512  # the GPU run's 4 eval batches of 32 x 2048 tokens
  c.train.seq_len = args.seq_len
  c.train.global_batch = args.global_batch
  c.train.grad_accum = args.grad_accum
  c.train.max_steps = args.measure_steps  # the learning-rate schedule does not change the step time
  c.train.max_seconds = 0.0
  c.train.lr = 3e-4
  c.train.warmup_steps = min(100, args.measure_steps // 2)
  c.train.eval_every = 0  # only the final validation (periodic validation is part of training, not overhead)
  c.train.eval_batches = 4
  c.train.eval_batch_size = min(args.global_batch, 32)
  c.train.log_every = 1 if args.quick else 5
  c.train.checkpoint_every = 0  # only the final checkpoint
  c.train.tensorboard = False
  return c


def measure(args: argparse.Namespace, workdir: str) -> dict:
  source = baseline_source(args.design)
  row: dict = {'design': args.design}
  if args.skip_gates:
    row['gates_s'] = None
  else:
    t = time.perf_counter()
    verdict = check_program(source, args.design, GateSettings())
    row['gates_s'] = time.perf_counter() - t
    row['gates_ok'] = verdict.ok
    if not verdict.ok:
      print(f'warning: the Checker rejected {args.design} at {verdict.gate}: {verdict.reason}', file=sys.stderr)

  store = ExperimentStore(os.path.join(workdir, 'store.sqlite'))
  _, exp = store.propose(Design(name=args.design, kind='program', source=source))
  store.transition(exp.id, 'checked')
  cfg = train_config(args)
  settings = EngineerSettings(train=cfg, eval_tasks=tuple(t for t in args.tasks.split(',') if t),
                              eval_limit=args.eval_limit, workdir_root=os.path.join(workdir, 'runs'),
                              timeout_s=3600.0, eval_timeout_s=3600.0, memory_mb=0, platform=args.platform,
                              lease_s=600.0, heartbeat_s=30.0)
  engineer = Engineer(store, settings, worker_id='bench')
  claim = store.claim('bench', lease_s=settings.lease_s)
  result = engineer.run_claim(claim)
  if result is None:
    exp = store.get_experiment(exp.id)
    raise SystemExit(f'the training run failed: {exp.reason[:3000]}')
  return {**row, **breakdown(result, args)}


def _events(child_dir: str) -> dict[str, dict]:
  out = {}
  with open(os.path.join(child_dir, 'events.jsonl'), encoding='utf-8') as f:
    for line in f:
      event = json.loads(line)
      out.setdefault(event['event'], event)
  return out


def breakdown(result, args: argparse.Namespace) -> dict:
  meta = result.meta
  summary = meta['summaries']['0']
  child_dir = meta['child_dir']
  ev = _events(child_dir)
  metrics = os.path.join(meta['workdir'], 'seed-0', 'metrics.jsonl')
  step_times = []
  with open(metrics, encoding='utf-8') as f:
    for line in f:
      rec = json.loads(line)
      if rec.get('kind') == 'train' and isinstance(rec.get('step_time'), (int, float)):
        step_times.append(rec['step_time'])
  step_s = statistics.median(step_times[1:] or step_times)  # the first interval may still be warming up
  steps = int(summary['steps'])
  steps_s = steps * step_s
  setup_compile = summary['wall_seconds'] - summary['loop_seconds']
  compile_s = summary.get('compile_seconds')
  harness = (ev['eval_done']['time'] - ev['eval_start']['time']) if 'eval_done' in ev else 0.0
  start = ev['seed_start']['time'] - meta['child_started_at']
  final_eval = max(summary['loop_seconds'] - steps_s, 0.0)
  trainer_exit = (ev['seed_done']['time'] - ev['seed_start']['time']) - summary['wall_seconds']
  accounted = start + setup_compile + steps_s + final_eval + trainer_exit + harness
  other = max(result.wall_time_s - accounted, 0.0)
  full_s = args.full_steps * step_s
  overhead = start + setup_compile + final_eval + trainer_exit + harness + other
  return {'steps_measured': steps, 'step_s': step_s, 'steps_s': steps_s, 'full_steps': args.full_steps,
          'full_train_s': full_s, 'extrapolated': args.full_steps != steps, 'child_start_s': start,
          'setup_compile_s': setup_compile, 'compile_s': compile_s, 'final_eval_ckpt_s': final_eval,
          'trainer_exit_s': trainer_exit, 'harness_s': harness, 'other_s': other,
          'overhead_wo_gates_s': overhead, 'engineer_wall_s': result.wall_time_s,
          'params': result.num_params, 'tokens_per_s': result.throughput,
          'scores': result.benchmark_scores, 'skipped': meta.get('eval_skipped', {}),
          'device': summary.get('device_kind'), 'val_loss': result.val_loss, 'ops': summary.get('ops'),
          'kernel_retry': meta.get('kernel_retry')}


def _ops_text(ops) -> str:
  if not isinstance(ops, dict):
    return 'not recorded'
  text = f"Pallas kernels for {', '.join(ops['kernels'])}" if ops.get('kernels') else 'XLA ops only'
  for name, why in (ops.get('set_aside') or {}).items():
    text += f"; {name} SET ASIDE ({why[:200]})"
  test = ops.get('self_test')
  if isinstance(test, dict) and (test.get('ok') or test.get('failed')):
    passed = ', '.join(f'{op} {err:.2g}' for op, err in sorted((test.get('ok') or {}).items()))
    text += (f"; kernel self-test vs XLA ({float(test.get('seconds') or 0):.1f} s): "
             f"{'passed, worst relative RMS ' + passed if passed else ''}"
             f"{'; FAILED ' + ', '.join(sorted(test['failed'])) if test.get('failed') else ''}")
  return text


def _retry_text(retry) -> str:
  """The Engineer's kernel retry, when the first run failed with kernels in use (its time is in the wall time)."""
  if not isinstance(retry, dict):
    return ''
  return (f"KERNEL RETRY: the first run failed with the Pallas kernel(s) {', '.join(retry.get('kernels') or [])} in "
          f"use ({str(retry.get('failure', ''))[:200]}) and was trained again without them: "
          f"{retry.get('verdict', '?')}; the Engineer's wall time below includes the failed run.")


def report(row: dict, args: argparse.Namespace) -> str:
  gates = row.get('gates_s')
  overhead = row['overhead_wo_gates_s'] + (gates or 0.0)
  full = row['full_train_s']
  frac = overhead / full if full else float('nan')

  def fmt(v):
    return 'not measured' if v is None else f'{v:.1f}'

  mode = 'quick (tiny, CPU)' if args.quick else 'exploration scale'
  how = (f"training time EXTRAPOLATED: {row['steps_measured']} steps measured, median {row['step_s'] * 1e3:.1f} "
         f"ms/step x {row['full_steps']} steps" if row['extrapolated'] else
         f"the whole run measured ({row['steps_measured']} steps, median {row['step_s'] * 1e3:.1f} ms/step)")
  lines = [
      f"# Overhead per experiment, {datetime.date.today().isoformat()}: {mode}, design {row['design']}",
      '',
      f"{os.cpu_count()} CPUs ({platform_lib.machine()}), device {row['device']}, load average "
      f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; {row['params']:,} parameters; batch {args.global_batch} x "
      f"T={args.seq_len} (grad_accum {args.grad_accum}); harness: {args.tasks} at limit {args.eval_limit}.",
      f'{how}.',
      f"Ops: {_ops_text(row.get('ops'))}.",
      *([_retry_text(row['kernel_retry'])] if row.get('kernel_retry') else []),
      '',
      '| part | seconds | share of the full training run |',
      '|---|---|---|']
  parts = [('gates (check_program, default tiny CPU check)', gates),
           ('training child start + imports', row['child_start_s']),
           ('trainer setup + compile (data, init, jit)', row['setup_compile_s']),
           ('  of which train_step compile', row['compile_s']),
           ('final validation + checkpoint (+ step-time jitter)', row['final_eval_ckpt_s']),
           ('harness evaluation', row['harness_s']),
           ('trainer exit, store writes, other', row['trainer_exit_s'] + row['other_s'])]
  for name, value in parts:
    share = '' if value is None else f'{100 * value / full:.1f}%'
    lines.append(f'| {name} | {fmt(value)} | {share} |')
  lines += [f"| **overhead total** | **{overhead:.1f}** | **{100 * frac:.1f}%** |",
            f"| training steps ({'extrapolated, ' if row['extrapolated'] else ''}{row['full_steps']} steps) "
            f"| {full:.1f} | 100% |",
            '',
            f"Overhead / training = {frac:.3f}. Throughput {row['tokens_per_s']:,.0f} tokens/s; final val loss "
            f"{row['val_loss']:.4f}; benchmark scores {json.dumps({k: round(v, 3) for k, v in row['scores'].items()})}"
            + (f"; skipped: {json.dumps(row['skipped'])}" if row['skipped'] else '') + '.']
  if args.quick:
    lines += ['', 'At this tiny scale the fixed costs dominate; the exploration-scale fraction comes from '
              '`python bench/overhead.py` (GPU, extrapolated to 2,000 steps).']
  return '\n'.join(lines) + '\n'


def main(argv=None) -> None:
  args = parse_args(argv)
  with tempfile.TemporaryDirectory(prefix='aira_overhead_') as tmp:
    row = measure(args, args.workdir or tmp)
  text = report(row, args)
  print(text)
  if args.out != '-':
    os.makedirs(args.out, exist_ok=True)
    kind = 'cpu' if (row['device'] or '').lower() == 'cpu' else 'gpu'
    path = os.path.join(args.out, f'overhead_{datetime.date.today().isoformat()}_{kind}.md')
    with open(path, 'w', encoding='utf-8') as f:
      f.write(text)
    print(f'wrote {path}')


if __name__ == '__main__':
  main()
