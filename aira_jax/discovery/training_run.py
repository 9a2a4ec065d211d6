"""Runs the Engineer's training child under limits and turns whatever happens into a RunOutcome.

The parent (no JAX) starts `python -m aira_jax.discovery.engineer_child <dir>` in its own process group with a
scrubbed environment, then polls it: the child's events, the metrics JSONL of the seed being trained (a
`LossWatch` ends the run at the first NaN or a divergence), the child's resident memory (killed above the limit),
a hard wall-clock limit per seed run and per evaluation, and `should_abort` (the claim was lost or the worker is
stopping). A crash comes back as a classified Failure with the full error log for the Debugger.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable

from absl import logging

from aira_jax.discovery import childproc
from aira_jax.discovery import failures as fl
from aira_jax.discovery.childproc import JsonlTail, file_tail, rss_mb
from aira_jax.discovery.kernel_faults import FIRST_STEP, kernel_suspect

POLL_S = 0.1
LOG_TAIL_CHARS = 12_000  # stderr kept in the error log handed to the Debugger
DIAG_TAIL_CHARS = 3_000  # stderr kept in a failed experiment's diagnostics
DIAG_LOG_CHARS = 8_000  # error log (traceback + output) kept there
# Records (the trainer's metrics.jsonl) and events (the harness's, from the child) that start and stop the
# first-run clock: a step must finish its first run within first_step_timeout_s of compiling.
FIRST_RUN_RECORDS = ('kernel_check', 'compile', 'eval_compile', 'first_step', 'first_eval')
STEP_NAMES = {'train': 'training step', 'eval': 'evaluation step', 'harness': 'benchmark scoring step'}
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Variables a training child may inherit: device selection, XLA/JAX tuning, and where task data lives.
PASSED_ENV = ('CUDA_VISIBLE_DEVICES', 'LD_LIBRARY_PATH', 'XLA_FLAGS', 'XLA_PYTHON_CLIENT_PREALLOCATE',
              'XLA_PYTHON_CLIENT_MEM_FRACTION', 'XLA_PYTHON_CLIENT_ALLOCATOR', 'TPU_VISIBLE_CHIPS',
              'TPU_PROCESS_BOUNDS', 'AIRA_JAX_OPS_IMPL', 'AIRA_JAX_OPS_TARGET', 'AIRA_HARNESS_DATA', 'HF_HOME',
              'HF_DATASETS_OFFLINE', 'JAX_COMPILATION_CACHE_DIR')


@dataclasses.dataclass
class ChildRequest:
  """What the child runs: the full trainer config (a plain dict), the seeds and where each seed's run lives."""
  config: dict[str, Any]
  seeds: tuple[int, ...]
  run_dirs: dict[int, str]
  eval: dict[str, Any] | None = None  # {'tasks', 'held_out', 'limit', 'data_dir'}; None: no harness
  runtime_guard: bool = True
  platform: str = ''  # JAX_PLATFORMS for the child; '' inherits the parent's
  memory_mb: int = 0  # resident-memory limit (0: none)
  address_space_slack_mb: int = 8192
  set_aside: dict[str, str] = dataclasses.field(default_factory=dict)  # op -> why: kernels the child must not use
  # scope -> {op: why}: kernels found faulty at run time (kernel_faults); the child sets aside its own scope's
  set_aside_by_scope: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

  def to_json(self) -> str:
    data = dataclasses.asdict(self)
    data['run_dirs'] = {str(k): v for k, v in self.run_dirs.items()}
    return json.dumps(fl.jsonable(data))


@dataclasses.dataclass
class RunLimits:
  timeout_s: float  # each seed's run (training and its evaluation); the first also covers start-up
  eval_timeout_s: float
  memory_mb: int  # 0: no limit
  divergence_factor: float = 3.0
  divergence_patience: int = 2
  # The first step must finish this long after the trainer's compile record, and the kernel self-test and the
  # compile that follows it this long after its kernel_check record; the same for the first validation step and
  # for each harness scorer's first batch after their own records (FIRST_RUN_RECORDS; 0: off).
  first_step_timeout_s: float = 0.0


@dataclasses.dataclass
class RunOutcome:
  summaries: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)  # seed -> trainer summary
  evals: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)  # seed -> harness scores
  curves: dict[int, list[tuple[int, float]]] = dataclasses.field(default_factory=dict)  # seed -> (step, loss)
  throughput: dict[int, list[float]] = dataclasses.field(default_factory=dict)  # seed -> logged tokens/s
  failure: fl.Failure | None = None
  error_log: str = ''  # full traceback and stderr tail (for the Debugger)
  interrupted: str | None = None  # why the run was abandoned without a verdict (claim lost, stopping)
  wall_s: float = 0.0
  started_at: float = 0.0  # time.time() when the child was started
  peak_rss_mb: float = 0.0
  child_dir: str = ''
  kernels: list[str] = dataclasses.field(default_factory=list)  # ops that ran a Pallas kernel in the child
  kernel_scope: str = ''  # where the child ran (kernel_faults.scope: device kind and software), once it said
  kernel_suspect: bool = False  # the failure came after kernels ran and is of a kind a faulty kernel causes

  @property
  def ok(self) -> bool:
    return self.failure is None and self.interrupted is None


def child_env(workdir: str, platform: str) -> dict[str, str]:
  """The child's whole environment: what Python and JAX need; no API keys, tokens, proxies or store URLs."""
  env = {'PATH': os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin'), 'HOME': workdir, 'TMPDIR': workdir,
         'PYTHONPATH': childproc.python_path(_ROOT), 'LANG': 'C.UTF-8', 'PYTHONDONTWRITEBYTECODE': '1',
         'PYTHONNOUSERSITE': '1'}
  platform = platform or os.environ.get('JAX_PLATFORMS', '')
  if platform:
    env['JAX_PLATFORMS'] = platform
  for name in PASSED_ENV:
    if name in os.environ:
      env[name] = os.environ[name]
  return env


def latest_checkpoint_step(run_dir: str) -> int:
  """The last committed checkpoint step in a trainer run directory (0 when none); Orbax commits by renaming a
  temporary directory to the bare step number, so only all-digit names count."""
  try:
    names = os.listdir(os.path.join(run_dir, 'checkpoints'))
  except OSError:
    return 0
  return max((int(n) for n in names if n.isdigit()), default=0)


def drop_stale_metrics(run_dir: str) -> int:
  """Before a run (re)starts in `run_dir`: keeps only the metrics lines up to the checkpoint it will resume from.

  A worker that died after its last checkpoint logged steps that the resumed run repeats; without this the loss
  curve would mix the dead run's tail with the new run. Returns the number of lines dropped.
  """
  path = os.path.join(run_dir, 'metrics.jsonl')
  if not os.path.exists(path):
    return 0
  keep_upto = latest_checkpoint_step(run_dir)
  kept, dropped = [], 0
  with open(path, encoding='utf-8', errors='replace') as f:
    for line in f:
      try:
        step = int(json.loads(line).get('step', 0))
      except (ValueError, AttributeError, TypeError):
        step = keep_upto + 1  # a torn last line
      if step <= keep_upto:
        kept.append(line if line.endswith('\n') else line + '\n')
      else:
        dropped += 1
  if dropped:
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
      f.writelines(kept)
    os.replace(path + '.tmp', path)
    logging.info('%s: dropped %d metrics lines logged after checkpoint step %d', path, dropped, keep_upto)
  return dropped


class _Monitor:
  """State of one child run as its events and metrics arrive."""

  def __init__(self, request: ChildRequest, limits: RunLimits, outcome: RunOutcome):
    self.request, self.limits, self.outcome = request, limits, outcome
    self.seed: int | None = None
    self.phase = 'setup'
    self.phase_start = time.monotonic()
    self.error: dict[str, Any] | None = None
    self.done = False
    self.metrics: dict[int, JsonlTail] = {}
    self.watch: dict[int, fl.LossWatch] = {}
    self.last_metrics: dict[str, Any] | None = None
    self.loss_failure: fl.Failure | None = None
    self.kernels: set[str] = set()  # from the trainer's 'compile' records and the seeds' summaries
    # The first-run clock (FIRST_RUN_RECORDS): started by 'kernel_check', 'compile' or 'eval_compile', stopped by
    # 'first_step' or 'first_eval'; clock_from names the record that started it, clock_step the step (STEP_NAMES).
    self.compiled_at: float | None = None
    self.first_step_done = False
    self.clock_from, self.clock_step = 'compile', 'train'

  def on_event(self, event: dict[str, Any]) -> None:
    kind, seed = event.get('event'), event.get('seed')
    if kind == 'seed_start':
      self.read_metrics()  # the previous seed's last lines
      self.seed, self.phase, self.phase_start = int(seed), 'train', time.monotonic()
      self.compiled_at, self.first_step_done = None, False
      path = os.path.join(self.request.run_dirs[int(seed)], 'metrics.jsonl')
      self.metrics[int(seed)] = JsonlTail(path)
      self.watch[int(seed)] = fl.LossWatch(self.limits.divergence_factor, self.limits.divergence_patience)
    elif kind == 'seed_done':
      self.read_metrics()  # the trainer's last records come before the harness's events
      self.outcome.summaries[int(seed)] = summary = event.get('summary') or {}
      self._note_kernels(summary.get('ops'))
    elif kind == 'eval_start':
      self.phase, self.phase_start = 'eval', time.monotonic()
    elif kind == 'eval_done':
      self.outcome.evals[int(seed)] = event.get('scores') or {}
      self.phase = 'train'  # the next seed_start restarts the clock
    elif kind in FIRST_RUN_RECORDS:  # the harness's scorers, one per batch shape
      self._first_run(kind, event)
    elif kind == 'device':
      self.outcome.kernel_scope = str(event.get('scope') or '')
    elif kind == 'error':
      self.error = event
    elif kind == 'done':
      self.done = True

  def _first_run(self, kind: str, record: dict[str, Any]) -> None:
    """A step about to run its kernels for the first time (the self-test runs kernels too: it may hang), or one
    whose first run has finished."""
    if kind in ('first_step', 'first_eval'):
      self.first_step_done = True
      return
    self._note_kernels(record.get('ops'))
    self.compiled_at, self.first_step_done = time.monotonic(), False
    self.clock_from = kind
    step_fn = record.get('step_fn')
    self.clock_step = step_fn if step_fn in STEP_NAMES else ('eval' if kind == 'eval_compile' else 'train')

  def _note_kernels(self, ops: Any) -> None:
    if isinstance(ops, dict) and isinstance(ops.get('kernels'), list):
      self.kernels.update(str(k) for k in ops['kernels'])

  def read_metrics(self) -> None:
    for seed, tail in self.metrics.items():
      for record in tail.read():
        if record.get('kind') in FIRST_RUN_RECORDS:
          self._first_run(record['kind'], record)
        if record.get('kind') != 'train' or 'loss' not in record or self.loss_failure is not None:
          continue  # after a NaN or divergence, the diagnostics keep the metrics of that step
        self.last_metrics = {'seed': seed, **record}
        step, loss = int(record.get('step', 0)), record['loss']
        value = fl.as_float(loss)
        self.outcome.curves.setdefault(seed, []).append((step, value if value is not None else float('nan')))
        tps = fl.as_float(record.get('tokens_per_sec'))
        if tps is not None:
          self.outcome.throughput.setdefault(seed, []).append(tps)
        failure = self.watch[seed].update(step, loss, record)
        if failure is not None and self.loss_failure is None:
          failure.message += f' (seed {seed})'
          self.loss_failure = failure

  def deadline_passed(self, now: float) -> tuple[str, float] | None:
    first = self.limits.first_step_timeout_s
    if (self.phase in ('train', 'eval') and first > 0 and self.compiled_at is not None and not self.first_step_done
        and now - self.compiled_at > first):
      return FIRST_STEP, first
    limit = self.limits.eval_timeout_s if self.phase == 'eval' else self.limits.timeout_s
    if limit > 0 and now - self.phase_start > limit:
      return self.phase, limit
    return None


def run_training_child(request: ChildRequest, child_dir: str, limits: RunLimits, *,
                       should_abort: Callable[[], str | None] = lambda: None) -> RunOutcome:
  """Runs the child to completion, a failure or an abort; never raises for anything the program does."""
  os.makedirs(child_dir, exist_ok=True)
  for d in request.run_dirs.values():
    os.makedirs(d, exist_ok=True)
    drop_stale_metrics(d)
  with open(os.path.join(child_dir, 'request.json'), 'w', encoding='utf-8') as f:
    f.write(request.to_json())
  log_path = os.path.join(child_dir, 'child.log')
  outcome = RunOutcome(child_dir=child_dir)
  monitor = _Monitor(request, limits, outcome)
  events = JsonlTail(os.path.join(child_dir, 'events.jsonl'))
  start, outcome.started_at = time.monotonic(), time.time()
  with open(log_path, 'ab') as log:
    proc = subprocess.Popen([sys.executable, '-m', 'aira_jax.discovery.engineer_child', child_dir], cwd=child_dir,
                            env=child_env(child_dir, request.platform), stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
  killed: tuple[str, Any] | None = None
  try:
    while proc.poll() is None:
      for event in events.read():
        monitor.on_event(event)
      monitor.read_metrics()
      rss = rss_mb(proc.pid)
      outcome.peak_rss_mb = max(outcome.peak_rss_mb, rss)
      if monitor.loss_failure is not None:
        killed = ('loss', None)
      elif limits.memory_mb > 0 and rss > limits.memory_mb:
        killed = ('memory', rss)
      elif (late := monitor.deadline_passed(time.monotonic())) is not None:
        killed = ('timeout', late)
      elif (why := should_abort()) is not None:
        killed = ('abort', why)
      if killed:
        logging.info('stopping training child %d: %s %s', proc.pid, killed[0], killed[1] or '')
        childproc.kill_group(proc)
        break
      time.sleep(POLL_S)
  finally:
    if proc.poll() is None:  # an exception in the parent must not leak the child
      childproc.kill_group(proc)
  for event in events.read():
    monitor.on_event(event)
  monitor.read_metrics()
  outcome.wall_s = time.monotonic() - start
  _conclude(outcome, monitor, killed, proc.returncode, log_path, limits)
  return outcome


def _conclude(outcome: RunOutcome, monitor: _Monitor, killed: tuple[str, Any] | None, returncode: int,
              log_path: str, limits: RunLimits) -> None:
  """Sets outcome.failure / interrupted / error_log from how the child ended."""
  tail = file_tail(log_path, LOG_TAIL_CHARS)
  where = f'seed {monitor.seed}, {monitor.phase}' if monitor.seed is not None else monitor.phase
  diag: dict[str, Any] = {'phase': monitor.phase, 'seed': monitor.seed, 'returncode': returncode,
                          'last_metrics': monitor.last_metrics, 'peak_rss_mb': round(outcome.peak_rss_mb, 1),
                          'wall_s': round(outcome.wall_s, 2), 'stderr_tail': tail[-DIAG_TAIL_CHARS:],
                          'child_dir': outcome.child_dir}
  error = monitor.error
  if killed and killed[0] == 'abort':
    outcome.interrupted = str(killed[1])
    return
  if monitor.loss_failure is not None:  # killed for it, or the run ended before the watch had read that far
    failure = monitor.loss_failure
  elif killed and killed[0] == 'memory':
    failure = fl.Failure(fl.OOM, f'out of memory: the training process used {killed[1]:.0f} MB, over the '
                         f'limit of {limits.memory_mb} MB ({where}); avoid materialising huge tensors such as '
                         f'[T, T] per head or a state per time step', {})
  elif killed and killed[0] == 'timeout' and killed[1][0] == FIRST_STEP:
    step_fn = STEP_NAMES[monitor.clock_step]
    if monitor.clock_from == 'kernel_check':
      what = (f'the Pallas kernel self-test of the {step_fn} (one call of each kernel against its XLA op) '
              f'did not finish within {killed[1][1]:.0f} s ({where}): a kernel that hangs')
    else:
      what = (f'the first {step_fn} did not finish within {killed[1][1]:.0f} s of compiling ({where}): a step '
              f'that hangs, or a design far too slow for any budget')
    failure = fl.Failure(fl.TIMEOUT, f'timed out: {what}', {'stage': FIRST_STEP, 'step_fn': monitor.clock_step})
  elif killed and killed[0] == 'timeout':
    phase, limit = killed[1]
    failure = fl.Failure(fl.TIMEOUT, f'timed out: the {phase} phase ran longer than {limit:.0f} s ({where}); look '
                         f'for Python loops over time steps that unroll at trace time, or a design too slow for '
                         f'the budget', {})
  elif error is not None:
    kind = fl.classify_exception(error.get('exc_type', ''), error.get('message', ''), error.get('traceback', ''))
    line = error.get('program_lineno')
    at = f" (program line {line}: `{error.get('program_line') or ''}`)" if line else ''
    failure = fl.Failure(kind, f"{error.get('exc_type')}: {error.get('message')}{at} during {error.get('phase')}"
                         + (f" of seed {error.get('seed')}" if error.get('seed') is not None else ''), {})
    diag['exc_type'], diag['program_lineno'] = error.get('exc_type'), line
    outcome.error_log = (error.get('traceback') or f"{error.get('exc_type')}: {error.get('message')}") + \
        f'\n--- training process output (last {LOG_TAIL_CHARS} characters) ---\n{tail}'
  elif returncode != 0 or not monitor.done:
    if returncode == -signal.SIGKILL:  # not ours (we record our kills above): the OS OOM killer, most likely
      failure = fl.Failure(fl.OOM, f'the training process was killed by SIGKILL ({where}), most likely by the '
                           f'operating system for using too much memory', {})
    else:
      sig = -returncode if returncode < 0 else None
      how = f'killed by signal {signal.Signals(sig).name}' if sig in signal.Signals._value2member_map_ else \
          f'exited with status {returncode} without reporting'
      failure = fl.Failure(fl.CRASH, f'the training process {how} ({where}): a crash in native code or the '
                           f'program ended the process', {})
    outcome.error_log = f'{failure.message}\n--- training process output ---\n{tail}'
  else:
    failure = _check_summaries(outcome)
  outcome.kernels = sorted(monitor.kernels)
  if failure is not None:
    if not outcome.error_log:
      outcome.error_log = f'{failure.message}\n--- training process output ---\n{tail}'
    diag['error_log'] = outcome.error_log[-DIAG_LOG_CHARS:]
    if outcome.kernels:
      diag['kernels'] = outcome.kernels
    failure.diagnostics = {**diag, **failure.diagnostics}
    outcome.kernel_suspect = kernel_suspect(failure, outcome.kernels, error)
  outcome.failure = failure


def _check_summaries(outcome: RunOutcome) -> fl.Failure | None:
  """A run that finished can still have a non-finite final loss (e.g. NaN only at the last step)."""
  for seed, summary in sorted(outcome.summaries.items()):
    for key in ('final_train_loss', 'final_val_loss'):
      value = summary.get(key)
      if value is not None and not _finite(value):
        return fl.Failure(fl.NAN, f'{key} is {value} (seed {seed})', {'seed': seed})
  return None


def _finite(value: Any) -> bool:
  v = fl.as_float(value)
  return v is not None and v == v and abs(v) != float('inf')


def describe(outcome: RunOutcome) -> str:
  if outcome.interrupted:
    return f'interrupted ({outcome.interrupted})'
  if outcome.failure:
    return f'{outcome.failure.kind}: {outcome.failure.message}'
  return f'ok ({len(outcome.summaries)} seeds, {outcome.wall_s:.1f} s)'

