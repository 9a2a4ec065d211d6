"""Which GPUs each training worker of one machine may use.

Without a plan, N workers (`--workers=N`) would each start training children that see every GPU: each child builds
its mesh over all of them and XLA reserves 75% of every GPU's memory per process, so the second concurrent child
runs out of memory at start. The plan gives worker i its own contiguous share of the visible GPUs through
CUDA_VISIBLE_DEVICES (its training children inherit it). With more workers than GPUs, workers share a GPU
round-robin and each reserves only its part of that GPU's memory (XLA_PYTHON_CLIENT_MEM_FRACTION, unless you set
memory variables yourself). GPUs are counted without starting CUDA: CUDA_VISIBLE_DEVICES when set, else the
/dev/nvidiaN device files. AIRA_SPLIT_GPUS=0 turns the plan off (every worker sees what the loop sees).
The Checker's gate children on a GPU get one GPU and no preallocation (sandbox.gate_device_env).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping

SPLIT_ENV = 'AIRA_SPLIT_GPUS'
MEMORY_ENV = ('XLA_PYTHON_CLIENT_MEM_FRACTION', 'XLA_PYTHON_CLIENT_PREALLOCATE', 'XLA_PYTHON_CLIENT_ALLOCATOR')
SHARED_MEMORY_FRACTION = 0.9  # of one GPU, split among the workers that share it


def visible_gpus(environ: Mapping[str, str] = os.environ, dev_dir: str = '/dev') -> list[str]:
  """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (indices or UUIDs), without starting CUDA."""
  listed = environ.get('CUDA_VISIBLE_DEVICES')
  if listed is not None:
    entries = [d.strip() for d in listed.split(',') if d.strip()]
    # CUDA stops at the first invalid entry ('-1' is the usual way to hide every GPU).
    valid = []
    for d in entries:
      if d.startswith('-'):
        break
      valid.append(d)
    return valid
  try:
    names = os.listdir(dev_dir)
  except OSError:
    return []
  return sorted((n[len('nvidia'):] for n in names if re.fullmatch(r'nvidia\d+', n)), key=int)


def split_enabled(environ: Mapping[str, str] = os.environ) -> bool:
  """Whether GPUs are planned per process (AIRA_SPLIT_GPUS unset or not 0/false/no)."""
  return environ.get(SPLIT_ENV, '1').strip().lower() not in ('0', 'false', 'no')


def worker_env(index: int, count: int, gpus: list[str], environ: Mapping[str, str] = os.environ) -> dict[str, str]:
  """Variables to add to worker `index` of `count` so it trains on its own share of `gpus` ({} = no change)."""
  if count <= 1 or not gpus or not split_enabled(environ):
    return {}
  if not 0 <= index < count:
    raise ValueError(f'worker index {index} outside 0..{count - 1}')
  if len(gpus) >= count:
    per = len(gpus) // count  # equal shares (a batch divides evenly); a remainder stays idle
    return {'CUDA_VISIBLE_DEVICES': ','.join(gpus[index * per:(index + 1) * per])}
  gpu = index % len(gpus)
  sharing = len(range(gpu, count, len(gpus)))  # the workers on this GPU
  env = {'CUDA_VISIBLE_DEVICES': gpus[gpu]}
  if not any(name in environ for name in MEMORY_ENV):
    env['XLA_PYTHON_CLIENT_MEM_FRACTION'] = f'{SHARED_MEMORY_FRACTION / sharing:.3f}'
  return env


def describe(plan: Mapping[str, Mapping[str, str]], gpus: list[str]) -> str:
  """One log line: which worker got which GPUs (and memory share)."""
  if not any(plan.values()):
    return f'workers see every visible GPU ({len(gpus)})' if gpus else 'no GPUs visible: workers share the CPU'
  parts = []
  for wid, env in plan.items():
    share = env.get('XLA_PYTHON_CLIENT_MEM_FRACTION')
    parts.append(f"{wid}: GPU {env.get('CUDA_VISIBLE_DEVICES', 'all')}" + (f' ({share} of its memory)' if share else ''))
  used = {g for env in plan.values() for g in env.get('CUDA_VISIBLE_DEVICES', '').split(',') if g}
  idle = [g for g in gpus if g not in used]
  return '; '.join(parts) + (f'; idle: GPU {",".join(idle)}' if idle else '')
