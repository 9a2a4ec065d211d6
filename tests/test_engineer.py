"""The Engineer: trains claimed designs in a child process, evaluates, records; failures are classified.

Each training test starts one real (tiny) training child: d_model 32, one layer, T=32, 8 steps on the CPU.
"""
import glob
import json
import math
import os
import threading
import time

import ml_collections
import pytest

from aira_jax.discovery import failures as fl
from aira_jax.discovery.engineer import DebugRequest, Engineer, EngineerSettings, settings_from_config
from aira_jax.discovery.engineer_result import benchmark_scores, mean_curve
from aira_jax.discovery.engineer_settings import ConfigOverrideError, apply_overrides, experiment_train_config
from aira_jax.discovery.program_versions import program_history, record_program_version
from aira_jax.discovery.queue import ClaimLostError
from aira_jax.discovery.records import Design, Status, program_hash
from aira_jax.discovery.store import ExperimentStore
from aira_jax.discovery.training_run import drop_stale_metrics

from tests import engineer_helpers as h
from tests.engineer_helpers import failure_of, queue, run_one, settings

@pytest.fixture
def store(tmp_path):
  s = ExperimentStore(tmp_path / 'store.sqlite')
  yield s
  s.close()


def write_piqa(directory, n=3):
  directory.mkdir(parents=True, exist_ok=True)
  with open(directory / 'piqa_validation.jsonl', 'w', encoding='utf-8') as f:
    for i in range(n):
      f.write(json.dumps({'goal': f'How do I open jar {i}?', 'sol1': 'Twist the lid.', 'sol2': 'Eat the lid.',
                          'label': i % 2}) + '\n')


# ------------------------------------------------------------------------------------------------ training
def test_trains_evaluates_and_records_result(store, tmp_path):
  data_dir = tmp_path / 'harness'
  write_piqa(data_dir)
  exp_id = queue(store, 'running-mean', h.GOOD)
  eng = Engineer(store, settings(tmp_path, seeds=(0, 1), eval_tasks=('piqa', 'arc_easy'), eval_limit=2,
                                 held_out_tasks=('lambada_openai',), harness_data_dir=str(data_dir),
                                 keep_checkpoints=False),
                 worker_id='w0')
  result = run_one(store, eng, exp_id)

  exp = store.get_experiment(exp_id)
  assert exp.status == Status.TRAINED and exp.claimed_by is None  # released for the next stage
  assert store.result(exp_id) == result
  assert [s for s, _ in result.loss_curve] == list(range(1, 9))
  assert result.loss_curve[-1][1] < result.loss_curve[0][1]  # it learned something
  assert result.seeds == (0, 1) and len(result.val_loss_per_seed) == 2
  assert result.val_loss_per_seed[0] != result.val_loss_per_seed[1]  # seeds really differ
  assert math.isclose(result.val_loss, sum(result.val_loss_per_seed) / 2)
  assert 0 < result.bpb < 20 and result.num_params > 0
  assert result.tokens == 8 * 4 * 32 and result.throughput > 0 and result.wall_time_s > 0
  assert set(result.benchmark_scores) == {'piqa'} and 0 <= result.benchmark_scores['piqa'] <= 1
  skipped = result.meta['eval_skipped']
  assert 'arc_easy' in skipped and 'no data file' in skipped['arc_easy'] and 'lambada_openai' in skipped
  assert result.meta['program_hash'] == program_hash(h.GOOD) and result.meta['worker'] == 'w0'
  for summary in result.meta['summaries'].values():  # what the overhead bench and the report read per seed
    assert summary['compile_seconds'] > 0 and summary['ops'] == {'kernels': []}
  seed_dir = os.path.join(result.meta['workdir'], 'seed-0')  # the harness read the checkpoint; then it went
  assert os.path.exists(os.path.join(seed_dir, 'metrics.jsonl'))
  assert not os.path.exists(os.path.join(seed_dir, 'checkpoints'))
  # The harness's scorers told the parent of each compile and first batch (what ends a kernel that hangs there).
  with open(os.path.join(result.meta['child_dir'], 'events.jsonl'), encoding='utf-8') as f:
    events = [json.loads(line) for line in f]
  harness = [(e['event'], e['seed']) for e in events if e.get('step_fn') == 'harness']
  assert harness and harness[:2] == [('eval_compile', 0), ('first_eval', 0)], harness
  assert len(harness) % 2 == 0 and {s for _, s in harness} == {0, 1}


def test_crash_goes_to_debugger_and_the_fix_trains(store, tmp_path):
  exp_id = queue(store, 'shape-bug', h.CRASH_IN_FORWARD)
  requests: list[DebugRequest] = []

  def debugger(request):
    requests.append(request)
    return h.GOOD

  eng = Engineer(store, settings(tmp_path), worker_id='w0', debugger=debugger)
  result = run_one(store, eng, exp_id)

  assert len(requests) == 1
  req = requests[0]
  assert req.design == 'shape-bug' and req.source == h.CRASH_IN_FORWARD and req.attempt == 1
  assert 'Traceback' in req.error_log and 'dot_general' in req.error_log  # the real error, in full
  assert 'x @ jnp.ones((3, 3))' in req.error_log  # with the program's own line
  assert store.get_experiment(exp_id).status == Status.TRAINED and result is not None
  assert result.meta['debug'][0]['outcome'] == 'accepted'
  assert result.meta['program_hash'] == program_hash(h.GOOD)
  design = store.get_design('shape-bug')  # the fix is the design's program now; the old version is kept
  assert design.source == h.GOOD
  (version,) = program_history(design)
  assert version['hash'] == program_hash(h.CRASH_IN_FORWARD) and version['by'] == 'debugger'
  assert store.program(version['hash']) == h.CRASH_IN_FORWARD


def test_rejected_fix_then_debugger_gives_up(store, tmp_path):
  exp_id = queue(store, 'hopeless', h.CRASH_AT_STEP_3)
  requests: list[DebugRequest] = []

  def debugger(request):
    requests.append(request)
    return 'import os\n' + h.GOOD if request.attempt == 1 else None  # a fix the Checker refuses, then give up

  eng = Engineer(store, settings(tmp_path), worker_id='w0', debugger=debugger)
  assert run_one(store, eng, exp_id) is None

  assert [r.attempt for r in requests] == [1, 2]
  assert 'planted failure at the third step' in requests[0].error_log
  assert 'step 2/8' in requests[0].error_log  # the trainer's own log lines come with the traceback
  assert "rejected by the Checker at gate 'static'" in requests[1].error_log
  assert 'planted failure' in requests[1].error_log  # the original error still travels with the rejection
  failure = failure_of(store, exp_id)
  assert failure.kind == 'crash' and 'gave up' in failure.message and 'planted failure' in failure.message
  assert [d['outcome'] for d in failure.diagnostics['debug']] == ['rejected at gate static', 'gave up']
  assert failure.diagnostics['last_metrics']['step'] == 2 and 'Traceback' in failure.diagnostics['error_log']
  assert store.get_design('hopeless').source == h.CRASH_AT_STEP_3  # nothing accepted, nothing replaced


@pytest.mark.parametrize('case', ['nan', 'divergence', 'timeout', 'oom', 'policy'])
def test_failures_are_recorded_by_kind(store, tmp_path, case):
  source, config, extra = {
      'nan': (h.NAN_LOSS, None, {}),
      'divergence': (h.GOOD, h.DIVERGING_CONFIG, {}),
      'timeout': (h.INFINITE_INIT, None, {'timeout_s': 6.0}),
      'oom': (h.MEMORY_BLOWUP, None, {'memory_mb': 1500}),
      'policy': (h.OPENS_FILE, None, {}),
  }[case]
  exp_id = queue(store, f'bad-{case}', source, config=config)
  debugged = []
  eng = Engineer(store, settings(tmp_path, **extra), worker_id='w0', debugger=debugged.append)
  assert run_one(store, eng, exp_id) is None

  failure = failure_of(store, exp_id)
  assert failure.kind == case
  assert store.get_experiment(exp_id).reason.startswith(f'{case}: ')
  assert not debugged  # only crashes go to the Debugger
  assert store.result(exp_id) is None
  diag = failure.diagnostics
  assert diag['worker'] == 'w0' and diag['claim_attempt'] == 1 and 'stderr_tail' in diag
  if case in ('nan', 'divergence'):
    assert diag['step'] <= 3 and diag['last_metrics']['step'] == diag['step']  # caught at once
  if case == 'divergence':
    assert diag['loss'] > 3 * diag['best_loss']
  if case == 'oom':
    assert diag['peak_rss_mb'] > 1500 or 'RESOURCE_EXHAUSTED' in failure.message
  if case == 'policy':
    assert not os.path.exists(os.path.join(diag['child_dir'], 'engineer-test-escape.txt'))


def test_stop_kills_the_run_and_releases_the_claim(store, tmp_path):
  exp_id = queue(store, 'long', h.GOOD, config={'train': {'max_steps': 100000, 'max_seconds': 120.0}})
  eng = Engineer(store, settings(tmp_path), worker_id='w0')
  stop, out = threading.Event(), []
  worker = threading.Thread(target=lambda: out.append(eng.work(stop=stop)))
  worker.start()
  deadline, events = time.time() + 120, []
  while time.time() < deadline and not any(e['event'] == 'seed_start' for e in events):
    time.sleep(0.2)
    paths = glob.glob(str(tmp_path / 'runs' / '*' / '*' / 'child-*' / 'events.jsonl'))
    events = [json.loads(line) for p in paths for line in open(p, encoding='utf-8') if line.strip()]
  assert any(e['event'] == 'seed_start' for e in events), 'training never started'
  stop.set()
  worker.join(timeout=30)
  assert not worker.is_alive() and out == [0]
  exp = store.get_experiment(exp_id)  # back in the queue at once, for another worker to take
  assert exp.status == Status.TRAINING and exp.claimed_by is None and store.result(exp_id) is None
  pid = next(e['pid'] for e in events if e['event'] == 'start')
  assert not os.path.exists(f'/proc/{pid}/cmdline') or not open(f'/proc/{pid}/cmdline', 'rb').read()


# ------------------------------------------------------------------------------------------------ no training
def test_lost_claim_is_abandoned_without_writing(store, tmp_path):
  exp_id = queue(store, 'contested', h.GOOD)
  stale = store.claim('w0', lease_s=30)
  store.release(stale)
  fresh = store.claim('w1', lease_s=30)
  assert Engineer(store, settings(tmp_path), worker_id='w0').run_claim(stale) is None
  exp = store.get_experiment(exp_id)
  assert exp.status == Status.CHECKED and exp.claimed_by == 'w1' and store.result(exp_id) is None
  store.release(fresh)


def test_bad_override_fails_as_config_and_attempts_are_bounded(store, tmp_path):
  bad = queue(store, 'typo', h.GOOD, config={'train': {'lrr': 1.0}})
  eng = Engineer(store, settings(tmp_path, max_attempts=2), worker_id='w0')
  run_one(store, eng, bad)
  failure = failure_of(store, bad)
  assert failure.kind == 'config' and 'train.lrr' in failure.message

  doomed = queue(store, 'doomed', h.GOOD)
  for _ in range(2):  # two workers died holding it
    store.release(store.claim('dead', lease_s=30))
  run_one(store, eng, doomed)
  failure = failure_of(store, doomed)
  assert failure.kind == 'attempts' and store.get_experiment(doomed).attempts == 3


def test_program_version_needs_the_claim(store):
  _, exp = store.propose(Design(name='d', kind='program', source=h.GOOD))
  claim = store.claim('w0', statuses=['proposed'], lease_s=30)
  store.release(claim)
  with pytest.raises(ClaimLostError):
    record_program_version(store, 'd', h.NAN_LOSS, claim=claim)
  assert store.get_design('d').source == h.GOOD
  claim = store.claim('w0', statuses=['proposed'], lease_s=30)
  updated = record_program_version(store, 'd', h.NAN_LOSS, claim=claim, note={'by': 'test'})
  assert updated.source == h.NAN_LOSS and program_history(updated)[0]['by'] == 'test'
  assert record_program_version(store, 'd', h.NAN_LOSS, claim=claim) == updated  # unchanged: no new version


def test_loss_watch():
  watch = fl.LossWatch(factor=3.0, patience=2)
  assert watch.update(1, 5.0) is None and watch.update(2, 3.0) is None
  assert watch.update(3, 9.5) is None  # one spike above 3x best is tolerated ...
  assert watch.update(4, 2.9) is None  # ... and forgotten when the loss comes back
  assert watch.update(5, 9.5) is None
  assert watch.update(6, 10.0).kind == 'divergence'
  assert fl.LossWatch().update(1, 'nan').kind == 'nan'  # the metrics JSONL writes NaN as a string
  assert fl.LossWatch().update(1, float('inf')).kind == 'nan'
  off = fl.LossWatch(factor=0)
  assert off.update(1, 1.0) is None and off.update(2, 100.0) is None and off.update(3, 100.0) is None


def test_failure_reason_round_trip_and_classification():
  f = fl.Failure('oom', 'used 9 GB', {'peak_rss_mb': 9000.0, 'loss': float('nan')})
  back = fl.parse_failure_reason(f.reason())
  assert back.kind == 'oom' and back.message == 'used 9 GB' and back.diagnostics['loss'] == 'nan'
  assert fl.parse_failure_reason('rejected by hand') is None
  with pytest.raises(ValueError, match='unknown failure kind'):
    fl.Failure('weird', 'x')
  assert fl.classify_exception('XlaRuntimeError', 'RESOURCE_EXHAUSTED: Out of memory allocating') == 'oom'
  assert fl.classify_exception('MemoryError', '') == 'oom'
  assert fl.classify_exception('PolicyError', 'design program policy: open') == 'policy'
  assert fl.classify_exception('TypeError', 'bad shapes') == 'crash'


def test_overrides_and_experiment_config():
  base = h.tiny_train_config()
  design = Design(name='p', kind='composition', source='attention,mlp')
  cfg = experiment_train_config(base, design, {'train.lr': 1e-2, 'model': {'mixer_kwargs': {'chunk': 16}}})
  assert cfg.model.pattern == 'attention,mlp' and cfg.model.program_source == ''
  assert cfg.train.lr == 1e-2 and cfg.model.mixer_kwargs.chunk == 16 and base.train.lr == 3e-3
  cfg = experiment_train_config(base, Design(name='q', kind='program', source=h.GOOD), source=h.NAN_LOSS)
  assert cfg.model.program_source == h.NAN_LOSS and cfg.model.pattern == ''
  for bad, match in (({'train': {'nope': 1}}, "'train.nope'"), ({'nosection.x': 1}, "'nosection'"),
                     ({'train.max_steps': 'many'}, 'train.max_steps')):
    with pytest.raises(ConfigOverrideError, match=match):
      apply_overrides(h.tiny_train_config(), bad)


def test_settings_from_config_and_validation(tmp_path):
  cfg = ml_collections.ConfigDict()
  cfg.engineer = ml_collections.ConfigDict({'seeds': (0, 1), 'eval_tasks': 'piqa,arc_easy', 'timeout_s': 60.0,
                                            'workdir_root': str(tmp_path)})
  cfg.engineer.train = ml_collections.ConfigDict({'train': {'max_steps': 7}})
  cfg.check = ml_collections.ConfigDict({'d_model': 32, 'num_heads': 2})
  s = settings_from_config(cfg)
  assert s.seeds == (0, 1) and s.eval_tasks == ('piqa', 'arc_easy') and s.timeout_s == 60.0
  assert s.train.train.max_steps == 7 and s.train.train.lr == 3e-4  # the rest from the trainer's defaults
  assert s.check == {'d_model': 32, 'num_heads': 2}
  assert settings_from_config(cfg.engineer).seeds == (0, 1)  # the section alone works too
  cfg.engineer.seedz = 3
  with pytest.raises(ValueError, match="unknown field.*seedz"):
    settings_from_config(cfg)
  for bad, match in (({'heartbeat_s': 400.0}, 'heartbeat_s'), ({'seeds': ()}, 'seeds'),
                     ({'eval_tasks': ('piqa',), 'held_out_tasks': ('piqa',)}, 'both'),
                     ({'timeout_s': 0}, 'timeout_s'), ({'first_step_timeout_s': -1.0}, 'first_step_timeout_s'),
                     ({'first_step_timeout_s': 'soon'}, 'first_step_timeout_s')):
    with pytest.raises(ValueError, match=match):
      EngineerSettings(train=h.tiny_train_config(), **bad).validate()


def test_result_helpers():
  assert mean_curve([[(1, 4.0), (2, 3.0), (2, 2.0)], [(1, 6.0), (2, 4.0), (3, 1.0)]]) == ((1, 5.0), (2, 3.0))
  scores, meta = benchmark_scores([{'fitness': {'piqa': {'acc': 0.5, 'acc_norm': 0.75},
                                                'wikitext': {'word_perplexity': 9.0}}},
                                   {'fitness': {'piqa': {'acc': 0.5, 'acc_norm': 0.25}}}])
  assert scores == {'piqa': 0.5} and meta['no_accuracy_metric'] == ['wikitext']


def test_stale_metrics_after_the_last_checkpoint_are_dropped(tmp_path):
  run = tmp_path / 'seed-0'
  (run / 'checkpoints' / '5').mkdir(parents=True)
  (run / 'checkpoints' / '7.orbax-checkpoint-tmp-1').mkdir()  # never committed
  lines = [json.dumps({'kind': 'train', 'step': i, 'loss': 5.0 - i / 10}) for i in range(1, 9)]
  (run / 'metrics.jsonl').write_text('\n'.join(lines) + '\n{"kind": "tr')  # and a torn last line
  assert drop_stale_metrics(str(run)) == 4
  assert [json.loads(x)['step'] for x in (run / 'metrics.jsonl').read_text().splitlines()] == [1, 2, 3, 4, 5]
  assert drop_stale_metrics(str(run)) == 0
  empty = tmp_path / 'fresh'
  empty.mkdir()
  (empty / 'metrics.jsonl').write_text(lines[0] + '\n')  # no checkpoint at all: the re-run starts over
  assert drop_stale_metrics(str(empty)) == 1 and (empty / 'metrics.jsonl').read_text() == ''
