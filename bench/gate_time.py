"""Time per design of the Checker's gates (tiny default check settings), each in its own sandboxed child.

    python bench/gate_time.py                         # the baselines, sliding-window attention, two planted goods
    python bench/gate_time.py --designs=deltanet,swa --repeats=2

Designs: the baselines (attention with allow_quadratic), 'swa' (the attention baseline with sliding_window=32,
no allow_quadratic) and any tests/programs/good_*.py named by its stem. Prints a table of seconds per gate,
total wall time (child start included) and the child's peak resident memory, and writes it to
bench/results/gate_time_<date>.md. The target is <= 60 s per design on CPU.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from aira_jax.discovery.gates import GATE_NAMES, GateSettings  # noqa: E402
from aira_jax.discovery.sandbox import check_program  # noqa: E402
from aira_jax.models import BASELINES, baseline_source  # noqa: E402

DEFAULT = 'deltanet,gated_deltanet,mamba2,attention,swa,good_fft_conv,good_scan_rnn'
TARGET_S = 60.0


def design(name: str) -> tuple[str, GateSettings]:
  if name in BASELINES:
    return baseline_source(name), GateSettings(allow_quadratic=name == 'attention')
  if name == 'swa':
    return baseline_source('attention'), GateSettings(mixer_kwargs={'sliding_window': 32})
  path = os.path.join(ROOT, 'tests', 'programs', f'{name}.py')
  if not os.path.isfile(path):
    raise SystemExit(f"unknown design '{name}': expected a baseline, 'swa' or a tests/programs/*.py stem")
  with open(path, encoding='utf-8') as f:
    return f.read(), GateSettings()


def run(name: str) -> dict:
  source, settings = design(name)
  start = time.perf_counter()
  verdict = check_program(source, name, settings)
  wall = time.perf_counter() - start
  per_gate = {g.gate: g.seconds for g in verdict.gates}
  return {'design': name, 'ok': verdict.ok, 'gate': verdict.gate, 'reason': verdict.reason, 'wall': wall,
          'gates': per_gate, 'peak_mb': verdict.details.get('peak_rss_mb', float('nan')),
          'exponent': verdict.details.get('cost_exponent')}


def table(rows: list[dict]) -> str:
  head = ['design', 'verdict', 'total s', *GATE_NAMES[1:], 'child start + IO s', 'peak RSS MB', 'cost exp']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    gate_s = [r['gates'].get(g) for g in GATE_NAMES[1:]]
    overhead = r['wall'] - sum(v for v in r['gates'].values() if v)
    verdict = 'accepted' if r['ok'] else f"rejected at {r['gate']}"
    exp = f"{r['exponent']:.2f}" if isinstance(r['exponent'], (int, float)) else '-'
    cells = [r['design'], verdict, f"{r['wall']:.1f}", *('-' if v is None else f'{v:.1f}' for v in gate_s),
             f'{overhead:.1f}', f"{r['peak_mb']:.0f}", exp]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--designs', default=DEFAULT, help='comma-separated design names')
  parser.add_argument('--repeats', type=int, default=1, help='runs per design (the table keeps the fastest)')
  parser.add_argument('--out', default=os.path.join(ROOT, 'bench', 'results'), help='result directory')
  args = parser.parse_args()
  load_before = os.getloadavg()
  rows = []
  for name in [n.strip() for n in args.designs.split(',') if n.strip()]:
    runs = [run(name) for _ in range(max(1, args.repeats))]
    best = min(runs, key=lambda r: r['wall'])
    rows.append(best)
    print(f"{name}: {'accepted' if best['ok'] else 'REJECTED at ' + str(best['gate'])} in {best['wall']:.1f} s"
          + ('' if best['ok'] else f"  ({best['reason'][:200]})"), flush=True)
  settings = GateSettings()
  text = (f"# Gate time per design, {datetime.date.today()}: tiny check (d_model {settings.d_model}, "
          f"{settings.num_layers} layers, T={settings.seq_len}, cost at T={list(settings.cost_seq_lens)}), "
          f"sandboxed child on CPU\n\n"
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), load average "
          f"{load_before[0]:.1f} before / {os.getloadavg()[0]:.1f} after; target <= {TARGET_S:.0f} s per design; "
          f"best of {max(1, args.repeats)}.\n\n{table(rows)}\n")
  slow = [r['design'] for r in rows if r['wall'] > TARGET_S]
  text += f"\n{'All designs within' if not slow else 'Over'} the {TARGET_S:.0f} s target{': ' + ', '.join(slow) if slow else '.'}\n"
  print('\n' + text)
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, f'gate_time_{datetime.date.today()}.md')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)
  print(f'wrote {path}')


if __name__ == '__main__':
  main()
