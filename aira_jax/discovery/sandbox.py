"""Runs the gates on one design program in a child process with limits, and always returns a Verdict.

    verdict = check_program(source, 'my_mixer', GateSettings(allow_quadratic=False))

The parent (this module, no JAX imported) runs gate 1 (static policy, pure ast) itself, then starts
`python -m aira_jax.discovery.sandbox <dir>` with:
  * a scrubbed environment: PATH, PYTHONPATH (this checkout, then the caller's entries), HOME and TMPDIR set to a
    fresh temp dir, JAX_PLATFORMS, XLA_FLAGS, AIRA_JAX_OPS_IMPL (the caller's, else the settings' ops_impl:
    'xla' by default, so the gates judge the design, not a Pallas kernel), LANG; on a GPU one device and no
    memory preallocation (`gate_device_env`); no API keys, tokens or proxies;
  * a wall-clock limit for the whole check and one for each gate; the child is killed (its process group) when
    either passes;
  * a memory limit: the parent reads the child's resident set size from /proc/<pid>/status every 50 ms and kills
    it above the limit; on CPU an RLIMIT_AS (limit + slack) backs this up against one huge allocation, which JAX
    on CPU tolerates (it reserves ~1 GB of address space); RLIMIT_CORE 0 and RLIMIT_FSIZE cap files;
  * the runtime guard (aira_jax.discovery.runtime_guard.RuntimeGuard) installed after JAX, flax and the models are
    imported, before the program is loaded.
The child reports progress as JSON lines in <dir>/events.jsonl; the parent turns a crash, a hang or a kill into
a failed verdict at the gate that was running, with the stderr tail.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from aira_jax.discovery import childproc, devices
from aira_jax.discovery.gates.config import GATE_NAMES, GateSettings, settings_from_config
from aira_jax.discovery.gates.verdict import GateVerdict, Verdict
from aira_jax.discovery.policy import check_source, policy_reason

POLL_S = 0.05
STDERR_TAIL = 3000
FILE_SIZE_LIMIT = 256 << 20
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASSED_ENV = ('AIRA_JAX_OPS_IMPL', 'AIRA_JAX_OPS_TARGET', 'LD_LIBRARY_PATH')

Event = dict[str, Any]


def _as_settings(settings: Any) -> GateSettings:
  if settings is None:
    return GateSettings().validate()
  if isinstance(settings, GateSettings):
    return dataclasses.replace(settings).validate()
  if isinstance(settings, Mapping) or hasattr(settings, 'to_dict'):
    return settings_from_config(settings)
  raise TypeError(f'settings must be GateSettings, a mapping or a ConfigDict, got {type(settings).__name__}')


def child_env(workdir: str, settings: GateSettings) -> dict[str, str]:
  """The child's whole environment: what Python and JAX need, nothing from the caller's secrets."""
  env = {'PATH': os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin'), 'HOME': workdir, 'TMPDIR': workdir,
         'PYTHONPATH': childproc.python_path(_ROOT), 'JAX_PLATFORMS': settings.platform, 'LANG': 'C.UTF-8',
         'PYTHONDONTWRITEBYTECODE': '1', 'PYTHONHASHSEED': '0', 'PYTHONNOUSERSITE': '1'}
  xla_flags = settings.xla_flags or os.environ.get('XLA_FLAGS', '')
  if xla_flags:
    env['XLA_FLAGS'] = xla_flags
  for name in PASSED_ENV:
    if name in os.environ and (name == 'AIRA_JAX_OPS_IMPL' or settings.platform != 'cpu'):
      env[name] = os.environ[name]
  env['AIRA_JAX_OPS_IMPL'] = gate_ops_impl(settings)
  if settings.platform != 'cpu':
    env.update(gate_device_env())
  return env


def gate_device_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
  """Where a gate child on an accelerator runs. Gates need one device and little memory, and with --workers=N
  they run beside training children on the same GPUs: the child sees one GPU (the last visible one, idle when
  the workers leave a remainder) and allocates on demand instead of reserving 75% of its memory at start, which
  would fail, or starve the next training child there. Memory variables the caller set are passed instead;
  AIRA_SPLIT_GPUS=0 passes the caller's CUDA_VISIBLE_DEVICES unchanged."""
  env: dict[str, str] = {}
  gpus = devices.visible_gpus(environ)
  if gpus and devices.split_enabled(environ):
    env['CUDA_VISIBLE_DEVICES'] = gpus[-1]
  elif 'CUDA_VISIBLE_DEVICES' in environ:
    env['CUDA_VISIBLE_DEVICES'] = environ['CUDA_VISIBLE_DEVICES']
  memory = {name: environ[name] for name in devices.MEMORY_ENV if name in environ}
  env.update(memory or {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'})
  return env


def gate_ops_impl(settings: GateSettings) -> str:
  """The aira_jax.ops path the gate child runs: $AIRA_JAX_OPS_IMPL when the caller set it, else ops_impl."""
  return os.environ.get('AIRA_JAX_OPS_IMPL', '').strip().lower() or settings.ops_impl


def _static_verdict(source: str, settings: GateSettings) -> GateVerdict:
  start = time.monotonic()
  if not settings.static_check:
    return GateVerdict(True, 'static', '', {'skipped': True})
  violations = check_source(source)
  if not violations:
    return GateVerdict(True, 'static', '', {'violations': 0}, time.monotonic() - start)
  return GateVerdict(False, 'static', policy_reason(violations), {'violations': [str(v) for v in violations]},
                     time.monotonic() - start)


def check_program(source: str, name: str, settings: Any = None, *,
                  on_event: Callable[[Event], None] | None = None) -> Verdict:
  """Runs every gate on `source` in a sandboxed child and returns the Verdict (never raises for a bad program).

  `settings`: GateSettings, a mapping or a ConfigDict of its fields (None: the tiny defaults). `on_event` gets
  the child's progress events ({'event': 'start', 'gate', 'index'} and {'event': 'gate', 'verdict'}).
  """
  settings = _as_settings(settings)
  if not isinstance(name, str):
    raise ValueError(f'design name must be a str, got {type(name).__name__}')
  # The name becomes the program's filename '<design:NAME>' in tracebacks: keep it plain.
  name = ''.join(c if c.isalnum() or c in '_-' else '_' for c in name)[:80] or 'design'

  start = time.monotonic()
  if on_event:
    on_event({'event': 'start', 'gate': 'static', 'index': 0})
  static = _static_verdict(source, settings)
  if on_event:
    on_event({'event': 'gate', 'verdict': static.to_dict()})
  if not static.ok or settings.stop_after == 'static':
    return Verdict.from_gates([static], time.monotonic() - start)
  with tempfile.TemporaryDirectory(prefix='aira_check_') as workdir:
    gates, peak_mb = _run_child(source, name, settings, workdir, on_event)
  verdict = Verdict.from_gates([static, *gates], time.monotonic() - start)
  verdict.details.setdefault('peak_rss_mb', round(peak_mb, 1))
  verdict.details.setdefault('ops_impl', gate_ops_impl(settings))
  return verdict


def _run_child(source: str, name: str, settings: GateSettings, workdir: str,
               on_event: Callable[[Event], None] | None) -> tuple[list[GateVerdict], float]:
  """The child's gate verdicts (plus one for an abnormal end) and its peak resident memory in MB."""
  with open(os.path.join(workdir, 'request.json'), 'w', encoding='utf-8') as f:
    json.dump({'source': source, 'name': name, 'settings': settings.to_dict()}, f)
  out_path, err_path = os.path.join(workdir, 'stdout.txt'), os.path.join(workdir, 'stderr.txt')
  reader = childproc.JsonlTail(os.path.join(workdir, 'events.jsonl'))
  with open(out_path, 'wb') as out, open(err_path, 'wb') as err:
    proc = subprocess.Popen([sys.executable, '-m', 'aira_jax.discovery.sandbox', workdir], cwd=workdir,
                            env=child_env(workdir, settings), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                            start_new_session=True)
  gates: list[GateVerdict] = []
  current, gate_start, killed, peak = None, time.monotonic(), None, 0.0
  start = time.monotonic()

  def consume():
    nonlocal current, gate_start
    for event in reader.read():
      if event.get('event') == 'start':
        current, gate_start = event.get('gate'), time.monotonic()
      elif event.get('event') == 'gate':
        gates.append(GateVerdict.from_dict(event['verdict']))
        current = None
      if on_event and event.get('event') in ('start', 'gate'):
        on_event(event)

  try:
    while proc.poll() is None:
      consume()
      now = time.monotonic()
      rss = childproc.rss_mb(proc.pid)
      peak = max(peak, rss)
      if rss > settings.memory_limit_mb:
        killed = ('memory', rss)
      elif now - start > settings.timeout_s:
        killed = ('timeout', settings.timeout_s)
      elif current is not None and now - gate_start > settings.gate_timeout_s:
        killed = ('gate_timeout', settings.gate_timeout_s)
      if killed:
        childproc.kill_group(proc)
        break
      time.sleep(POLL_S)
  finally:
    if proc.poll() is None:  # an exception (KeyboardInterrupt) in the parent must not leak the child
      childproc.kill_group(proc)
  consume()
  if gates and (not gates[-1].ok or gates[-1].gate in (settings.stop_after, GATE_NAMES[-1])):
    return gates, peak
  if current is None and gates:  # ended between two gates: blame the next one
    current = GATE_NAMES[min(GATE_NAMES.index(gates[-1].gate) + 1, len(GATE_NAMES) - 1)]
  stderr = childproc.file_tail(err_path, STDERR_TAIL)
  return gates + [_abnormal(current, killed, proc.returncode, peak, settings, stderr)], peak


def _abnormal(gate: str | None, killed: tuple | None, returncode: int | None, peak_mb: float,
              settings: GateSettings, stderr: str) -> GateVerdict:
  """The verdict for a child that was killed, crashed or exited without reporting."""
  details: dict[str, Any] = {'returncode': returncode, 'peak_rss_mb': round(peak_mb, 1), 'stderr_tail': stderr}
  where = f"during gate '{gate}'" if gate else 'before any gate started'
  if killed and killed[0] == 'memory':
    reason = (f'the check process exceeded the memory limit ({settings.memory_limit_mb} MB resident; '
              f'{killed[1]:.0f} MB when killed) {where}: the program allocates too much memory; avoid materialising '
              f'huge tensors (e.g. [T, T] per head or a state per time step) and Python-side buffers')
  elif killed:
    limit = killed[1]
    scope = 'the check' if killed[0] == 'timeout' else 'this gate'
    reason = (f'timed out: {scope} ran longer than {limit:.0f} s {where}; look for an infinite loop, or a Python '
              f'loop over time steps or chunks that unrolls at trace time (use lax.scan instead)')
  elif returncode is not None and returncode < 0:
    sig = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else -returncode
    reason = f'the check process was killed by signal {sig} {where} (a crash in native code or the OS memory limit)'
  elif gate is None:
    reason = f'the sandbox process failed to start or exited early (exit status {returncode}); stderr: {stderr[-500:]}'
    details['infrastructure'] = True
    return GateVerdict(False, 'sandbox', reason, details)
  else:
    reason = (f'the check process exited with status {returncode} {where} without a verdict (the program may have '
              f'ended the process); stderr: {stderr[-500:]}')
  return GateVerdict(False, gate or 'sandbox', reason, details)


# ------------------------------------------------------------------------------------------------- the child

def _limit_resources(settings: GateSettings) -> None:
  import resource  # pylint: disable=import-outside-toplevel
  resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
  resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
  if settings.platform == 'cpu' and settings.address_space_slack_mb > 0:
    limit = (settings.memory_limit_mb + settings.address_space_slack_mb) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _child_main(workdir: str) -> int:
  with open(os.path.join(workdir, 'request.json'), encoding='utf-8') as f:
    request = json.load(f)
  settings = GateSettings.from_mapping(request['settings'])
  _limit_resources(settings)
  events = open(os.path.join(workdir, 'events.jsonl'), 'a', encoding='utf-8', buffering=1)

  def emit(event: Event) -> None:
    events.write(json.dumps(event) + '\n')
    events.flush()

  # Everything the gates use is imported before the guard goes up: lazy imports then rarely happen under it.
  from aira_jax.discovery.gates import runner  # pylint: disable=import-outside-toplevel
  from aira_jax.discovery.runtime_guard import RuntimeGuard  # pylint: disable=import-outside-toplevel
  guard = RuntimeGuard.install()
  os.chdir(workdir)
  runner.run_gates(request['source'], request['name'], settings, on_event=emit, skip=('static',), guard=guard)
  events.close()
  return 0


if __name__ == '__main__':
  if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
    print('usage: python -m aira_jax.discovery.sandbox <workdir> (started by check_program)', file=sys.stderr)
    sys.exit(2)
  sys.exit(_child_main(sys.argv[1]))
