"""The Engineer: trains accepted designs at the configured scale, evaluates them and records the outcome.

    engineer = Engineer(store, settings_from_config(cfg), worker_id='gpu0', debugger=my_debugger)
    engineer.work(stop=stop_event)              # claim -> train -> evaluate -> record, until the queue is empty

For each claimed experiment ('checked' -> 'training'): the design's program (or composition) is trained for each
seed in a separate child process (training_run / engineer_child: scrubbed environment, memory limit, hard timeout,
runtime guard) while a heartbeat thread keeps the claim's lease alive; the child then runs the harness tasks whose
data is present. The Result (loss curve, val loss, bpb, benchmark scores, parameters, tokens, throughput, wall time,
seeds and per-seed losses) is written with the move to 'trained'. A crash goes to the Debugger with the full error
log (at most `debug_attempts` calls); a fix that passes the Checker's gates becomes the design's new program version
and is trained again. NaN, divergence, OOM, timeout and a Debugger that gives up end as 'failed' with a reason that
names the kind (failures.py) and carries diagnostics. Nothing a program does raises out of `run_claim`.
A run that fails after Pallas kernels ran, the way a faulty kernel fails it, is first trained again with those
kernels set aside (`_train_without_kernels`): a kernel's fault is not handed to the Debugger as the design's.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from absl import logging

from aira_jax.discovery import failures as fl
from aira_jax.discovery import kernel_faults
from aira_jax.discovery.engineer_result import build_result
from aira_jax.discovery.engineer_settings import (ConfigOverrideError, EngineerSettings, experiment_train_config,
                                                  settings_from_config)
from aira_jax.discovery.kernel_faults import TRUST_AFTER, KernelVerdicts
from aira_jax.discovery.program_versions import record_program_version
from aira_jax.discovery.queue import ClaimHeldError, ClaimLostError
from aira_jax.discovery.records import (KERNEL_CLEARED, KERNEL_FAULT, Claim, Design, DesignKind, Experiment,
                                        KernelVerdict, Result, Status, program_hash)
from aira_jax.discovery.store import TRAIN_QUEUE, ExperimentStore
from aira_jax.discovery.training_run import ChildRequest, RunLimits, RunOutcome, describe, run_training_child

__all__ = ['DebugRequest', 'Debugger', 'Engineer', 'EngineerSettings', 'settings_from_config']


@dataclasses.dataclass(frozen=True)
class DebugRequest:
  """What the Debugger sees: the design, the program that failed and the full error log of the failure."""
  design: str
  source: str
  error_log: str
  attempt: int  # 1-based: the how-many-th Debugger call for this experiment
  max_attempts: int = 3
  kind: str = fl.CRASH
  experiment_id: int | None = None
  motivation: str = ''


Debugger = Callable[[DebugRequest], 'str | None']


class _Heartbeat:
  """Renews the claim's lease every `every_s` in a background thread; `lost` says why it stopped being ours."""

  def __init__(self, store: ExperimentStore, claim: Claim, every_s: float):
    self.store, self.claim, self.every_s = store, claim, every_s
    self.lost: str | None = None
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name=f'heartbeat-{claim.experiment_id}', daemon=True)

  def __enter__(self) -> '_Heartbeat':
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join(timeout=30)

  def _run(self) -> None:
    while not self._stop.wait(self.every_s):
      try:
        self.claim = self.store.heartbeat(self.claim)
      except ClaimLostError as e:
        self.lost = str(e)
        logging.warning('%s', e)
        return
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('heartbeat for experiment %d failed (will retry): %s', self.claim.experiment_id, e)


class _Abandon(Exception):
  """The claim is no longer ours to finish (lost, or the worker is stopping)."""


def _safe(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.-]', '_', text)[:80] or 'x'


class Engineer:
  """Claims experiments from the store and trains, evaluates and records them."""

  def __init__(self, store: ExperimentStore, settings: EngineerSettings | None = None, *, worker_id: str,
               debugger: Debugger | None = None):
    if not worker_id:
      raise ValueError('worker_id must not be empty')
    self.store, self.worker_id, self.debugger = store, worker_id, debugger
    self.settings = dataclasses.replace(settings or EngineerSettings()).validate()
    self._stop = threading.Event()
    self._tries = 0
    self._last_result: Result | None = None
    if not self.settings.eval_tasks and not self.settings.held_out_tasks:
      logging.info('Engineer %s: no harness tasks configured; benchmark scores are skipped', worker_id)

  # ------------------------------------------------------------------------------------------ the work loop
  def work(self, *, stop: threading.Event | None = None, max_experiments: int | None = None,
           idle_exit: bool = True) -> int:
    """Claims and runs experiments until `stop` is set, `max_experiments` are recorded, or (idle_exit) no
    experiment is left in the training queue, including those other workers still hold. Returns how many
    experiments this worker recorded (trained or failed)."""
    if stop is not None:
      self._stop = stop
    s, recorded = self.settings, 0
    while not self._stop.is_set() and (max_experiments is None or recorded < max_experiments):
      claim = self.store.claim(self.worker_id, statuses=TRAIN_QUEUE, lease_s=s.lease_s, scale=s.scale)
      if claim is None:
        if idle_exit and not self._queue_pending():
          break
        self._stop.wait(s.poll_s)  # others hold the rest; one of them may die and leave its work to us
        continue
      if self._handle(claim) in (Status.TRAINED, Status.FAILED):
        recorded += 1
    logging.info('Engineer %s: recorded %d experiment(s)', self.worker_id, recorded)
    return recorded

  def _queue_pending(self) -> bool:
    return bool(self.store.experiments(status=TRAIN_QUEUE, scale=self.settings.scale))

  def run_claim(self, claim: Claim) -> Result | None:
    """Trains, evaluates and records one claimed experiment. Returns the stored Result, or None when it failed
    (recorded as 'failed') or the claim was abandoned (lost, or the worker is stopping)."""
    self._handle(claim)
    return self._last_result

  # ------------------------------------------------------------------------------------------ one claim
  def _handle(self, claim: Claim) -> Status | None:
    self._last_result = None
    start = time.monotonic()
    with _Heartbeat(self.store, claim, self.settings.heartbeat_s) as heartbeat:
      try:
        return self._run(claim, heartbeat, start)
      except (_Abandon, ClaimLostError, ClaimHeldError) as e:
        logging.warning('Engineer %s abandons experiment %d: %s', self.worker_id, claim.experiment_id, e)
        if self._stop.is_set() and heartbeat.lost is None:
          self._release(claim)
        return None

  def _release(self, claim: Claim) -> None:
    try:
      self.store.release(claim)  # back to the queue at once rather than after the lease
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('could not release experiment %d: %s', claim.experiment_id, e)

  def _run(self, claim: Claim, heartbeat: _Heartbeat, start: float) -> Status | None:
    s = self.settings
    exp = self.store.get_experiment(claim.experiment_id)
    if exp.status == Status.CHECKED:
      exp = self.store.transition(exp.id, Status.TRAINING, claim=claim)
    elif exp.status != Status.TRAINING:
      logging.warning('experiment %d is %s, not checked/training; releasing it', exp.id, exp.status.value)
      self._release(claim)
      return None
    if claim.attempt > s.max_attempts:
      return self._fail(claim, exp, fl.Failure(
          fl.ATTEMPTS, f'claimed {claim.attempt} times without finishing (max_attempts={s.max_attempts}): its '
          f'workers died or lost their lease; see the status history', {'attempts': claim.attempt}))
    design = self.store.get_design(exp.design)
    try:
      experiment_train_config(s.train, design, exp.config)
    except ConfigOverrideError as e:
      return self._fail(claim, exp, fl.Failure(fl.CONFIG, str(e), {'config': exp.config}))

    source, history, calls, kernel_retry = design.source, [], 0, None
    while True:
      outcome = self._train(claim, exp, design, source, heartbeat)
      if kernel_retry is None and s.kernel_retry and outcome.kernel_suspect and not outcome.interrupted and \
          self.kernel_verdicts().worth_retrying(outcome.kernel_scope, outcome.kernels):
        outcome, kernel_retry = self._train_without_kernels(claim, exp, design, source, outcome, heartbeat)
      if outcome.interrupted:
        raise _Abandon(outcome.interrupted)
      if outcome.ok:
        return self._record(claim, exp, design, source, outcome, history, start, kernel_retry)
      failure = outcome.failure
      logging.warning('experiment %d (%s) failed: %s', exp.id, design.name, describe(outcome))
      if not failure.debuggable or design.kind != DesignKind.PROGRAM:
        break
      if self.debugger is None:
        failure.message += ' (no Debugger attached)'
        break
      if calls >= s.debug_attempts:
        failure.message += f' (still failing after {calls} Debugger fix(es))'
        break
      fixed, calls = self._debug(claim, exp, design, source, outcome, failure, history, calls, heartbeat)
      if fixed is None:
        failure.message += (f" (the Debugger gave up at attempt {calls})" if history and
                            history[-1]['outcome'] == 'gave up' else f' (not fixed in {calls} Debugger attempt(s))')
        break
      design = record_program_version(self.store, design.name, fixed, claim=claim, note={
          'by': 'debugger', 'fixes': failure.kind, 'error': failure.message[:300], 'debug_attempt': calls})
      source = fixed
    failure.diagnostics['debug'] = history
    failure.diagnostics['program_hash'] = program_hash(source)
    return self._fail(claim, exp, failure)

  def _check_live(self, heartbeat: _Heartbeat) -> None:
    if heartbeat.lost is not None:
      raise _Abandon(f'claim lost: {heartbeat.lost}')
    if self._stop.is_set():
      raise _Abandon('worker stopping')

  def _debug(self, claim: Claim, exp: Experiment, design: Design, source: str, outcome: RunOutcome,
             failure: fl.Failure, history: list[dict], calls: int, heartbeat: _Heartbeat) -> tuple[str | None, int]:
    """Asks the Debugger for a fix until one passes the Checker, it gives up, or the attempts run out."""
    from aira_jax.discovery.sandbox import check_program  # pylint: disable=import-outside-toplevel
    s, log, current = self.settings, outcome.error_log, source
    while calls < s.debug_attempts:
      calls += 1
      request = DebugRequest(design=design.name, source=current, error_log=log, attempt=calls,
                             max_attempts=s.debug_attempts, kind=failure.kind, experiment_id=exp.id,
                             motivation=design.motivation)
      try:
        fixed = self.debugger(request)
      except Exception as e:  # pylint: disable=broad-except
        logging.exception('the Debugger raised on experiment %d', exp.id)
        history.append({'attempt': calls, 'outcome': 'gave up', 'error': f'{type(e).__name__}: {e}'})
        return None, calls
      self._check_live(heartbeat)
      if not fixed or not fixed.strip():
        history.append({'attempt': calls, 'outcome': 'gave up'})
        return None, calls
      if fixed == current:
        history.append({'attempt': calls, 'outcome': 'unchanged'})
        log = f'The program you returned is unchanged; the error it must fix:\n{outcome.error_log}'
        continue
      verdict = check_program(fixed, _safe(design.name).replace('.', '_'), s.check)
      self._check_live(heartbeat)
      if verdict.ok:
        history.append({'attempt': calls, 'outcome': 'accepted', 'hash': program_hash(fixed),
                        'check_s': round(verdict.seconds, 1)})
        logging.info('Debugger fix %d for %s passed the Checker', calls, design.name)
        return fixed, calls
      history.append({'attempt': calls, 'outcome': f'rejected at gate {verdict.gate}', 'reason': verdict.reason[:500]})
      current = fixed
      log = (f'The fixed program was rejected by the Checker at gate {verdict.gate!r}: {verdict.reason}\n\n'
             f'The training error it was meant to fix:\n{outcome.error_log}')
    return None, calls

  def _train_without_kernels(self, claim: Claim, exp: Experiment, design: Design, source: str, failed: RunOutcome,
                             heartbeat: _Heartbeat) -> tuple[RunOutcome, dict]:
    """A run failed after Pallas kernels ran, the way a faulty kernel fails it (kernel_faults.kernel_suspect):
    trains the same program again, from scratch, with those kernels set aside. If that run succeeds the kernels
    were at fault: a FAULT verdict in the store sets them aside for every later run in this scope, by any worker.
    If it fails too, the failure is the design's and its own (XLA) failure is the one recorded and debugged, and
    the kernels get a CLEARED verdict. Returns (outcome, what happened)."""
    first = failed.failure
    why = f'runtime failure in experiment {exp.id} ({first.kind}: {first.message[:200]})'
    aside = {op: why for op in failed.kernels}
    logging.warning('Engineer %s: experiment %d (%s) failed with the Pallas kernel(s) %s in use (%s); training it '
                    'again with the XLA ops to tell a kernel fault from the design\'s', self.worker_id, exp.id,
                    design.name, ', '.join(failed.kernels), first.kind)
    retry = self._train(claim, exp, design, source, heartbeat, set_aside=aside, subdir='kernels-set-aside')
    if not self.settings.keep_checkpoints:
      self._drop_checkpoints(failed)  # the failed run's logs and metrics stay as evidence
    scope = failed.kernel_scope or kernel_faults.scope('unknown device')
    note = {'kernels': failed.kernels, 'failure': f'{first.kind}: {first.message[:300]}',
            'child_dir': failed.child_dir, 'scope': scope}
    if retry.ok:
      note['verdict'] = 'kernel fault'
      self._add_kernel_verdicts(exp, failed.kernels, scope, KERNEL_FAULT, why)
      logging.warning('Engineer %s: experiment %d trained with the XLA ops: the Pallas kernel(s) %s are set aside '
                      'for every later run on %s', self.worker_id, exp.id, ', '.join(failed.kernels), scope)
    elif retry.failure is not None:
      note['verdict'] = 'design fault'
      retry.failure.diagnostics['kernel_retry'] = note
      logging.info('Engineer %s: experiment %d fails with the XLA ops too (%s): not the kernels\' fault',
                   self.worker_id, exp.id, retry.failure.kind)
      self._add_kernel_verdicts(exp, failed.kernels, scope, KERNEL_CLEARED, why)
      cleared = self.kernel_verdicts().cleared(scope)
      for op in sorted(op for op in failed.kernels if cleared.get(op) == TRUST_AFTER):  # trusted just now
        logging.info('Engineer %s: the %s kernel was cleared %d times; its failures are no longer retried',
                     self.worker_id, op, TRUST_AFTER)
    return retry, note

  def kernel_verdicts(self) -> KernelVerdicts:
    """What every worker of this run has learned about kernels failing at run time (the store's verdicts)."""
    return KernelVerdicts(self.store.kernel_verdicts())

  def _add_kernel_verdicts(self, exp: Experiment, kernels: list[str], scope: str, verdict: str, why: str) -> None:
    for op in kernels:
      self.store.add_kernel_verdict(exp.id, KernelVerdict(op=op, scope=scope, verdict=verdict, reason=why,
                                                          worker=self.worker_id))

  def _train(self, claim: Claim, exp: Experiment, design: Design, source: str, heartbeat: _Heartbeat, *,
             set_aside: dict[str, str] | None = None, subdir: str | None = None) -> RunOutcome:
    s = self.settings
    self._check_live(heartbeat)
    digest = program_hash(source)
    kind = 'program' if design.kind == DesignKind.PROGRAM else 'pattern'
    prog_dir = self._experiment_dir(exp) / f'{kind}-{digest[:12]}'
    if subdir:
      prog_dir = prog_dir / subdir
    if not s.resume:
      prog_dir = prog_dir / f'claim-{claim.attempt}-{_safe(self.worker_id)}'
    self._tries += 1
    child_dir = prog_dir / f'child-{claim.attempt}-{_safe(self.worker_id)}-{os.getpid()}-{self._tries}'
    config = experiment_train_config(s.train, design, exp.config, source=source)
    platform = s.platform or os.environ.get('JAX_PLATFORMS', '')
    evaluation = None
    if s.eval_tasks or s.held_out_tasks:
      evaluation = {'tasks': list(s.eval_tasks), 'held_out': list(s.held_out_tasks), 'limit': s.eval_limit,
                    'data_dir': s.harness_data_dir}
    request = ChildRequest(config=config.to_dict(), seeds=s.seeds,
                           run_dirs={seed: str(prog_dir / f'seed-{seed}') for seed in s.seeds},
                           eval=evaluation, runtime_guard=s.runtime_guard, platform=platform,
                           memory_mb=s.memory_mb, address_space_slack_mb=s.address_space_slack_mb,
                           set_aside=dict(set_aside or {}),
                           set_aside_by_scope=self.kernel_verdicts().aside_by_scope())
    limits = RunLimits(timeout_s=s.timeout_s, eval_timeout_s=s.eval_timeout_s, memory_mb=s.memory_mb,
                       first_step_timeout_s=s.first_step_timeout_s,
                       divergence_factor=s.divergence_factor, divergence_patience=s.divergence_patience)

    def should_abort() -> str | None:
      if heartbeat.lost is not None:
        return f'claim lost: {heartbeat.lost}'
      return 'worker stopping' if self._stop.is_set() else None

    logging.info('Engineer %s: training experiment %d (%s, program %s, seeds %s%s) in %s', self.worker_id,
                 exp.id, design.name, digest[:12], list(s.seeds),
                 f", kernels set aside: {', '.join(sorted(request.set_aside))}" if request.set_aside else '',
                 prog_dir)
    return run_training_child(request, str(child_dir), limits, should_abort=should_abort)

  def _experiment_dir(self, exp: Experiment) -> Path:
    return Path(self.settings.workdir_root).expanduser().resolve() / f'exp-{exp.id:06d}-{_safe(exp.design)}'

  # ------------------------------------------------------------------------------------------ recording
  def _record(self, claim: Claim, exp: Experiment, design: Design, source: str, outcome: RunOutcome,
              history: list[dict], start: float, kernel_retry: dict | None = None) -> Status:
    for ev in outcome.evals.values():
      for task, why in (ev.get('skipped') or {}).items():
        logging.warning('experiment %d: harness task %s skipped: %s', exp.id, task, why)
    result = build_result(outcome, seeds=self.settings.seeds, wall_time_s=time.monotonic() - start, extra_meta={
        'worker': self.worker_id, 'claim_attempt': claim.attempt, 'program_hash': program_hash(source),
        'design_kind': design.kind.value, 'debug': history, 'workdir': os.path.dirname(outcome.child_dir),
        'child_dir': outcome.child_dir, 'child_started_at': outcome.started_at, 'scale': exp.scale,
        **({'kernel_retry': kernel_retry} if kernel_retry else {})})
    self._last_result = self.store.add_result(exp.id, result, claim=claim)
    self._release(claim)  # trained is not terminal: free the experiment for the next stage (analysis) at once
    if not self.settings.keep_checkpoints:
      self._drop_checkpoints(outcome)
    logging.info('Engineer %s: experiment %d (%s) trained: val_loss %s, %.1f s', self.worker_id, exp.id,
                 design.name, result.val_loss, result.wall_time_s or 0.0)
    return Status.TRAINED

  def _drop_checkpoints(self, outcome: RunOutcome) -> None:
    for seed in self.settings.seeds:
      shutil.rmtree(os.path.join(os.path.dirname(outcome.child_dir), f'seed-{seed}', 'checkpoints'),
                    ignore_errors=True)

  def _fail(self, claim: Claim, exp: Experiment, failure: fl.Failure) -> Status:
    failure.diagnostics.setdefault('worker', self.worker_id)
    failure.diagnostics.setdefault('claim_attempt', claim.attempt)
    exp_dir = self._experiment_dir(exp)
    try:
      exp_dir.mkdir(parents=True, exist_ok=True)
      (exp_dir / f'failure-{claim.attempt}.txt').write_text(failure.reason(), encoding='utf-8')
    except OSError as e:
      logging.warning('could not write the failure file in %s: %s', exp_dir, e)
    self.store.transition(exp.id, Status.FAILED, reason=failure.reason(), claim=claim)
    logging.warning('Engineer %s: experiment %d (%s) failed: %s: %s', self.worker_id, exp.id, exp.design,
                    failure.kind, failure.message[:500])
    return Status.FAILED
