"""Tiny training configs, design programs and store helpers shared by the Engineer and worker tests (and
bench/overhead.py)."""
from __future__ import annotations

import textwrap

from aira_jax.discovery import failures as fl
from aira_jax.discovery.engineer_settings import EngineerSettings
from aira_jax.discovery.gates.config import GateSettings
from aira_jax.discovery.records import Design, Status

# A tiny run: d_model 32, one layer, T=32, batch 4, 8 steps on the built-in synthetic language, on the CPU.
TINY_TRAIN = {
    'model': {'d_model': 32, 'num_layers': 1, 'num_heads': 2},
    'data': {'source': 'synthetic', 'tokenizer': 'byte', 'val_docs': 16, 'synthetic_num_docs': 200},
    'train': {'seq_len': 32, 'global_batch': 4, 'max_steps': 8, 'max_seconds': 0.0, 'warmup_steps': 2,
              'lr': 3e-3, 'compute_dtype': 'float32', 'eval_every': 0, 'eval_batches': 1, 'log_every': 1,
              'checkpoint_every': 0, 'tensorboard': False, 'prefetch': 0},
}


def tiny_train_config(**train_overrides):
  """base_config() with TINY_TRAIN applied (plus `train` field overrides)."""
  from aira_jax.train.config import base_config
  cfg = base_config()
  for section, values in TINY_TRAIN.items():
    cfg[section].update(values)
  cfg.train.update(train_overrides)
  return cfg


_HEAD = '''\
import jax
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
{init}    self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
{call}'''


def program(call: str, init: str = '') -> str:
  """A Mixer whose __call__ body is `call` (and with `init` lines before the projection is built)."""
  return _HEAD.format(init=textwrap.indent(textwrap.dedent(init), ' ' * 4) if init else '',
                      call=textwrap.indent(textwrap.dedent(call), ' ' * 4))


# A causal running mean: cheap, healthy, trains.
GOOD = program('''\
    c = jnp.cumsum(x, axis=1) / jnp.arange(1, x.shape[1] + 1)[None, :, None]
    return self.proj(c)
''')
# Raises while tracing the forward pass (a shape error on a line the Debugger should see).
CRASH_IN_FORWARD = program('''\
    mixed = x @ jnp.ones((3, 3))
    return self.proj(mixed)
''')
# Trains two steps, then raises from a host callback in the third (a runtime error, not a tracing one).
CRASH_AT_STEP_3 = program('''\
    jax.debug.callback(_count, x.shape[0])
    return self.proj(x)
''').replace('class Mixer', '''CALLS = [0]


def _count(_):
  CALLS[0] += 1
  if CALLS[0] == 3:
    raise RuntimeError('planted failure at the third step')


class Mixer''')
NAN_LOSS = program('return self.proj(x) * jnp.nan\n')
INFINITE_INIT = program('return self.proj(x)\n', init='while True:\n  pass\n')
# Materialises [B, T, d * 2^17] floats (~2 GB at the tiny size) and sorts them: far over a 1.5 GB limit.
MEMORY_BLOWUP = program('''\
    big = jnp.sort(jnp.tile(x, (1, 1, 1 << 17)), axis=-1)
    return self.proj(x + big[..., :x.shape[-1]])
''')
OPENS_FILE = program('''\
    open('engineer-test-escape.txt', 'w')
    return self.proj(x)
''')
# Healthy code, trained with these overrides (lr 5, no warmup or clipping): the loss shoots up and stays up.
DIVERGING_CONFIG = {'train': {'lr': 5.0, 'warmup_steps': 0, 'clip_norm': 0.0}}


# ------------------------------------------------------------- driving one Engineer over a test store
# Re-checking a Debugger's fix: the gates up to 'forward' at the tiny width (seconds, not a full check).
QUICK_CHECK = GateSettings(d_model=32, num_heads=2, num_layers=1, seq_len=16, stop_after='forward',
                           timeout_s=120.0)


def settings(tmp_path, **overrides) -> EngineerSettings:
  values = dict(train=tiny_train_config(), workdir_root=str(tmp_path / 'runs'), timeout_s=120.0,
                memory_mb=4000, lease_s=30.0, heartbeat_s=1.0, platform='cpu', check=QUICK_CHECK)
  values.update(overrides)
  return EngineerSettings(**values)


def queue(store, name, source, *, kind='program', config=None) -> int:
  _, exp = store.propose(Design(name=name, kind=kind, source=source), config=config)
  return store.transition(exp.id, 'checked').id


def run_one(store, engineer, exp_id):
  claim = store.claim(engineer.worker_id, lease_s=engineer.settings.lease_s)
  assert claim is not None and claim.experiment_id == exp_id
  return engineer.run_claim(claim)


def failure_of(store, exp_id) -> fl.Failure:
  exp = store.get_experiment(exp_id)
  assert exp.status == Status.FAILED, exp
  failure = fl.parse_failure_reason(exp.reason)
  assert failure is not None, exp.reason
  return failure
