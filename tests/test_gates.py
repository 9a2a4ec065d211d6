"""The Checker's gates: baselines and good programs pass, planted bad programs fail at the right gate with a
reason that tells the agent what to change. Gates run in this process (the programs here are our own); the
sandbox itself is covered by test_policy.py and test_check_cli.py."""
import json
import pathlib

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from aira_jax.discovery.gates import GATE_NAMES, GateSettings, Verdict
from aira_jax.discovery.gates.common import CheckContext
from aira_jax.ops.jaxpr_cost import count_jaxpr
from aira_jax.discovery.gates.program import load_gate
from aira_jax.discovery.gates.runner import run_gates
from aira_jax.discovery.gates.training import budget_gate, train_gate
from aira_jax.models import baseline_source

PROGRAMS = pathlib.Path(__file__).parent / 'programs'


def _source(name: str) -> str:
  return (PROGRAMS / name).read_text()


def _run(source: str, name: str, **settings) -> Verdict:
  verdict = run_gates(source, name, GateSettings(**settings))
  json.loads(verdict.to_json())  # every verdict must serialise
  return verdict


# ------------------------------------------------------------------------------------------- accepted designs

@pytest.mark.parametrize('name', [
    'deltanet', 'mamba2', 'attention',
    pytest.param('gated_deltanet', marks=pytest.mark.slow),  # ~30 s; its risky gates run below by default
])
def test_baselines_pass_every_gate(name):
  verdict = _run(baseline_source(name), name, allow_quadratic=name == 'attention')
  assert verdict.ok, verdict.reason
  assert [g.gate for g in verdict.gates] == list(GATE_NAMES)
  causality = next(g for g in verdict.gates if g.gate == 'causality')
  assert causality.details['max_future_over_causal_init'] <= 1e-6
  assert causality.details['max_future_over_causal_perturbed'] <= 1e-6


def test_gated_deltanet_passes_through_cost():
  """The risky gates (forward, causality across chunk boundaries, batch, cost); every gate runs in the slow test."""
  verdict = _run(baseline_source('gated_deltanet'), 'gated_deltanet', stop_after='cost')
  assert verdict.ok, verdict.reason
  assert [g.gate for g in verdict.gates] == list(GATE_NAMES[:GATE_NAMES.index('cost') + 1])


def test_sliding_window_attention_passes_every_gate_without_allow_quadratic():
  verdict = _run(baseline_source('attention'), 'swa', mixer_kwargs={'sliding_window': 32})
  assert verdict.ok, verdict.reason
  assert [g.gate for g in verdict.gates] == list(GATE_NAMES)
  assert verdict.details['cost_exponent'] < 1.2


def test_full_attention_rejected_at_cost_without_allow_quadratic():
  verdict = _run(baseline_source('attention'), 'attention', stop_after='cost')
  assert (verdict.ok, verdict.gate) == (False, 'cost')
  assert 'T^2' in verdict.reason and 'sliding_window' in verdict.reason
  assert 1.8 < verdict.details['cost_exponent'] < 2.2


@pytest.mark.parametrize('program', ['good_fft_conv.py', 'good_swa.py', 'good_scan_rnn.py'])
def test_good_programs_pass_every_gate(program):
  verdict = _run(_source(program), program[:-3])
  assert verdict.ok, verdict.reason
  assert verdict.details['cost_exponent'] < 1.2  # T log T (FFT) and T (window, scan) alike


# ------------------------------------------------------------------------------------------- planted failures

PLANTED = [
    ('leak_reverse_cumsum.py', 'causality', ['output position 0 depends on input position', 'future token leaks']),
    ('leak_noncausal_conv.py', 'causality', ['depends on input position 2', 'causal conv']),
    ('leak_zero_init_future.py', 'causality', ['randomly perturbed parameters', 'depends on input position 1']),
    ('leak_stop_gradient.py', 'causality', ['were replaced', 'stop_gradient']),
    ('quadratic_linear_attention.py', 'cost', ['T^2', 'the limit is T^1.5']),
    ('quadratic_scan.py', 'cost', ['jaxpr_flops', 'lax.scan over chunks']),
    ('unbounded_while.py', 'cost', ['cannot be bounded', 'while_loop']),
    ('batch_mean.py', 'batch', ['other samples', 'never over axis 0']),
    ('nan_output.py', 'forward', ['non-finite', 'float32 parameters']),
    ('wrong_shape.py', 'forward', ['shape (2, 128, 128) for input (2, 128, 64)']),
    ('dead_param.py', 'gradients', ['layers/0/inner/unused/kernel', 'all-zero gradient']),
    ('huge_mixer.py', 'budget', ['above the target', 'auto_fit']),
]


@pytest.mark.parametrize('program,gate,needles', PLANTED)
def test_planted_program_rejected_at_its_gate(program, gate, needles):
  assert _source(program).startswith(f'# expect: {gate}')
  verdict = _run(_source(program), program[:-3], stop_after=gate)
  assert (verdict.ok, verdict.gate) == (False, gate), verdict.reason
  for needle in needles:
    assert needle in verdict.reason, verdict.reason


def test_full_leak_map_points_at_the_first_leaking_output():
  verdict = _run(_source('leak_noncausal_conv.py'), 'conv', stop_after='causality')
  assert verdict.details['output_position'] == 0 and verdict.details['input_position'] == 2


def test_program_errors_name_the_line():
  src = _source('good_scan_rnn.py').replace('decay = jax.nn.sigmoid(a + 2.0)', 'decay = jax.nn.sigmoid(a + b)')
  verdict = _run(src, 'typo', stop_after='forward')
  assert verdict.gate == 'forward' and 'NameError' in verdict.reason and 'program line' in verdict.reason


def test_bf16_dtype_contract():
  src = _source('good_scan_rnn.py').replace('return self.out_proj(y.astype(x.dtype))',
                                            'return self.out_proj(y).astype(jnp.float32)')
  verdict = _run(src, 'fp32_out', stop_after='forward')
  assert verdict.gate == 'forward' and 'float32 for a bfloat16 input' in verdict.reason


# ------------------------------------------------------------------------------------------- budget and train

def _loaded(source: str, name: str, **settings) -> CheckContext:
  ctx = CheckContext(source, name, GateSettings(**settings).validate())
  load_gate(ctx)
  return ctx


def test_budget_auto_fit_picks_a_multiple_of_64_within_budget():
  ctx = _loaded(baseline_source('deltanet'), 'deltanet', target_params=220_000, auto_fit=True)
  details = budget_gate(ctx)
  assert details['mlp_hidden'] % 64 == 0 and details['mlp_hidden'] > 192
  assert abs(details['total_params'] / 220_000 - 1) <= 0.2
  assert ctx.mlp_hidden == details['mlp_hidden']


def test_budget_auto_fit_reports_an_oversized_mixer():
  from aira_jax.discovery.gates.common import GateFailure
  ctx = _loaded(_source('huge_mixer.py'), 'huge', auto_fit=True)
  with pytest.raises(GateFailure, match='no MLP width fits the budget'):
    budget_gate(ctx)


def test_train_gate_reports_a_loss_that_does_not_fall():
  from aira_jax.discovery.gates.common import GateFailure
  ctx = _loaded(baseline_source('attention'), 'attention', train_steps=3, min_loss_drop=0.9)
  with pytest.raises(GateFailure, match='the loss fell only'):
    train_gate(ctx)


# ------------------------------------------------------------------------------------------- cost machinery

def test_jaxpr_count_multiplies_scan_bodies_and_counts_matmuls():
  w = jnp.ones((16, 16))

  def scanned(x):
    return lax.scan(lambda c, xi: (c, xi @ w), None, x)[1]

  x = jnp.ones((10, 4, 16))
  cost = count_jaxpr(jax.make_jaxpr(scanned)(x))
  assert cost.flops == pytest.approx(10 * 2 * 4 * 16 * 16)
  assert not cost.unbounded


def test_jaxpr_count_bounds_fori_loops_and_flags_data_dependent_whiles():
  def fori(x, n):
    return lax.fori_loop(0, 7, lambda i, c: c * 2.0, x) + n

  cost = count_jaxpr(jax.make_jaxpr(lambda x: lax.fori_loop(jnp.int32(0), jnp.int32(7), lambda i, c: c * 2.0, x))(
      jnp.ones(5)))
  assert not cost.unbounded and cost.flops >= 7 * 5
  data = count_jaxpr(jax.make_jaxpr(lambda x: lax.while_loop(lambda c: c.sum() < 100, lambda c: c * 2, x))(
      jnp.ones(5)))
  assert data.unbounded
