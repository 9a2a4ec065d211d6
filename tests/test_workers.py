"""Two standalone workers (`python -m aira_jax.discovery.worker`, separate OS processes) share one store.

The scenario, on SQLite and on PostgreSQL: both workers start together on four queued designs (three programs,
one composition); one of them, call it X, claims the victim V (a run with a 6-second budget) and is killed with
SIGKILL once V has logged training steps. The survivor Y finishes the queue and, after V's lease runs out, re-runs
V. In the end every experiment is trained exactly once (one result, one move to 'trained'), nothing is lost, V
counts two attempts, both workers recorded results, and X's orphaned training child is gone.
"""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from aira_jax.discovery.records import Design, Status
from aira_jax.discovery.store import ExperimentStore

from tests import engineer_helpers as h

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEASE_S = 4.0

CONFIG = '''
import ml_collections
from tests.engineer_helpers import tiny_train_config


def get_config():
  c = ml_collections.ConfigDict()
  c.engineer = ml_collections.ConfigDict(dict(
      seeds=(0,), timeout_s=180.0, memory_mb=4000, lease_s={lease_s}, heartbeat_s=1.0, poll_s=0.5,
      platform='cpu', workdir_root={root!r}))
  c.engineer.train = tiny_train_config()
  return c
'''


def _start_worker(url, config_path, worker_id, log_dir):
  env = {**os.environ, 'PYTHONPATH': REPO + os.pathsep + os.environ.get('PYTHONPATH', '')}
  log = open(os.path.join(log_dir, f'{worker_id}.log'), 'wb')
  proc = subprocess.Popen([sys.executable, '-m', 'aira_jax.discovery.worker', f'--store={url}',
                           f'--config={config_path}', f'--worker_id={worker_id}'],
                          cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
  log.close()
  return proc


def _wait_for(predicate, timeout, what, procs=()):
  deadline = time.time() + timeout
  while time.time() < deadline:
    value = predicate()
    if value:
      return value
    for p in procs:
      assert p.poll() is None, f'worker exited early ({p.returncode}) while waiting for {what}'
    time.sleep(0.2)
  raise AssertionError(f'timed out after {timeout} s waiting for {what}')


def _v_metrics_lines(root, exp_id):
  paths = glob.glob(os.path.join(root, f'exp-{exp_id:06d}-*', '*', 'seed-0', 'metrics.jsonl'))
  return sum(1 for p in paths for line in open(p, encoding='utf-8') if '"kind": "train"' in line)


def _child_pid(root, exp_id, worker):
  for path in glob.glob(os.path.join(root, f'exp-{exp_id:06d}-*', '*', f'child-*-{worker}-*', 'events.jsonl')):
    with open(path, encoding='utf-8') as f:
      for line in f:
        event = json.loads(line)
        if event['event'] == 'start':
          return event['pid']
  return None


def _gone(pid):
  try:
    with open(f'/proc/{pid}/status', encoding='ascii') as f:
      return any(line.startswith('State:') and 'Z' in line.split()[1] for line in f)  # a zombie is dead
  except FileNotFoundError:
    return True


def _scenario(url, tmp_path):
  root = str(tmp_path / 'runs')
  config_path = tmp_path / 'worker_config.py'
  config_path.write_text(CONFIG.format(lease_s=LEASE_S, root=root))
  store = ExperimentStore(url)
  ids = {}
  for name, source, kind, priority, config in (
      ('A', h.GOOD, 'program', 10, None),
      ('B', h.GOOD, 'program', 9, None),
      ('V', h.GOOD, 'program', 5, {'train': {'max_steps': 100000, 'max_seconds': 6.0}}),
      ('C', 'attention,mlp', 'composition', 0, None)):
    _, exp = store.propose(Design(name=name, kind=kind, source=source), config=config, priority=priority)
    ids[name] = store.transition(exp.id, 'checked').id

  procs = {w: _start_worker(url, config_path, w, tmp_path) for w in ('w0', 'w1')}
  try:
    victim = _wait_for(lambda: store.get_experiment(ids['V']).claimed_by, 240, 'a worker to claim V',
                       procs.values())
    survivor = 'w1' if victim == 'w0' else 'w0'
    _wait_for(lambda: _v_metrics_lines(root, ids['V']) >= 1, 120, 'V to log training steps', procs.values())
    child_pid = _child_pid(root, ids['V'], victim)
    exp = store.get_experiment(ids['V'])
    assert exp.status == Status.TRAINING and exp.claimed_by == victim and procs[victim].poll() is None
    procs[victim].send_signal(signal.SIGKILL)
    killed_at = time.time()
    assert procs[victim].wait(timeout=30) == -signal.SIGKILL
    log = tmp_path / f'{survivor}.log'
    assert procs[survivor].wait(timeout=300) == 0, log.read_text(errors='replace')[-3000:]
  finally:
    for p in procs.values():
      if p.poll() is None:
        p.kill()
        p.wait()

  assert child_pid is not None
  _wait_for(lambda: _gone(child_pid), 10, "the killed worker's orphaned training child to exit")
  exps = {e.design: e for e in store.experiments()}
  assert sorted(exps) == ['A', 'B', 'C', 'V']
  for name, exp in exps.items():
    assert exp.status == Status.TRAINED, (name, exp.status, exp.reason[:2000])
    assert [ev.to_status for ev in store.status_history(exp.id)].count(Status.TRAINED) == 1  # trained once
    assert store.result(exp.id) is not None and exp.claimed_by is None
  results = {name: store.result(exp.id) for name, exp in exps.items()}
  assert len({r.id for r in results.values()}) == 4  # one result each: none duplicated, none lost
  by = {name: r.meta['worker'] for name, r in results.items()}
  assert {by['A'], by['B']} == {'w0', 'w1'}  # the first two claims went one to each worker
  assert by['V'] == survivor and by['C'] == survivor
  for name in ('A', 'B', 'C'):
    assert exps[name].attempts == 1 and results[name].meta['claim_attempt'] == 1
  assert exps['V'].attempts == 2 and results['V'].meta['claim_attempt'] == 2
  history = store.status_history(exps['V'].id)
  assert [ev.worker for ev in history if ev.to_status == Status.TRAINING] == [victim]
  trained = [ev for ev in history if ev.to_status == Status.TRAINED][0]
  assert trained.worker == survivor and trained.at >= killed_at + LEASE_S - 1.0  # only after the lease
  steps = [s for s, _ in results['V'].loss_curve]
  assert steps == list(range(1, len(steps) + 1))  # the re-run's own curve, not mixed with the dead run's
  survivor_log = (tmp_path / f'{survivor}.log').read_text(errors='replace')
  assert f'worker {survivor}: recorded 3 experiment(s)' in survivor_log  # one of A/B, then C, then V
  store.close()


def test_two_sqlite_workers_with_a_killed_one(tmp_path):
  _scenario(str(tmp_path / 'store.sqlite'), tmp_path)


@pytest.mark.postgres
def test_two_postgres_workers_with_a_killed_one(postgres_url, tmp_path):
  _scenario(postgres_url, tmp_path)


def test_worker_cli_rejects_bad_input(tmp_path):
  bad = tmp_path / 'bad_config.py'
  bad.write_text('import ml_collections\n\ndef get_config():\n'
                 '  return ml_collections.ConfigDict({"engineer": {"seedz": (0,)}})\n')
  env = {**os.environ, 'PYTHONPATH': REPO}
  for args, message in (([f'--config={bad}'], "unknown field(s) ['seedz']"), ([], '--config is required')):
    proc = subprocess.run([sys.executable, '-m', 'aira_jax.discovery.worker', f'--store={tmp_path / "s.sqlite"}',
                           *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
