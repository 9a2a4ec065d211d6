"""A backend kernel that fails to compile is set aside and the step is built with the XLA ops.

The failing kernel is the real Mosaic GPU delta-rule kernel, registered here as the CPU backend's kernel: on a CPU
its lowering fails ("Only interpret mode is supported on CPU backend") the way a kernel fails on a GPU it was
never compiled for.
"""
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aira_jax import ops
from aira_jax.ops import dispatch
from aira_jax.ops import fallback as kernel_fallback
from aira_jax.ops import selftest
from aira_jax.train import base_config, train
from pallas_kernels.delta_rule.gpu import chunk_delta_rule_gpu
from pallas_kernels.delta_rule.xla import chunk_delta_rule


@pytest.fixture
def cpu_kernels(monkeypatch):
  """A private kernel registry and set-aside table for the test; returns a function that registers a kernel."""
  monkeypatch.setattr(dispatch, '_registry', {})
  monkeypatch.setattr(dispatch, '_set_aside', {})
  monkeypatch.setattr(selftest, '_checked', {})

  def register(fn, op='delta_rule'):
    dispatch.register_kernel(op, 'cpu', fn)
  return register


def _inputs():
  key = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(key[0], (1, 128, 2, 64), jnp.float32)
  k = ops.l2norm(jax.random.normal(key[1], (1, 128, 2, 64), jnp.float32))
  v = jax.random.normal(key[2], (1, 128, 2, 64), jnp.float32)
  beta = jax.nn.sigmoid(jax.random.normal(key[3], (1, 128, 2), jnp.float32))
  return q, k, v, beta


def _compile(step_fn):
  args = _inputs()
  return kernel_fallback.compile_step(lambda: jax.jit(step_fn), lambda step: step.lower(*args).compile())


def test_a_kernel_that_fails_to_compile_is_set_aside(cpu_kernels):
  cpu_kernels(chunk_delta_rule_gpu)
  _, compiled, info = _compile(lambda q, k, v, beta: ops.delta_rule(q, k, v, beta))
  assert info['kernels'] == []
  assert list(info['set_aside']) == ['delta_rule@cpu']
  assert 'interpret mode' in info['set_aside']['delta_rule@cpu']
  expected = chunk_delta_rule(*_inputs())
  assert jnp.allclose(compiled(*_inputs()), expected, atol=1e-5)
  # Set aside for the process: the next trace goes straight to XLA and records no kernel.
  with dispatch.record_kernels() as chosen:
    jax.jit(lambda q, k, v, beta: ops.delta_rule(q, k, v, beta)).lower(*_inputs())
  assert chosen == [] and 'delta_rule@cpu' in dispatch.kernels_set_aside()
  # ... and a later step that would have run the kernel says it ran the XLA ops instead, and why.
  assert list(chosen.aside) == ['delta_rule@cpu'] and 'interpret mode' in chosen.aside['delta_rule@cpu']
  _, _, later = _compile(lambda q, k, v, beta: ops.delta_rule(q, k, v, beta) * 2)
  assert later == {'kernels': [], 'set_aside': chosen.aside}
  _, _, unrelated = _compile(lambda q, k, v, beta: q * beta[..., None])  # no delta rule: nothing to report
  assert unrelated == {'kernels': []}


def test_a_fallback_also_reports_kernels_set_aside_before(cpu_kernels):
  """A step meets a kernel set aside earlier (simple_gla) and one that fails to compile now (delta_rule): the ops
  record names both, each with its own reason."""
  from pallas_kernels.simple_gla.xla import chunk_simple_gla
  cpu_kernels(chunk_delta_rule_gpu)
  cpu_kernels(chunk_simple_gla, op='simple_gla')
  dispatch.set_aside(['simple_gla'], 'an earlier runtime failure')

  def step(q, k, v, beta):
    return ops.delta_rule(q, k, v, beta) + ops.simple_gla(q, k, v, -beta)

  _, _, info = _compile(step)
  assert info['kernels'] == [] and sorted(info['set_aside']) == ['delta_rule@cpu', 'simple_gla@cpu']
  assert info['set_aside']['simple_gla@cpu'] == 'an earlier runtime failure'
  assert 'interpret mode' in info['set_aside']['delta_rule@cpu']


def test_a_kernel_that_compiles_is_kept_and_reported(cpu_kernels):
  cpu_kernels(chunk_delta_rule)  # a working 'kernel': the XLA implementation itself
  _, _, info = _compile(lambda q, k, v, beta: ops.delta_rule(q, k, v, beta))
  assert info['kernels'] == ['delta_rule'] and dispatch.kernels_set_aside() == {}
  assert info['self_test']['ok'] == {'delta_rule': 0.0} and not info['self_test']['failed']


def test_the_designs_own_error_is_raised_and_the_kernel_kept(cpu_kernels):
  """When the XLA build fails too, the kernel was not the problem: the first error comes back unchanged."""
  cpu_kernels(chunk_delta_rule)

  def broken(q, k, v, beta):
    o = ops.delta_rule(q, k, v, beta)
    return o @ jnp.ones((3, 5))  # a shape error of the design's own

  with pytest.raises(TypeError, match='dot_general'):
    _compile(broken)
  assert dispatch.kernels_set_aside() == {}


def test_an_explicit_kernel_choice_never_falls_back(cpu_kernels):
  cpu_kernels(chunk_delta_rule_gpu)
  with ops.use_impl('kernel'), pytest.raises(ValueError, match='interpret mode'):
    _compile(lambda q, k, v, beta: ops.delta_rule(q, k, v, beta))
  assert dispatch.kernels_set_aside() == {}


def test_training_goes_on_with_xla_and_records_it(cpu_kernels, tmp_path):
  c = base_config()
  c.model.update(design='deltanet', d_model=64, num_layers=2, num_heads=2, mlp_hidden=64)
  c.data.update(synthetic_num_docs=200, val_docs=8)
  c.train.update(seq_len=64, global_batch=4, max_steps=3, warmup_steps=1, eval_every=0, eval_batches=1,
                 log_every=1, checkpoint_every=0, compute_dtype='float32', tensorboard=False)
  plain = train(c, str(tmp_path / 'xla'))
  cpu_kernels(chunk_delta_rule_gpu)
  fallen_back = train(c, str(tmp_path / 'kernel'))
  assert plain['ops'] == {'kernels': []}
  assert list(fallen_back['ops']['set_aside']) == ['delta_rule@cpu'] and fallen_back['ops']['kernels'] == []
  assert fallen_back['final_train_loss'] == plain['final_train_loss']
  assert fallen_back['final_val_loss'] == plain['final_val_loss']


def test_the_harness_scorer_falls_back_per_shape(cpu_kernels):
  """Evaluation compiles its own forward per batch shape: a failing kernel is set aside there too, and the
  scores equal those of the XLA ops."""
  import numpy as np
  from flax import nnx
  from aira_jax.evaluate import harness
  from aira_jax.evaluate.harness import requests as req_lib
  from aira_jax.models import build_model
  cfg = base_config().model
  cfg.update(design='deltanet', d_model=64, num_layers=1, num_heads=2, mlp_hidden=64, vocab_size=64)
  model = build_model(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  rows = [req_lib.Row(rng.integers(0, 64, size=n + 1).astype(np.int32), 3) for n in (20, 60, 60, 20)]
  config = harness.ScorerConfig(max_length=64, max_batch_tokens=128)
  plain = harness.Scorer(model, config)
  ll_plain, _ = plain.score(rows)
  cpu_kernels(chunk_delta_rule_gpu)
  scorer = harness.Scorer(model, config)
  ll, _ = scorer.score(rows)
  assert plain.ops == {'kernels': []}
  assert scorer.ops['kernels'] == [] and list(scorer.ops['set_aside']) == ['delta_rule@cpu']
  assert np.allclose(ll, ll_plain, atol=1e-5)


def test_the_target_backend_from_the_environment(monkeypatch):
  monkeypatch.setenv('AIRA_JAX_OPS_TARGET', 'cuda')
  assert dispatch.lowering_target() == 'gpu' and dispatch.target_backend() == 'gpu'
  with dispatch.lowering_for('tpu'):  # an explicit lowering_for wins
    assert dispatch.target_backend() == 'tpu'
  monkeypatch.setenv('AIRA_JAX_OPS_TARGET', 'gpu9000')
  with pytest.raises(ValueError, match='AIRA_JAX_OPS_TARGET'):
    dispatch.target_backend()
  monkeypatch.setenv('AIRA_JAX_OPS_TARGET', '')
  assert dispatch.lowering_target() is None and dispatch.target_backend() == 'cpu'


def _off_by_one_delta_rule(q, k, v, beta, **kw):
  """A 'kernel' that compiles and runs, with wrong numbers: it reads each key one position late (an indexing bug;
  its gradients differ from the XLA ops' by a relative RMS of ~1.5, a correct bf16 kernel's by ~0.02)."""
  return chunk_delta_rule(q, jnp.roll(k, 1, axis=1), v, beta, **kw)


def _check_config(**train):
  c = base_config()
  c.model.update(design='deltanet', d_model=64, num_layers=2, num_heads=2, mlp_hidden=64)
  c.data.update(synthetic_num_docs=200, val_docs=8)
  c.train.update(seq_len=64, global_batch=4, max_steps=3, warmup_steps=1, eval_every=0, eval_batches=1,
                 log_every=1, checkpoint_every=0, compute_dtype='float32', tensorboard=False, check_kernels=True,
                 check_kernel_ops=False)  # the model-level check alone (the per-op self-test would come first)
  c.train.update(train)
  return c


def test_a_kernel_with_wrong_numbers_is_caught_by_the_check(cpu_kernels, tmp_path):
  c = _check_config()
  plain = train(c, str(tmp_path / 'xla'))
  assert plain['ops'] == {'kernels': []}  # nothing to check without a kernel
  cpu_kernels(_off_by_one_delta_rule)
  checked = train(c, str(tmp_path / 'wrong'))
  ops = checked['ops']
  assert ops['kernels'] == [] and ops['check']['ok'] is False
  assert ops['set_aside']['delta_rule@cpu'].startswith('numerics: ') and 'gradient of' in ops['check']['reason']
  assert checked['final_train_loss'] == plain['final_train_loss']  # trained with the XLA ops after all


def test_a_correct_kernel_passes_the_check_and_is_kept(cpu_kernels, tmp_path):
  cpu_kernels(chunk_delta_rule)
  ops = train(_check_config(compute_dtype='bfloat16', check_kernel_ops=True), str(tmp_path / 'ok'))['ops']
  assert ops['kernels'] == ['delta_rule'] and 'set_aside' not in ops
  assert ops['check']['ok'] and ops['check']['loss_rel_err'] == 0.0 and ops['check']['precision'] == 'low'
  assert ops['self_test']['ok'] == {'delta_rule': 0.0} and not ops['self_test']['failed']
  # What a watcher of metrics.jsonl reads: each step says when it runs its kernels for the first time and when
  # that run is over; the evaluation step (compiled at the first validation) as the train step.
  records = [json.loads(x) for x in open(tmp_path / 'ok' / 'metrics.jsonl', encoding='utf-8')]
  kinds = [r['kind'] for r in records if r['kind'] != 'train']
  assert kinds == ['kernel_check', 'compile', 'first_step', 'kernel_check', 'eval_compile', 'first_eval', 'eval'], \
      kinds
  assert [r['step_fn'] for r in records if r['kind'] == 'kernel_check'] == ['train', 'eval']
  eval_compile = next(r for r in records if r['kind'] == 'eval_compile')
  assert eval_compile['ops']['kernels'] == ['delta_rule'] and eval_compile['compile_seconds'] > 0


def _scaled_delta_rule(q, k, v, beta, **kw):
  """Wrong numbers that the model-level check cannot see: outputs (and final state) 1.5x too large, which the
  gated RMSNorm after the mixer scales back."""
  return jax.tree.map(lambda a: a * 1.5, chunk_delta_rule(q, k, v, beta, **kw))


def _nan_delta_rule(q, k, v, beta, **kw):
  return jax.tree.map(lambda a: a * jnp.nan, chunk_delta_rule(q, k, v, beta, **kw))


def test_the_self_test_sets_aside_kernels_with_wrong_numbers_by_default(cpu_kernels, tmp_path):
  """Default training config: each kernel call is checked against the XLA op after compiling. A kernel whose
  outputs are 1.5x too large (which passes the model-level check) and one that returns NaN are set aside, with
  the reason, and training runs with the XLA ops (both runs end at the same loss)."""
  c = _check_config(compute_dtype='bfloat16', check_kernels=False, check_kernel_ops=True)
  losses = []
  for name, wrong, worst in (('scaled', _scaled_delta_rule, 'relative RMS 0.5 > 0.1'),
                             ('nan', _nan_delta_rule, 'relative RMS inf > 0.1')):
    cpu_kernels(wrong)
    dispatch.restore_kernels(['delta_rule'])  # set aside by the previous round
    summary = train(c, str(tmp_path / name))
    ops = summary['ops']
    assert ops['kernels'] == [] and list(ops['set_aside']) == ['delta_rule@cpu'], ops
    why = ops['set_aside']['delta_rule@cpu']
    assert why.startswith('self-test: ') and worst in why and 'delta_rule(bfloat16[1, 64, 2, 32]' in why, why
    assert list(ops['self_test']['failed']) == ['delta_rule'] and ops['self_test']['ok'] == {}
    losses.append(summary['final_train_loss'])
    kinds = [json.loads(x)['kind'] for x in open(tmp_path / name / 'metrics.jsonl', encoding='utf-8')]
    assert kinds[:2] == ['kernel_check', 'compile'], kinds
  assert losses[0] == losses[1] and math.isfinite(losses[0])


def test_the_self_test_draws_inputs_like_the_call_and_checks_each_signature_once(cpu_kernels, monkeypatch):
  """Batch cut to 1, sequence to SEQ_CAP plus the ragged remainder; options and dtypes kept; calls that reduce
  alike are checked once per process and kernel; an op without a recipe is skipped, not failed."""
  assert [selftest.checked_length(t) for t in (64, 200, 256, 300, 2048, 2050)] == [64, 200, 256, 300, 256, 258]
  bf16 = jnp.bfloat16
  seq = jax.ShapeDtypeStruct((8, 2050, 4, 64), bf16)
  call = selftest.KernelCall.of('gated_delta_rule', 'gpu', (seq, seq, seq, jax.ShapeDtypeStruct((8, 2050, 4), bf16),
                                                            jax.ShapeDtypeStruct((8, 2050, 4), bf16)),
                                {'scale': 0.125, 'initial_state': jax.ShapeDtypeStruct((8, 4, 64, 64), jnp.float32),
                                 'output_final_state': True, 'chunk_size': 64})
  args, kwargs = selftest.sample_inputs(call)
  assert [a.shape for a in args] == [(1, 258, 4, 64)] * 3 + [(1, 258, 4)] * 2
  assert all(a.dtype == bf16 for a in args) and kwargs['initial_state'].shape == (1, 4, 64, 64)
  assert kwargs['scale'] == 0.125 and kwargs['output_final_state'] is True
  k, g, beta = (np.asarray(a, np.float32) for a in (args[1], args[3], args[4]))
  assert np.allclose(np.linalg.norm(k, axis=-1), 1.0, atol=1e-2) and (g < 0).all() and ((beta > 0) & (beta < 1)).all()

  # When the check itself cannot run (here: a call the recipe does not fit), the kernel is kept and said unchecked.
  misfit = selftest.KernelCall.of('delta_rule', 'cpu', (seq, seq, seq), {})
  verdict = selftest.check_call(misfit)
  assert verdict['ok'] and 'recipe has 4 arguments, the call 3' in verdict['skipped']
  assert 'recipe has 4' in selftest.check_calls([misfit])['skipped']['delta_rule']

  runs = []
  monkeypatch.setattr(selftest, 'check_call', lambda c: runs.append(c) or {'ok': True, 'max_rel_err': 0.01,
                                                                          'call': c.describe(), 'seconds': 0.0})
  small = selftest.KernelCall.of('delta_rule', 'cpu', tuple(jax.ShapeDtypeStruct(s, bf16) for s in
                                                           [(2, 64, 2, 64)] * 3 + [(2, 64, 2)]), {})
  conv = selftest.KernelCall.of('short_conv', 'cpu', (jax.ShapeDtypeStruct((2, 64, 8), bf16),), {})
  report = selftest.check_calls([small, small, conv])
  assert report['ok'] == {'delta_rule': 0.01} and 'no self-test recipe' in report['skipped']['short_conv']
  bigger = dataclasses.replace(small, args=tuple(jax.ShapeDtypeStruct((16,) + a.shape[1:], bf16)
                                                 for a in small.args))  # a larger batch reduces to the same call
  assert selftest.check_calls([small, bigger])['ok'] == {'delta_rule': 0.01} and runs == [small]
  other = dataclasses.replace(small, kernel=_nan_delta_rule)  # another kernel for the same signature: checked anew
  selftest.check_calls([other])
  assert runs == [small, other]

  def broken(c):
    raise RuntimeError('planted trouble in the check itself')
  monkeypatch.setattr(selftest, 'check_call', broken)
  third = dataclasses.replace(small, kernel=_scaled_delta_rule)
  report = selftest.check_calls([third])  # never raises out: the kernel stays, said unchecked
  assert report['failed'] == {} and 'planted trouble' in report['skipped']['delta_rule']


def test_the_self_test_passes_the_real_gpu_kernel_interpreted(cpu_kernels):
  """No false alarm: the Mosaic GPU delta-rule kernel in the GPU interpreter, bf16, with an initial and a final
  state, agrees with the XLA op far inside the tolerance (a wrong kernel is off by 0.5 or more)."""
  import functools
  from jax.experimental.pallas import mosaic_gpu as plgpu
  kernel = functools.partial(chunk_delta_rule_gpu, interpret=plgpu.InterpretGPUParams())
  seq = jax.ShapeDtypeStruct((4, 128, 2, 64), jnp.bfloat16)
  call = selftest.KernelCall.of('delta_rule', 'gpu', (seq, seq, seq, jax.ShapeDtypeStruct((4, 128, 2), jnp.bfloat16)),
                                {'scale': None, 'initial_state': jax.ShapeDtypeStruct((4, 2, 64, 64), jnp.float32),
                                 'output_final_state': True, 'chunk_size': 64}, kernel)
  verdict = selftest.check_call(call)
  print('interpreted GPU kernel, op-level self-test:', verdict)
  assert verdict['ok'] and verdict['max_rel_err'] < 0.02 and verdict['tolerance'] == 0.1, verdict


def test_the_real_gpu_kernel_interpreted_agrees_with_xla(cpu_kernels):
  """No false alarm from a correct kernel that computes differently: the Mosaic GPU delta-rule kernel in the GPU
  interpreter, bf16, against the XLA ops on a small model's loss and gradients."""
  import functools
  from flax import nnx
  from jax.experimental.pallas import mosaic_gpu as plgpu
  from aira_jax.models import build_model
  from aira_jax.train import steps as steps_lib
  cpu_kernels(functools.partial(chunk_delta_rule_gpu, interpret=plgpu.InterpretGPUParams()))
  cfg = base_config().model
  cfg.update(design='deltanet', d_model=128, num_layers=1, num_heads=2, mlp_hidden=64, vocab_size=64)
  model = build_model(cfg, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  result = kernel_fallback.compare_with_xla(
      lambda: steps_lib.make_loss_and_grad(graphdef, compute_dtype=jnp.bfloat16),
      (nnx.to_pure_dict(params), nnx.to_pure_dict(rest), kernel_fallback.random_tokens((2, 129), 64)))
  print('interpreted GPU kernel vs XLA:', {k: result[k] for k in ('loss_rel_err', 'grad_rel_rms_max', 'worst')})
  assert result['ok'], result
  assert result['loss_rel_err'] < 5e-3 and result['grad_rel_rms_max'] < 0.05, result


def test_an_eval_step_compiled_at_its_first_call_falls_back_too(cpu_kernels):
  cpu_kernels(chunk_delta_rule_gpu)
  step = kernel_fallback.CompileOnFirstCall(lambda: jax.jit(lambda q, k, v, beta: ops.delta_rule(q, k, v, beta)))
  assert step.ops is None
  out = step(*_inputs())
  assert jnp.allclose(out, chunk_delta_rule(*_inputs()), atol=1e-5)
  assert step.ops['kernels'] == [] and list(step.ops['set_aside']) == ['delta_rule@cpu']
  assert kernel_fallback.merge_ops({'kernels': ['delta_rule', 'simple_gla']}, step.ops, None) == {
      'kernels': ['simple_gla'], 'set_aside': step.ops['set_aside']}


def test_nested_records_each_keep_collecting(cpu_kernels):
  """Leaving an inner record must not unhook the outer one, even while both lists are equal (empty)."""
  cpu_kernels(chunk_delta_rule)
  with dispatch.record_kernels() as outer:
    with dispatch.record_kernels() as inner:
      pass
    jax.jit(lambda q, k, v, beta: ops.delta_rule(q, k, v, beta)).lower(*_inputs())
  assert outer == ['delta_rule'] and inner == []
