"""Schedules, optimizer masking, train steps, budgets, metrics and the CLI's error handling."""
import json
import math
import os
import subprocess
import sys
import textwrap

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from aira_jax.train import base_config, train
from aira_jax.train import metrics as metrics_lib
from aira_jax.train import schedules
from aira_jax.train import sharding as shd
from aira_jax.train import state as state_lib
from aira_jax.train import steps as steps_lib
from aira_jax.train import trainer as trainer_lib
from aira_jax.train.validate import ConfigError, validate_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- schedules and optimizer


def _train_cfg(**kw):
  cfg = base_config().train
  cfg.update(kw)
  return cfg


def test_wsd_schedule_shape():
  peak, total = 1e-3, 100
  s = schedules.warmup_stable_decay(peak, total, warmup_steps=10, decay_fraction=0.2,
                                    min_lr_ratio=0.1, decay_shape='linear')
  lr = np.array([float(s(i)) for i in range(total)])
  np.testing.assert_allclose(lr[0], peak / 10, rtol=1e-6)  # warmup never spends a step at 0
  np.testing.assert_allclose(lr[4], peak * 5 / 10, rtol=1e-6)
  np.testing.assert_allclose(lr[9:79], peak, rtol=1e-6)  # stable until the last 20 steps
  np.testing.assert_allclose(lr[89], peak * (1 - 0.5 * 0.9), rtol=1e-5)  # halfway down
  np.testing.assert_allclose(lr[99], peak * 0.1, rtol=1e-5)  # final ratio on the last step
  assert np.all(np.diff(lr[79:]) < 0)

  sq = schedules.warmup_stable_decay(peak, total, 10, 0.2, 0.0, decay_shape='1-sqrt')
  np.testing.assert_allclose(float(sq(79)), peak, rtol=1e-6)
  np.testing.assert_allclose(float(sq(84)), peak * (1 - math.sqrt(0.25)), rtol=1e-5)
  np.testing.assert_allclose(float(sq(99)), 0.0, atol=1e-9)
  with pytest.raises(ValueError, match='decay_shape'):
    schedules.warmup_stable_decay(peak, total, 10, 0.2, 0.0, decay_shape='cubic')


def test_cosine_schedule_shape():
  peak, total = 2e-3, 110
  s = schedules.warmup_cosine(peak, total, warmup_steps=10, min_lr_ratio=0.1)
  np.testing.assert_allclose(float(s(0)), peak / 10, rtol=1e-6)
  np.testing.assert_allclose(float(s(9)), peak, rtol=1e-6)
  np.testing.assert_allclose(float(s(59)), peak * (0.1 + 0.9 * 0.5), rtol=1e-5)  # midpoint
  np.testing.assert_allclose(float(s(109)), peak * 0.1, rtol=1e-5)


def test_make_schedule_and_lr_table():
  cfg = _train_cfg(lr=1.0, warmup_steps=2, schedule='cosine', min_lr_ratio=0.0)
  table = schedules.lr_table(schedules.make_schedule(cfg, 10), 10)
  assert table.dtype == np.float32 and table.shape == (10,)
  np.testing.assert_allclose(table[:2], [0.5, 1.0], rtol=1e-6)
  assert table[-1] == pytest.approx(0.0, abs=1e-7)
  with pytest.raises(ValueError, match='schedule'):
    schedules.make_schedule(_train_cfg(schedule='step'), 10)


def test_total_steps_from_budgets():
  assert schedules.total_steps_for(100, 0, 64) == 100
  assert schedules.total_steps_for(0, 1000, 64) == 16  # ceil
  assert schedules.total_steps_for(10, 1000, 64) == 10
  assert schedules.total_steps_for(0, 0, 64) is None


def test_weight_decay_mask_and_adamw():
  params = {'embed': jnp.ones((8, 4)), 'block': {'norm': {'scale': jnp.ones((4,))},
                                                  'dense': {'kernel': jnp.ones((4, 4)),
                                                            'bias': jnp.ones((4,))},
                                                  'norm_proj': jnp.ones((4, 4))}}
  mask = schedules.weight_decay_mask(params)
  assert mask == {'embed': True, 'block': {'norm': {'scale': False},
                                           'dense': {'kernel': True, 'bias': False},
                                           'norm_proj': False}}
  # With zero gradients only decayed params move, by lr * wd * p (decoupled decay).
  tx = schedules.make_optimizer(_train_cfg(lr=0.1, weight_decay=0.5, clip_norm=1.0))
  state = tx.init(params)
  state = schedules.set_learning_rate(state, 0.1)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
  np.testing.assert_allclose(updates['embed'], -0.05, rtol=1e-6)
  np.testing.assert_allclose(updates['block']['dense']['bias'], 0.0)
  np.testing.assert_allclose(updates['block']['norm']['scale'], 0.0)


# ---------------------------------------------------------------- metrics helpers


class _Dev:
  def __init__(self, platform, kind):
    self.platform, self.device_kind = platform, kind


def test_peak_flops_table_and_flop_estimates():
  assert metrics_lib.peak_flops_per_device(_Dev('cpu', 'cpu')) is None
  assert metrics_lib.peak_flops_per_device(_Dev('gpu', 'NVIDIA H200')) == 989e12
  assert metrics_lib.peak_flops_per_device(_Dev('gpu', 'NVIDIA A100-SXM4-80GB')) == 312e12
  assert metrics_lib.peak_flops_per_device(_Dev('tpu', 'TPU v5 lite')) == 197e12
  assert metrics_lib.peak_flops_per_device(_Dev('tpu', 'TPU v5p')) == 459e12
  assert metrics_lib.peak_flops_per_device(_Dev('tpu', 'TPU v4')) == 275e12
  assert metrics_lib.peak_flops_per_device(_Dev('gpu', 'Some Future GPU')) is None
  f = metrics_lib.analytic_flops_per_step(1000, 200, 64, num_layers=2, d_model=8, seq_len=16)
  assert f == 6 * 800 * 64 + 6 * 2 * 16 * 8 * 64
  a = jnp.ones((64, 32))
  compiled = jax.jit(lambda x: x @ x.T).lower(a).compile()
  assert metrics_lib.compiled_flops(compiled, 1) == pytest.approx(2 * 64 * 64 * 32, rel=0.05)
  mem, key = metrics_lib.peak_memory_bytes()
  assert mem > 0 and key in ('device_peak_bytes', 'host_max_rss_bytes')
  assert metrics_lib.format_duration(3725) == '1:02:05'


# ---------------------------------------------------------------- the trainer


def _tiny_config(**train_kw) -> ml_collections.ConfigDict:
  c = base_config()
  c.model.update(d_model=32, num_layers=2, num_heads=2, mlp_hidden=64)
  c.data.update(synthetic_num_docs=200, val_docs=8)
  c.train.update(seq_len=32, global_batch=8, max_steps=8, warmup_steps=2, lr=3e-3,
                 eval_every=4, eval_batches=2, log_every=2, checkpoint_every=4,
                 compute_dtype='float32', tensorboard=True)
  c.train.update(train_kw)
  return c


def _records(workdir, kind):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [r for r in map(json.loads, f) if r['kind'] == kind]


def test_train_end_to_end_outputs(tmp_path):
  c = _tiny_config()
  summary = train(c, str(tmp_path))
  assert summary['steps'] == 8 and summary['tokens'] == 8 * 8 * 32
  assert summary['stop_reason'] == 'steps/tokens budget'
  assert summary['params'] == summary['param_counts']['total'] > 0
  assert summary['tokens_per_sec'] > 0 and summary['flops_per_step'] > 0
  assert json.load(open(tmp_path / 'summary.json', encoding='utf-8'))['steps'] == 8
  assert summary['compile_seconds'] > 0
  # The full config is written for evaluation/restore, and the unigram yardstick is reported.
  saved = json.load(open(tmp_path / 'config.json', encoding='utf-8'))
  assert saved['train']['max_steps'] == c.train.max_steps and saved['model']['d_model'] == c.model.d_model
  assert 0 < summary['val_unigram_entropy'] < math.log(259)
  train_recs = _records(tmp_path, 'train')
  assert [r['step'] for r in train_recs] == [2, 4, 6, 8]
  for key in ('loss', 'grad_norm', 'lr', 'tokens_per_sec', 'step_time'):
    assert key in train_recs[0], key
  on_cpu = jax.devices()[0].platform == 'cpu'
  assert ('host_max_rss_bytes' if on_cpu else 'device_peak_bytes') in train_recs[0]
  assert ('mfu' in train_recs[0]) == (metrics_lib.peak_flops_per_device() is not None)
  assert train_recs[-1]['loss'] < train_recs[0]['loss']
  assert train_recs[-1]['loss'] == pytest.approx(summary['final_train_loss'])
  # WSD: decay over the last 20% (steps 6, 7 of 0..7) to lr * min_lr_ratio on the last update.
  assert train_recs[1]['lr'] == pytest.approx(3e-3)
  assert train_recs[-1]['lr'] == pytest.approx(3e-3 * 0.1)
  evals = _records(tmp_path, 'eval')
  assert [r['step'] for r in evals] == [4, 8]
  assert evals[-1]['val_loss'] == pytest.approx(summary['final_val_loss'])
  # bpb is the weighted NLL in bits over the UTF-8 bytes of the same targets.
  from aira_jax import data  # pylint: disable=g-import-not-at-top
  batches = data.make_eval_batches(c.data, data.make_tokenizer(c.data), seq_len=32, batch_size=8,
                                   num_batches=2)
  w = sum(float(b['weights'].sum()) for b in batches)
  nbytes = sum(float((b['bytes'] * b['weights']).sum()) for b in batches)
  assert summary['final_val_bpb'] == pytest.approx(
      summary['final_val_loss'] * w / math.log(2) / nbytes, rel=1e-6)
  assert os.listdir(tmp_path / 'tensorboard')
  assert sorted(os.listdir(tmp_path / 'checkpoints'))[-1] == '8'

  # Running again finds the finished checkpoint and does no more steps.
  again = train(c, str(tmp_path))
  assert again['steps'] == 8 and again['resumed_from_step'] == 8
  assert again['final_val_loss'] == pytest.approx(summary['final_val_loss'], rel=1e-6)


def test_sentencepiece_without_a_path_lives_in_the_workdir(tmp_path):
  """tokenizer=sentencepiece with no spm_model_path: trained once into the workdir, reused on resume."""
  c = _tiny_config(max_steps=2, eval_every=0, eval_batches=1, checkpoint_every=0, tensorboard=False)
  c.data.update(tokenizer='sentencepiece', spm_vocab_size=512, spm_train_docs=100)
  summary = train(c, str(tmp_path))
  model_file = tmp_path / trainer_lib.SPM_FILE
  assert model_file.is_file() and c.data.spm_model_path == ''  # the caller's config is untouched
  saved = json.load(open(tmp_path / 'config.json', encoding='utf-8'))
  assert saved['data']['spm_model_path'] == str(model_file)
  assert summary['param_counts']['embedding'] == 512 * 32  # the vocabulary of the trained model
  before = model_file.stat().st_mtime_ns
  c.train.max_steps = 3
  again = train(c, str(tmp_path))
  assert again['resumed_from_step'] == 2 and again['steps'] == 3
  assert model_file.stat().st_mtime_ns == before  # loaded, not trained again


def test_grad_accumulation_matches_one_big_batch(tmp_path):
  """Tolerance 1e-5 relative: same math, different summation order of the batch mean."""
  base = train(_tiny_config(max_steps=4, log_every=1, eval_batches=0, checkpoint_every=0,
                            tensorboard=False), str(tmp_path / 'one'))
  accum = train(_tiny_config(max_steps=4, log_every=1, eval_batches=0, checkpoint_every=0,
                             tensorboard=False, grad_accum=4), str(tmp_path / 'four'))
  la = [r['loss'] for r in _records(tmp_path / 'one', 'train')]
  lb = [r['loss'] for r in _records(tmp_path / 'four', 'train')]
  assert len(la) == 4
  np.testing.assert_allclose(lb, la, rtol=1e-5)
  assert accum['final_train_loss'] == pytest.approx(base['final_train_loss'], rel=1e-5)


def test_token_and_time_budgets(tmp_path):
  by_tokens = train(_tiny_config(max_steps=0, max_tokens=5 * 8 * 32 - 1, eval_batches=0,
                                 checkpoint_every=0, tensorboard=False), str(tmp_path / 'tok'))
  assert by_tokens['steps'] == 5  # ceil(tokens / tokens_per_step)

  workdir = str(tmp_path / 'time')
  # The budget is the training loop's wall clock (setup and compilation are not counted).
  by_time = train(_tiny_config(max_steps=0, max_seconds=3.0, estimate_after_steps=3,
                               eval_batches=0, checkpoint_every=0, log_every=1,
                               tensorboard=False), workdir)
  assert by_time['stop_reason'] in ('time budget', 'schedule from the time budget done')
  assert by_time['steps'] >= 4 and 2.0 <= by_time['loop_seconds'] < by_time['wall_seconds']
  assert by_time['loop_seconds'] < 3.0 + 2.0  # the last step and the final checkpoint
  with ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'),
                             item_names=('state', 'data')) as mngr:
    meta = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(data=ocp.args.JsonRestore()))
  schedule_steps = meta['data']['schedule_steps']
  assert schedule_steps >= 4  # the estimate is stored so a resumed run keeps the same schedule
  lrs = [r['lr'] for r in _records(workdir, 'train')]
  assert lrs[2] == pytest.approx(3e-3)  # warmup done, stable until the estimate's decay
  if by_time['stop_reason'] == 'schedule from the time budget done':
    assert lrs[-1] == pytest.approx(3e-4, rel=1e-5)  # the decay finished inside the budget


def test_bf16_compute_keeps_fp32_master_weights():
  from aira_jax import models  # pylint: disable=g-import-not-at-top
  c = _tiny_config()
  c.model.vocab_size = 64
  mesh = shd.make_mesh({'data': 1, 'fsdp': 1, 'tensor': 1}, devices=jax.devices()[:1])
  tx = schedules.make_optimizer(c.train)
  setup = state_lib.setup_state(models.build_model, c.model, 0, tx, mesh)
  tokens = jax.random.randint(jax.random.key(1), (8, 33), 0, 64, dtype=jnp.int32)
  losses = {}
  for dtype in ('float32', 'bfloat16'):
    step = steps_lib.make_train_step(setup, tx, mesh, compute_dtype=jnp.dtype(dtype))
    state, m = step(setup.init_fn(), {'tokens': tokens}, np.float32(1e-3))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
    assert int(state.step) == 1
    losses[dtype] = float(m['loss'])
  assert losses['float32'] == pytest.approx(math.log(64), rel=0.05)  # near-uniform at init
  assert losses['bfloat16'] == pytest.approx(losses['float32'], rel=2e-2)
  assert losses['bfloat16'] != losses['float32']  # the cast really happened


class DropoutLM(nnx.Module):
  """A fake LM whose params have no logical names and whose state includes a dropout RNG."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model, rngs=rngs)
    self.mix = nnx.Linear(cfg.d_model, cfg.d_model, rngs=rngs)
    self.drop = nnx.Dropout(0.1, rngs=rngs)
    self.head = nnx.Linear(cfg.d_model, cfg.vocab_size, rngs=rngs)

  def __call__(self, tokens):
    x = self.embed(tokens)
    x = jnp.cumsum(x, axis=1) / jnp.arange(1, x.shape[1] + 1)[None, :, None]  # causal mean
    x = self.drop(jax.nn.gelu(self.mix(x)))
    return self.head(x).astype(jnp.float32)


def test_custom_builders_and_model_state_are_carried(tmp_path):
  from aira_jax import data  # pylint: disable=g-import-not-at-top
  builders = trainer_lib.Builders(
      build_model=lambda cfg, rngs: DropoutLM(cfg, rngs=rngs), make_tokenizer=data.make_tokenizer,
      make_train_iterator=data.make_train_iterator, make_eval_batches=data.make_eval_batches)
  summary = train(_tiny_config(max_steps=3, eval_batches=1, checkpoint_every=0, log_every=1,
                               tensorboard=False), str(tmp_path), builders=builders)
  assert summary['steps'] == 3 and math.isfinite(summary['final_val_loss'])
  with ocp.CheckpointManager(str(tmp_path / 'checkpoints'), item_names=('state', 'data')) as m:
    state = m.restore(3, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  # The dropout stream advanced once per train step: the model's rng state is threaded through.
  assert int(np.asarray(state['rest']['drop']['rngs']['count'])) == 3


def test_config_validation_names_the_field():
  validate_config(base_config())
  for section, field, value, match in (
      ('train', 'schedule', 'step', 'train.schedule'),
      ('train', 'max_steps', 0, 'at least one budget'),
      ('train', 'compute_dtype', 'int32', 'compute_dtype'),
      ('train', 'grad_accum', 3, 'grad_accum'),
      ('mesh', 'tensor', 0, 'mesh.tensor'),
      ('model', 'd_model', 0, 'model.d_model')):
    c = base_config()
    c[section][field] = value
    with pytest.raises(ConfigError, match=match):
      validate_config(c)


# ---------------------------------------------------------------- the CLI


def _cli(*args, timeout=120):
  return subprocess.run([sys.executable, '-m', 'aira_jax.train', *args], cwd=REPO,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True,
                        text=True, timeout=timeout)


def _assert_clean_error(out, *needles):
  assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
  assert 'Traceback' not in out.stderr, out.stderr[-2000:]
  assert 'error:' in out.stderr
  for n in needles:
    assert n in out.stderr, (n, out.stderr[-2000:])


def test_cli_bad_configs_fail_cleanly(tmp_path):
  good = tmp_path / 'good.py'
  good.write_text(textwrap.dedent('''
      from aira_jax.train.config import base_config
      def get_config(variant=None):
        if variant:
          raise ValueError(f'good.py takes no variant, got {variant!r}')
        c = base_config()
        c.train.max_steps = 2
        return c
  '''))
  bad_syntax = tmp_path / 'bad.py'
  bad_syntax.write_text('def get_config(:\n')
  wd = f'--workdir={tmp_path / "wd"}'
  _assert_clean_error(_cli(f'--config={tmp_path / "missing.py"}', wd), 'missing.py')
  _assert_clean_error(_cli(f'--config={bad_syntax}', wd), 'does not parse')
  _assert_clean_error(_cli(f'--config={good}', wd, '--config.train.lrr=1e-3'), 'lrr',
                      'does not exist')
  _assert_clean_error(_cli(f'--config={good}', wd, '--config.train.lr=fast'), 'lr')
  _assert_clean_error(_cli(f'--config={good}:wide', wd), 'takes no variant')
  _assert_clean_error(_cli(f'--config={good}'), '--workdir')
  _assert_clean_error(_cli(f'--config={good}', wd, '--config.train.schedule=step'),
                      'train.schedule')
  _assert_clean_error(_cli(f'--config={good}', wd, '--config.data.source=text',
                           f'--config.data.paths={tmp_path / "nowhere" / "*.txt"}'), 'nowhere')
