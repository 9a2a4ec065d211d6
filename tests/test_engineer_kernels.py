"""The Engineer and the Pallas kernels: a kernel choice inside the guarded training child, and a kernel that
compiles but fails at run time (NaN, a hang), told apart from a design that fails on its own.

Each end-to-end test starts real (tiny) training children on the CPU; the misbehaving "kernels" are registered
for the CPU backend by a sitecustomize.py on the children's PYTHONPATH.
"""
import glob
import json
import math
import os
import time

import pytest

from aira_jax.discovery import failures as fl
from aira_jax.discovery.engineer import Engineer
from aira_jax.discovery import kernel_faults
from aira_jax.discovery.kernel_faults import FIRST_STEP, KernelVerdicts, kernel_suspect
from aira_jax.discovery.records import KernelVerdict
from aira_jax.discovery.store import ExperimentStore

from tests import engineer_helpers as h
from tests.engineer_helpers import failure_of, queue, run_one, settings


@pytest.fixture
def store(tmp_path):
  s = ExperimentStore(tmp_path / 'store.sqlite')
  yield s
  s.close()



@pytest.mark.parametrize('backend', ['gpu', 'tpu'])
def test_a_kernel_choice_in_the_guarded_child_falls_back_and_is_recorded(backend, store, tmp_path, monkeypatch):
  """The GPU / TPU path of a training child, rehearsed on CPU: AIRA_JAX_OPS_TARGET makes the child choose the
  Mosaic kernels. They are imported before the runtime guard goes up (else the guard refuses their import and the
  run fails), chosen while the design's code runs, and, since they cannot compile on a CPU, set aside: training
  goes on with the XLA ops and the result says so."""
  from aira_jax.models import baseline_source
  monkeypatch.setenv('AIRA_JAX_OPS_TARGET', backend)
  exp_id = queue(store, f'deltanet-on-{backend}-path', baseline_source('deltanet'))
  train = h.tiny_train_config(compute_dtype='bfloat16')
  eng = Engineer(store, settings(tmp_path, train=train, seeds=(0,)), worker_id='w0')
  result = run_one(store, eng, exp_id)
  assert result is not None, store.get_experiment(exp_id).reason
  ops = result.meta['summaries']['0']['ops']
  assert ops['kernels'] == [] and list(ops['set_aside']) == [f'delta_rule@{backend}'], ops
  assert result.val_loss is not None and result.loss_curve[-1][1] < result.loss_curve[0][1]


# A Pallas kernel that compiles and then computes garbage: the XLA delta rule with its outputs turned to NaN,
# registered as the CPU backend's kernel by a sitecustomize on the training child's PYTHONPATH.
_NAN_KERNEL_SITE = '''
import jax
import jax.numpy as jnp
from aira_jax.ops import dispatch
from pallas_kernels.delta_rule.xla import chunk_delta_rule


def _nan_delta_rule(q, k, v, beta, **kw):
  return jax.tree.map(lambda a: a * jnp.nan, chunk_delta_rule(q, k, v, beta, **kw))


dispatch.register_kernel('delta_rule', 'cpu', _nan_delta_rule)
'''


# ... and one that never finishes its first step (a kernel that deadlocks on a GPU).
_HANGING_KERNEL_SITE = '''
import time
import jax
from aira_jax.ops import dispatch
from pallas_kernels.delta_rule.xla import chunk_delta_rule


def _hang(*_):
  time.sleep(3600)


def _hanging_delta_rule(q, k, v, beta, **kw):
  jax.debug.callback(_hang, q)
  return chunk_delta_rule(q, k, v, beta, **kw)


dispatch.register_kernel('delta_rule', 'cpu', _hanging_delta_rule)
'''


def _kernel_on_child_path(tmp_path, monkeypatch, site_text):
  site = tmp_path / 'site'
  site.mkdir()
  (site / 'sitecustomize.py').write_text(site_text)
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(p for p in (str(site), os.environ.get('PYTHONPATH')) if p))
  monkeypatch.delenv('AIRA_JAX_OPS_IMPL', raising=False)


def test_a_kernel_that_fails_at_run_time_is_set_aside_after_one_retry(store, tmp_path, monkeypatch):
  """The kernel compiles, then the loss is NaN: the Engineer trains the design once more with the kernel set
  aside; that run succeeds, so the result is recorded (saying what happened), the store records the kernel as
  faulty on this device, and later runs, by any Engineer of the run, use the XLA ops from the start, without a
  failed run first. A verdict found on another kind of device does not set the kernel aside here."""
  from aira_jax.models import baseline_source
  _kernel_on_child_path(tmp_path, monkeypatch, _NAN_KERNEL_SITE)
  first = queue(store, 'deltanet-first', baseline_source('deltanet'))
  second = queue(store, 'deltanet-second', baseline_source('deltanet') + '\n')
  elsewhere = kernel_faults.scope('NVIDIA H200')
  store.add_kernel_verdict(first, KernelVerdict(op='delta_rule', scope=elsewhere, verdict='fault', reason='x'))
  # Without the kernel self-test, which would set this kernel aside at compile time (test_kernel_fallback): here
  # it is one whose faults only training shows.
  eng = Engineer(store, settings(tmp_path, seeds=(0,), train=h.tiny_train_config(check_kernel_ops=False)),
                 worker_id='w0')

  result = run_one(store, eng, first)
  assert result is not None, store.get_experiment(first).reason
  retry = result.meta['kernel_retry']
  assert retry['verdict'] == 'kernel fault' and retry['kernels'] == ['delta_rule'], retry
  assert retry['failure'].startswith('nan: training loss became nan'), retry
  # The failed run's trainer said, before its first step, that the step ran the kernel.
  failed_metrics = os.path.join(os.path.dirname(retry['child_dir']), 'seed-0', 'metrics.jsonl')
  compile_record = json.loads(open(failed_metrics, encoding='utf-8').readline())
  assert compile_record['kind'] == 'compile' and compile_record['ops']['kernels'] == ['delta_rule']
  ops = result.meta['summaries']['0']['ops']
  assert ops['kernels'] == [] and list(ops['set_aside']) == ['delta_rule@cpu'], ops
  assert ops['set_aside']['delta_rule@cpu'].startswith(f'runtime failure in experiment {first} (nan: ')
  assert math.isfinite(result.val_loss) and result.loss_curve[-1][1] < result.loss_curve[0][1]

  # What the first Engineer learned reaches every other (the loop makes one per iteration, --workers=N one per
  # process, a resumed run new ones) through the store, scoped to this device and software.
  here = kernel_faults.scope('cpu')
  assert retry['scope'] == here, retry
  assert KernelVerdicts(store.kernel_verdicts()).aside_by_scope() == {
      elsewhere: {'delta_rule': 'x'}, here: {'delta_rule': ops['set_aside']['delta_rule@cpu']}}
  later = run_one(store, Engineer(store, eng.settings, worker_id='w1'), second)
  assert later is not None and 'kernel_retry' not in later.meta, later.meta
  assert list(later.meta['summaries']['0']['ops']['set_aside']) == ['delta_rule@cpu']
  assert len(glob.glob(str(tmp_path / 'runs' / f'exp-{second:06d}-*' / '*' / 'child-*'))) == 1


def test_a_kernel_that_hangs_is_ended_by_the_first_step_limit(store, tmp_path, monkeypatch):
  """The kernel never returns: its self-test (the first thing to run it, announced by a kernel_check record)
  hangs, the first-step limit ends the run long before the run's own limit, and the retry without the kernel
  trains."""
  from aira_jax.models import baseline_source
  _kernel_on_child_path(tmp_path, monkeypatch, _HANGING_KERNEL_SITE)
  exp_id = queue(store, 'deltanet-hangs', baseline_source('deltanet'))
  eng = Engineer(store, settings(tmp_path, seeds=(0,), first_step_timeout_s=3.0, timeout_s=600.0),
                 worker_id='w0')
  start = time.monotonic()
  result = run_one(store, eng, exp_id)
  assert result is not None, store.get_experiment(exp_id).reason
  retry = result.meta['kernel_retry']
  assert retry['verdict'] == 'kernel fault', retry
  assert retry['failure'].startswith('timeout: timed out: the Pallas kernel self-test of the training step (one '
                                     'call of each kernel against its XLA op) did not finish within 3 s'), retry
  failed = [json.loads(x) for x in open(os.path.join(os.path.dirname(retry['child_dir']), 'seed-0',
                                                      'metrics.jsonl'), encoding='utf-8')]
  assert [m['kind'] for m in failed] == ['kernel_check'] and failed[0]['ops']['kernels'] == ['delta_rule']
  assert time.monotonic() - start < 300
  metrics = [json.loads(x) for x in open(os.path.join(os.path.dirname(result.meta['child_dir']), 'seed-0',
                                                       'metrics.jsonl'), encoding='utf-8')]
  assert [m['kind'] for m in metrics[:2]] == ['compile', 'first_step'] and metrics[1]['step'] == 1


def test_the_first_step_clock_runs_from_the_kernel_check_then_from_the_compile(tmp_path, monkeypatch):
  """The parent's watch of one seed: a kernel_check record starts the first-step clock (the self-test runs the
  kernels), the compile record restarts it, the first_step record stops it; the kernels are noted from both. The
  evaluation step's records (kernel_check with step_fn eval, eval_compile, first_eval) run the clock again, and a
  hang there is a first-step timeout too (a kernel suspect), named as the evaluation's; so do the harness scorers'
  events after training."""
  from aira_jax.discovery import training_run as tr
  now = [100.0]
  monkeypatch.setattr(tr.time, 'monotonic', lambda: now[0])
  request = tr.ChildRequest(config={}, seeds=(0,), run_dirs={0: str(tmp_path)})
  monitor = tr._Monitor(request, tr.RunLimits(timeout_s=600.0, eval_timeout_s=60.0, memory_mb=0,
                                              first_step_timeout_s=5.0), tr.RunOutcome())
  monitor.on_event({'event': 'seed_start', 'seed': 0})
  metrics = tmp_path / 'metrics.jsonl'

  def record(kind, **fields):
    with open(metrics, 'a', encoding='utf-8') as f:
      f.write(json.dumps({'kind': kind, 'step': 0, **fields}) + '\n')
    monitor.read_metrics()

  now[0] += 50.0  # building and compiling the step: the run's own limit applies, not the first-step one
  assert monitor.deadline_passed(now[0]) is None
  record('kernel_check', ops={'kernels': ['delta_rule']})
  now[0] += 6.0
  assert monitor.deadline_passed(now[0]) == (FIRST_STEP, 5.0) and monitor.clock_from == 'kernel_check'
  record('compile', ops={'kernels': ['delta_rule', 'simple_gla']})
  now[0] += 4.0
  assert monitor.deadline_passed(now[0]) is None and monitor.clock_from == 'compile'
  now[0] += 2.0
  assert monitor.deadline_passed(now[0]) == (FIRST_STEP, 5.0)
  record('first_step', seconds_after_compile=5.5)
  assert monitor.deadline_passed(now[0]) is None and monitor.kernels == {'delta_rule', 'simple_gla'}
  now[0] += 100.0  # training: only the run's own limit applies

  # The first validation compiles the evaluation step, whose forward may run other kernels: watched the same way.
  record('kernel_check', step_fn='eval', ops={'kernels': ['attention']})
  now[0] += 6.0
  assert monitor.deadline_passed(now[0]) == (FIRST_STEP, 5.0) and monitor.clock_step == 'eval'
  record('eval_compile', ops={'kernels': ['attention']})
  now[0] += 4.0
  assert monitor.deadline_passed(now[0]) is None and monitor.clock_from == 'eval_compile'
  now[0] += 2.0
  late = monitor.deadline_passed(now[0])
  assert late == (FIRST_STEP, 5.0) and 'attention' in monitor.kernels
  outcome = monitor.outcome
  log = tmp_path / 'child.log'
  log.write_text('')
  tr._conclude(outcome, monitor, ('timeout', late), -9, str(log), monitor.limits)
  assert outcome.failure.kind == 'timeout' and outcome.failure.diagnostics['stage'] == FIRST_STEP
  assert outcome.kernel_suspect and 'attention' in outcome.kernels  # so the run is retried without the kernels
  assert outcome.failure.message.startswith('timed out: the first evaluation step did not finish within 5 s'), \
      outcome.failure.message
  record('first_eval', seconds=7.0)
  assert monitor.deadline_passed(now[0]) is None

  # After training, the harness's scorers (one per batch shape) report through the child's events.
  monitor.on_event({'event': 'seed_done', 'seed': 0, 'summary': {}})
  monitor.on_event({'event': 'eval_start', 'seed': 0})
  monitor.on_event({'event': 'eval_compile', 'seed': 0, 'step_fn': 'harness', 'ops': {'kernels': ['simple_gla']}})
  now[0] += 4.0
  assert monitor.deadline_passed(now[0]) is None
  monitor.on_event({'event': 'first_eval', 'seed': 0, 'step_fn': 'harness', 'seconds': 3.0})
  monitor.on_event({'event': 'eval_compile', 'seed': 0, 'step_fn': 'harness', 'ops': {'kernels': ['simple_gla']}})
  now[0] += 6.0
  late = monitor.deadline_passed(now[0])
  assert late == (FIRST_STEP, 5.0) and monitor.clock_step == 'harness'
  tr._conclude(outcome, monitor, ('timeout', late), -9, str(log), monitor.limits)
  assert outcome.failure.message.startswith('timed out: the first benchmark scoring step did not finish within 5 '
                                            's'), outcome.failure.message


_SCOPE = 'Planted GPU (jax 0.11.2)'


def _outcome(kind=None, kernels=(), suspect=False, interrupted=None):
  from aira_jax.discovery.training_run import RunOutcome
  failure = fl.Failure(kind, f'planted {kind}') if kind else None
  out = RunOutcome(failure=failure, kernels=list(kernels), kernel_suspect=suspect, interrupted=interrupted,
                   child_dir='/nowhere/child-1', kernel_scope=_SCOPE)
  if failure is None and interrupted is None:
    out.summaries = {0: {'final_val_loss': 2.0, 'final_train_loss': 2.0, 'steps': 8, 'tokens': 1024}}
  return out


@pytest.mark.parametrize('retry_setting', [True, False])
def test_a_failure_the_xla_ops_repeat_is_the_designs(store, tmp_path, monkeypatch, retry_setting):
  """Kernels ran and the loss went NaN, and it does so again with them set aside: the NaN is the design's. It is
  recorded with the retry in its diagnostics and the kernels stay in use; a kernel cleared twice is trusted.
  kernel_retry=False skips the retry."""
  exp_id = queue(store, 'nan-design', h.GOOD)
  eng = Engineer(store, settings(tmp_path, kernel_retry=retry_setting), worker_id='w0')
  calls = []

  def fake_train(claim, exp, design, source, heartbeat, *, set_aside=None, subdir=None):
    calls.append((set_aside, subdir))
    return _outcome(fl.NAN, ['delta_rule'], suspect=set_aside is None)

  monkeypatch.setattr(eng, '_train', fake_train)
  assert run_one(store, eng, exp_id) is None
  failure = failure_of(store, exp_id)
  assert failure.kind == fl.NAN and eng.kernel_verdicts().aside_by_scope() == {}
  if not retry_setting:
    assert calls == [(None, None)] and 'kernel_retry' not in failure.diagnostics
    return
  assert [c[1] for c in calls] == [None, 'kernels-set-aside'] and list(calls[1][0]) == ['delta_rule']
  assert failure.diagnostics['kernel_retry']['verdict'] == 'design fault'
  # Cleared twice, the kernel is trusted: the third design that fails with it is not trained again.
  for i in range(2):
    calls.clear()
    run_one(store, eng, queue(store, f'nan-design-{i}', h.GOOD + f'\n# {i}\n'))
    assert len(calls) == (2 if i == 0 else 1), (i, calls)
  assert eng.kernel_verdicts().cleared(_SCOPE) == {'delta_rule': 2}
  assert [(v.op, v.verdict, v.worker) for v in store.kernel_verdicts()] == [('delta_rule', 'cleared', 'w0')] * 2


def test_kernel_suspicion_rules():
  crash = fl.Failure(fl.CRASH, 'x')
  assert kernel_suspect(fl.Failure(fl.NAN, 'x'), ['delta_rule'], None)
  assert kernel_suspect(fl.Failure(fl.DIVERGENCE, 'x'), ['simple_gla'], None)
  assert kernel_suspect(crash, ['delta_rule'], None)  # died in native code: no Python error reported
  assert kernel_suspect(crash, ['delta_rule'], {'exc_type': 'JaxRuntimeError', 'phase': 'train'})
  assert not kernel_suspect(crash, ['delta_rule'], {'exc_type': 'TypeError', 'phase': 'train'})  # a trace error
  assert not kernel_suspect(fl.Failure(fl.NAN, 'x'), [], None)  # no kernel ran
  for kind in (fl.OOM, fl.TIMEOUT, fl.POLICY, fl.CONFIG):
    assert not kernel_suspect(fl.Failure(kind, 'x'), ['delta_rule'], None)
  hang = fl.Failure(fl.TIMEOUT, 'x', {'stage': 'first step'})  # the first step never finished
  assert kernel_suspect(hang, ['delta_rule'], None) and not kernel_suspect(hang, [], None)


def test_kernel_verdicts_are_summarised_per_scope():
  """Faults set a kernel aside only in their own scope; clearances count per scope, and TRUST_AFTER of them
  make a kernel trusted there (its failures are no longer retried)."""
  gpu, tpu = kernel_faults.scope('NVIDIA H100'), kernel_faults.scope('TPU v5 lite')
  assert gpu != tpu and gpu.startswith('NVIDIA H100 (jax ') and 'aira-jax' in gpu
  rows = [KernelVerdict(op='delta_rule', scope=gpu, verdict='fault', reason='nan'),
          KernelVerdict(op='simple_gla', scope=tpu, verdict='cleared'),
          KernelVerdict(op='simple_gla', scope=gpu, verdict='cleared')]
  verdicts = KernelVerdicts(rows)
  assert verdicts.aside_by_scope() == {gpu: {'delta_rule': 'nan'}}
  assert verdicts.worth_retrying(tpu, ['simple_gla']) and verdicts.trusted(tpu) == []
  verdicts = KernelVerdicts(rows + [KernelVerdict(op='simple_gla', scope=tpu, verdict='cleared')])
  assert verdicts.trusted(tpu) == ['simple_gla'] and verdicts.cleared(gpu) == {'simple_gla': 1}
  assert not verdicts.worth_retrying(tpu, ['simple_gla'])
  assert verdicts.worth_retrying(tpu, ['simple_gla', 'delta_rule']) and verdicts.worth_retrying(gpu, ['simple_gla'])
  assert KernelVerdicts().aside_by_scope() == {} and not KernelVerdicts().worth_retrying(gpu, [])
