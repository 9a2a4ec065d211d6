"""The Engineer's training child: trains one design for each seed, then evaluates it, in a throwaway process.

    python -m aira_jax.discovery.engineer_child <dir>     (started by aira_jax.discovery.training_run)

<dir>/request.json says what to run (see `training_run.ChildRequest`; `set_aside` and this device's entry of
`set_aside_by_scope` name kernels this run must not use); progress goes to <dir>/events.jsonl as JSON lines:
start, device (kernel_faults.scope: the device kind and software, which kernel verdicts are scoped to),
seed_start, seed_done (the trainer's summary), eval_start, eval_done, error (phase, exception type, message,
full traceback, the program line), done. The parent enforces time and memory limits, watches the
metrics JSONL for NaN and divergence, and kills this process (its whole group) when a limit is crossed.

Like the Checker's sandbox, the child lowers its own core and address-space limits and installs the runtime guard
(aira_jax.discovery.runtime_guard.RuntimeGuard) after JAX, the trainer and the harness are imported and before
the design program is loaded, so the program's own code cannot touch files, processes or the network while it
trains.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from typing import Any

from aira_jax.discovery import kernel_faults
from aira_jax.discovery.policy import DESIGN_FILENAME_PREFIX

PARENT_POLL_S = 0.5
EXIT_REPORTED_ERROR = 1
EXIT_ORPHANED = 70


class _Events:
  def __init__(self, path: str):
    self._file = open(path, 'a', encoding='utf-8', buffering=1)

  def emit(self, event: str, **fields: Any) -> None:
    from aira_jax.discovery.failures import jsonable  # pylint: disable=import-outside-toplevel
    self._file.write(json.dumps(jsonable({'event': event, 'time': time.time(), **fields})) + '\n')
    self._file.flush()


def _limit_resources(request: dict[str, Any]) -> None:
  import resource  # pylint: disable=import-outside-toplevel
  resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
  # On CPU an address-space cap turns one huge allocation into a clean allocation error before the parent's
  # resident-memory watch could see it. Accelerator drivers reserve vast address ranges, so only on CPU.
  limit_mb, slack_mb = int(request.get('memory_mb') or 0), int(request.get('address_space_slack_mb') or 0)
  if request.get('platform', '') == 'cpu' and limit_mb > 0 and slack_mb > 0:
    limit = (limit_mb + slack_mb) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _exit_with_parent() -> None:
  """A worker killed with SIGKILL cannot kill its child: the child notices it was orphaned and exits."""
  parent = os.getppid()

  def watch():
    while True:
      time.sleep(PARENT_POLL_S)
      if os.getppid() != parent:
        os._exit(EXIT_ORPHANED)  # pylint: disable=protected-access

  threading.Thread(target=watch, name='parent-watch', daemon=True).start()


def _program_line(exc: BaseException) -> tuple[int | None, str | None]:
  import linecache  # pylint: disable=import-outside-toplevel
  found: tuple[int | None, str | None] = (None, None)
  for frame in traceback.extract_tb(exc.__traceback__):
    if frame.filename.startswith(DESIGN_FILENAME_PREFIX):
      text = frame.line or linecache.getline(frame.filename, frame.lineno or 0).strip()
      found = (frame.lineno, text or None)
  return found


def _report_error(events: _Events, phase: str, seed: int | None, exc: BaseException) -> None:
  lineno, line = _program_line(exc)
  events.emit('error', phase=phase, seed=seed, exc_type=type(exc).__name__, message=str(exc),
              traceback=''.join(traceback.format_exception(exc)), program_lineno=lineno, program_line=line)


def _evaluate(config, run_dir: str, spec: dict[str, Any], events: _Events, seed: int) -> dict[str, Any]:
  """Harness scores of the trained model for the tasks whose data is present; the others are skipped. Each batch
  shape's scorer announces its compile and first batch as events (kernel_check, eval_compile, first_eval), so the
  parent ends a kernel that hangs there as it ends a first training step that hangs."""
  from pathlib import Path  # pylint: disable=import-outside-toplevel
  from aira_jax.evaluate import harness  # pylint: disable=import-outside-toplevel
  from aira_jax.evaluate.harness import data as data_lib  # pylint: disable=import-outside-toplevel
  from aira_jax.evaluate.restore import load_run  # pylint: disable=import-outside-toplevel
  data_dir = Path(spec['data_dir']) if spec.get('data_dir') else data_lib.default_data_dir()
  present: dict[str, list[str]] = {'fitness': [], 'held_out': []}
  skipped: dict[str, str] = {}
  for group, names in (('fitness', spec.get('tasks') or []), ('held_out', spec.get('held_out') or [])):
    for name in names:
      try:
        task = harness.get_task(name)
      except (KeyError, ValueError) as e:
        skipped[name] = f'unknown task: {e}'
        continue
      if data_lib.find_file(data_dir, task.data_files) is None:
        skipped[name] = f"no data file ({' or '.join(task.data_files)}) in {data_dir}"
      else:
        present[group].append(name)
  if not present['fitness'] and not present['held_out']:
    return {'fitness': {}, 'held_out': {}, 'skipped': skipped}
  run = load_run(run_dir, config=config)
  limit = spec.get('limit')
  from aira_jax.ops.fallback import FirstRunWatch  # pylint: disable=import-outside-toplevel
  watch = FirstRunWatch(
      self_test=lambda kernels: events.emit('kernel_check', seed=seed, step_fn='harness', ops={'kernels': kernels}),
      compiled=lambda ops, seconds: events.emit('eval_compile', seed=seed, step_fn='harness', ops=ops,
                                                compile_seconds=seconds),
      first_run=lambda seconds: events.emit('first_eval', seed=seed, step_fn='harness', seconds=seconds))
  result = harness.evaluate_model(
      run.model, run.tokenizer, present['fitness'], limit, held_out=present['held_out'],
      data_dir=str(data_dir), data_source='local', max_length=run.seq_len,
      compute_dtype=str(config.train.compute_dtype), watch=watch)
  higher = {n: r.higher_is_better for n, r in result.tasks.items()}
  return {'fitness': result.fitness, 'held_out': result.held_out, 'higher_is_better': higher,
          'timing': result.timing, 'skipped': skipped}


def child_main(workdir: str) -> int:
  with open(os.path.join(workdir, 'request.json'), encoding='utf-8') as f:
    request = json.load(f)
  _limit_resources(request)
  _exit_with_parent()
  events = _Events(os.path.join(workdir, 'events.jsonl'))
  events.emit('start', pid=os.getpid())
  from absl import flags, logging  # pylint: disable=import-outside-toplevel
  flags.FLAGS.mark_as_parsed()  # no command-line flags here; absl then logs INFO to stderr like under app.run
  logging.use_absl_handler()  # the trainer's progress lines go to the log the parent keeps
  logging.set_verbosity(logging.INFO)
  logging.set_stderrthreshold(logging.INFO)
  try:
    # Everything training and evaluation use is imported before the guard goes up.
    import jax  # pylint: disable=import-outside-toplevel
    import ml_collections  # pylint: disable=import-outside-toplevel
    from aira_jax.evaluate import harness  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    from aira_jax.evaluate import restore  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    from aira_jax.train import trainer  # pylint: disable=import-outside-toplevel
    from aira_jax.discovery.runtime_guard import RuntimeGuard  # pylint: disable=import-outside-toplevel
    trainer.default_builders()  # imports aira_jax.data and aira_jax.models
    scope = kernel_faults.scope(jax.devices()[0].device_kind)
    events.emit('device', scope=scope)
    # Kernels found faulty at run time on this kind of device (the store's verdicts), and those the Engineer
    # sets aside for this run (its retry without them): the XLA ops instead.
    aside = {**(request.get('set_aside_by_scope') or {}).get(scope, {}), **(request.get('set_aside') or {})}
    if aside:
      from aira_jax.ops import dispatch  # pylint: disable=import-outside-toplevel
      for op, why in sorted(aside.items()):
        dispatch.set_aside([op], why)
      logging.warning('Pallas kernel(s) set aside for this run: %s', ', '.join(sorted(aside)))
  except BaseException as e:  # pylint: disable=broad-except
    _report_error(events, 'setup', None, e)
    return EXIT_REPORTED_ERROR
  guard = RuntimeGuard.install() if request.get('runtime_guard', True) else None
  os.chdir(workdir)
  spec = request.get('eval')
  for seed in request['seeds']:
    run_dir = request['run_dirs'][str(seed)]
    config = ml_collections.ConfigDict(request['config'])
    config.seed = int(seed)
    events.emit('seed_start', seed=seed, run_dir=run_dir)
    try:
      summary = trainer.train(config, run_dir)
    except BaseException as e:  # pylint: disable=broad-except
      _report_error(events, 'train', seed, e)
      return EXIT_REPORTED_ERROR
    if guard is not None and (refused := guard.drain()):
      events.emit('error', phase='train', seed=seed, exc_type='PolicyError', traceback='',
                  message=f"design program policy: refused {'; '.join(refused[:5])}")
      return EXIT_REPORTED_ERROR
    events.emit('seed_done', seed=seed, summary=summary)
    if spec and (spec.get('tasks') or spec.get('held_out')):
      events.emit('eval_start', seed=seed)
      try:
        scores = _evaluate(config, run_dir, spec, events, seed)
      except BaseException as e:  # pylint: disable=broad-except
        _report_error(events, 'eval', seed, e)
        return EXIT_REPORTED_ERROR
      events.emit('eval_done', seed=seed, scores=scores)
  events.emit('done')
  return 0


if __name__ == '__main__':
  if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
    print('usage: python -m aira_jax.discovery.engineer_child <dir> (started by the Engineer)', file=sys.stderr)
    sys.exit(2)
  sys.exit(child_main(sys.argv[1]))
