"""Checkpoint round trips and kill-and-resume equivalence through the real CLI."""
import json
import os
import subprocess
import sys
import textwrap
import threading

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from aira_jax.train import checkpoint as ckpt_lib
from aira_jax.train import sharding as shd
from aira_jax.train.prefetch import Prefetcher
from aira_jax.train.state import TrainState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(step: int, scale: float) -> TrainState:
  params = {'layers': {0: {'w': jnp.full((4, 3), scale)}, 1: {'w': jnp.arange(3.0) * scale}}}
  rest = {'rngs': {'key': jax.random.key(7), 'count': jnp.array(step, jnp.uint32)}}
  return TrainState(step=jnp.array(step, jnp.int32), params=params,
                    opt_state=({'mu': jax.tree.map(jnp.zeros_like, params)},), rest=rest)


def _abstract(state: TrainState, mesh) -> TrainState:
  sh = shd.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), state)


def test_save_restore_round_trip_and_policies(tmp_path):
  mesh = shd.make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1})
  ck = ckpt_lib.Checkpointer(str(tmp_path / 'ckpt'), save_every=2, keep=2)
  saved = {}
  for step in range(1, 7):
    state = _state(step, float(step))
    if ck.save(step, state, {'iterator': {'pos': step}, 'elapsed_seconds': 1.5 * step}):
      saved[step] = state
  ck.wait()
  assert sorted(saved) == [2, 4, 6]  # the interval policy
  assert ck.latest_step() == 6
  assert sorted(int(d) for d in os.listdir(tmp_path / 'ckpt') if d.isdigit()) == [4, 6]  # keep 2
  # A forced save ignores the interval.
  assert ck.save(7, _state(7, 7.0), {'iterator': {'pos': 7}}, force=True)
  ck.wait()

  restored, data = ck.restore(6, _abstract(_state(0, 0.0), mesh))
  expected = saved[6]
  assert data == {'iterator': {'pos': 6}, 'elapsed_seconds': 9.0}
  assert int(restored.step) == 6
  for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(expected.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Typed PRNG keys survive as keys.
  assert jax.dtypes.issubdtype(restored.rest['rngs']['key'].dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.key_data(restored.rest['rngs']['key']),
                                jax.random.key_data(expected.rest['rngs']['key']))
  assert restored.params['layers'][0]['w'].sharding.spec == shd.replicated(mesh).spec
  ck.close()


_CONFIG = textwrap.dedent('''
    from aira_jax.train.config import base_config

    def get_config():
      c = base_config()
      c.model.update(d_model=32, num_layers=2, num_heads=2, mlp_hidden=64)
      c.data.update(synthetic_num_docs=200, val_docs=8)
      c.train.update(seq_len=32, global_batch=8, max_steps=10, warmup_steps=2, lr=3e-3,
                     decay_fraction=0.4, eval_every=5, eval_batches=1, log_every=1,
                     checkpoint_every=4, keep_checkpoints=3, tensorboard=False)
      return c
''')


def _cli(config: str, workdir: str, *extra: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'aira_jax.train', f'--config={config}',
                         f'--workdir={workdir}', *extra], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def _final_params(workdir: str, step: int):
  with ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'),
                             item_names=('state', 'data')) as mngr:
    assert step in mngr.all_steps()
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return restored['state']


def _train_losses(workdir: str) -> dict[int, float]:
  losses = {}  # a re-run step overwrites the lost run's record of it
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    for line in f:
      rec = json.loads(line)
      if rec['kind'] == 'train':
        losses[rec['step']] = rec['loss']
  return losses


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
  """A run hard-killed after step 6 (last checkpoint: 4) and re-run finishes bit-identical.

  Tolerance: exact equality on CPU. The resumed run restores fp32 params, optimizer state, step
  and the data iterator exactly, and executes the same compiled step on the same inputs.
  """
  config = tmp_path / 'tiny.py'
  config.write_text(_CONFIG)
  straight, killed = str(tmp_path / 'straight'), str(tmp_path / 'killed')

  first = _cli(str(config), killed, '--debug_exit_after_step=6')
  assert first.returncode == 42, first.stderr[-3000:]
  assert sorted(int(d) for d in os.listdir(os.path.join(killed, 'checkpoints')) if d.isdigit()) \
      == [4]
  assert not os.path.exists(os.path.join(killed, 'summary.json'))
  resumed = _cli(str(config), killed)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Resuming from step 4' in resumed.stderr
  full = _cli(str(config), straight)
  assert full.returncode == 0, full.stderr[-3000:]

  a = json.load(open(os.path.join(straight, 'summary.json'), encoding='utf-8'))
  b = json.load(open(os.path.join(killed, 'summary.json'), encoding='utf-8'))
  assert a['steps'] == b['steps'] == 10
  assert b['resumed_from_step'] == 4
  assert a['final_train_loss'] == b['final_train_loss']
  assert a['final_val_loss'] == b['final_val_loss']
  assert _train_losses(straight) == _train_losses(killed)
  pa, pb = _final_params(straight, 10), _final_params(killed, 10)
  assert jax.tree.structure(pa) == jax.tree.structure(pb)
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class _CountingIterator:
  """numpy batches whose state is the count of batches handed out."""

  def __init__(self, limit=None, fail_at=None):
    self.pos, self.limit, self.fail_at = 0, limit, fail_at

  def __next__(self):
    if self.limit is not None and self.pos >= self.limit:
      raise StopIteration
    if self.fail_at is not None and self.pos == self.fail_at:
      raise OSError('disk went away')
    self.pos += 1
    return {'tokens': np.full((2, 3), self.pos, np.int32)}

  def get_state(self):
    return {'pos': self.pos}


def test_prefetcher_pairs_each_batch_with_the_state_after_it():
  for depth in (0, 3):
    pf = Prefetcher(_CountingIterator(limit=5), place=lambda b: b['tokens'] * 10, depth=depth)
    got = list(pf)
    pf.close()
    assert [int(b[0, 0]) for b, _ in got] == [10, 20, 30, 40, 50]
    # The state is the one to resume from after consuming that batch, however far ahead the
    # thread has read: restoring {'pos': k} yields batch k + 1 next.
    assert [s['pos'] for _, s in got] == [1, 2, 3, 4, 5]


def test_prefetcher_places_batches_on_the_consuming_thread():
  # Device transfers from the reader thread broke XLA's CUDA-graph capture on GPU.
  placed_on = []
  pf = Prefetcher(_CountingIterator(limit=3), depth=2,
                  place=lambda b: placed_on.append(threading.current_thread()) or b)
  assert len(list(pf)) == 3
  pf.close()
  assert placed_on == [threading.main_thread()] * 3


def test_prefetcher_reraises_reader_errors():
  pf = Prefetcher(_CountingIterator(fail_at=2), place=lambda b: b, depth=2)
  next(pf), next(pf)
  with pytest.raises(OSError, match='disk went away'):
    next(pf)
  pf.close()
