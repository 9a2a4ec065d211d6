"""The ladder of scales: settings, parameter counts, promotion, scaling fits, "X% faster", report, plot, and one
real micro ladder through the Engineer (slow)."""
import json
import math
import os
import sys
import threading
import time

import ml_collections
import numpy as np
import pytest

from aira_jax.discovery.engineer import EngineerSettings
from aira_jax.discovery.records import Design, DesignKind, Experiment, Result, Status
from aira_jax.discovery.store import ExperimentStore
from aira_jax.discovery.ladder import params as pc
from aira_jax.discovery.ladder import promotion as pr
from aira_jax.discovery.ladder.plot import plot_scaling
from aira_jax.discovery.ladder.report import ArchFit, DesignRow, LadderReport, RungReport
from aira_jax.discovery.ladder.runner import LadderError, run_ladder
from aira_jax.discovery.ladder.scaling import compute_speedup, fit_power_law, training_flops
from aira_jax.discovery.ladder.settings import (LadderConfigError, LadderSettings, Rung,
                                                ladder_settings_from_config)
from aira_jax.models.loader import baseline_source
from aira_jax.train.config import base_config


def micro_train_config():
  cfg = base_config()
  cfg.model.update({'d_model': 16, 'num_layers': 1, 'num_heads': 2})
  cfg.data.update({'source': 'synthetic', 'tokenizer': 'byte', 'val_docs': 16, 'synthetic_num_docs': 200})
  cfg.train.update({'seq_len': 32, 'global_batch': 4, 'max_steps': 10, 'max_seconds': 0.0, 'warmup_steps': 2,
                    'lr': 3e-3, 'compute_dtype': 'float32', 'eval_every': 0, 'eval_batches': 1, 'log_every': 1,
                    'checkpoint_every': 0, 'tensorboard': False, 'prefetch': 0})
  return cfg


@pytest.fixture
def store(tmp_path):
  s = ExperimentStore(tmp_path / 'store.sqlite')
  yield s
  s.close()


# ------------------------------------------------------------------------------------------------ scaling
def test_fit_recovers_a_known_law_with_asymptote():
  c = np.logspace(15, 21, 8)
  fit = fit_power_law(c, 1.7 + 40.0 * c ** -0.12)
  assert fit.ok and fit.form == 'E + A*C^-alpha' and fit.points == 8
  assert fit.E == pytest.approx(1.7, rel=1e-3)
  assert fit.A == pytest.approx(40.0, rel=1e-2)
  assert fit.alpha == pytest.approx(0.12, rel=1e-3)
  assert fit.r2 > 0.9999


def test_fit_with_noise_and_pure_power_law_below_four_points():
  rng = np.random.default_rng(0)
  c = np.logspace(16, 20, 12)
  noisy = (2.0 + 30.0 * c ** -0.1) * np.exp(rng.normal(0, 0.002, c.size))
  fit = fit_power_law(c, noisy)
  assert fit.ok and abs(fit.alpha - 0.1) < 0.03 and 0.9 < fit.r2 < 1.0
  few = fit_power_law(c[:3], 9.0 * c[:3] ** -0.05)
  assert few.ok and few.form == 'A*C^-alpha' and few.E == 0.0
  assert few.A == pytest.approx(9.0, rel=1e-6) and few.alpha == pytest.approx(0.05, rel=1e-6)


def test_faster_is_100_percent_when_the_arch_needs_half_the_compute():
  c = np.logspace(15, 21, 8)
  base = fit_power_law(c, 1.5 + 50.0 * c ** -0.1)
  arch = fit_power_law(c / 2.0, 1.5 + 50.0 * c ** -0.1)  # the same losses at half the compute
  target = float(1.5 + 50.0 * c[-2] ** -0.1)
  s = compute_speedup('arch', arch, base, target_loss=target)
  assert s.ratio == pytest.approx(2.0, rel=1e-4) and s.faster_pct == pytest.approx(100.0, abs=0.05)
  assert s.loss_gap > 0 and not s.extrapolating
  worse = compute_speedup('slow', base, arch, target_loss=target)  # roles swapped: needs twice the compute
  assert worse.faster_pct == pytest.approx(-50.0, abs=0.05) and worse.loss_gap < 0


def test_faster_flags_extrapolation():
  c = np.logspace(15, 17, 4)
  base = fit_power_law(c, 20.0 * c ** -0.05)
  arch = fit_power_law(c, 18.0 * c ** -0.05)
  target = float(20.0 * 1e19 ** -0.05)  # the baseline reaches it far beyond its measured compute
  s = compute_speedup('arch', arch, base, target_loss=target)
  assert s.faster_pct is not None and s.extrapolating and 'outside its measured' in s.reason


@pytest.mark.parametrize('compute, loss, why', [
    ([1e15], [3.0], 'at least 2'),
    ([1e15, 1e15, 1e15], [3.0, 2.9, 2.8], 'same compute'),
    ([1e15, 1e16, 1e17, 1e18], [3.0, 3.0, 3.0, 3.0], 'flat or rising'),
    ([1e15, 1e16, 1e17], [2.0, 2.5, 3.0], 'flat or rising'),
    ([1e15, float('nan')], [3.0, 2.0], 'at least 2'),
])
def test_degenerate_fits_give_a_reason(compute, loss, why):
  fit = fit_power_law(compute, loss)
  assert not fit.ok and why in fit.reason and fit.A is None
  s = compute_speedup('x', fit, fit_power_law([1e15, 1e16], [3.0, 2.5]), target_loss=2.8)
  assert s.faster_pct is None and s.ratio is None and 'no fit' in s.reason


def test_faster_is_none_below_the_asymptote_or_without_a_target():
  c = np.logspace(15, 21, 6)
  fit = fit_power_law(c, 2.0 + 10.0 * c ** -0.2)
  s = compute_speedup('x', fit, fit, target_loss=1.5)
  assert s.faster_pct is None and 'asymptote' in s.reason and s.loss_gap == pytest.approx(0.0)
  assert compute_speedup('x', fit, fit, target_loss=None).faster_pct is None
  assert training_flops(1000, 2000) == 6.0 * 1000 * 2000


# ------------------------------------------------------------------------------------------------ settings
def rung(**kw):
  values = dict(name='r1', tokens_per_param=20.0)
  values.update(kw)
  return Rung(**values)


@pytest.mark.parametrize('kw, field', [
    (dict(tokens=1000), 'exactly one of tokens_per_param'),
    (dict(tokens_per_param=0.0), 'exactly one of tokens_per_param'),
    (dict(name='bad name!'), 'ladder rung name'),
    (dict(model={'d_modle': 8}), "unknown field(s) ['d_modle']"),
    (dict(train={'max_steps': 10}), 'train.max_steps is set by the ladder'),
    (dict(min_steps=10, max_steps=5), 'max_steps (5) is below min_steps (10)'),
    (dict(promote=-1), 'promote'),
    (dict(min_delta_sigma=float('nan')), 'min_delta_sigma'),
    (dict(seeds=(0, 0)), 'seeds must be distinct'),
    (dict(max_designs=0), 'max_designs'),
])
def test_rung_validation_names_the_field(kw, field):
  with pytest.raises(LadderConfigError, match=None) as e:
    rung(**kw)
  assert field in str(e.value)


def test_ladder_settings_from_config_and_errors():
  cfg = ml_collections.ConfigDict({'ladder': {
      'rungs': ({'name': 's', 'model': {'d_model': 64}, 'tokens_per_param': 20.0, 'seeds': [0]},
                {'name': 'm', 'tokens': 10_000, 'seeds': (0, 1, 2), 'promote': 1, 'min_delta_sigma': 1.0}),
      'budget_basis': 'baseline', 'target_loss': 0.0}})
  s = ladder_settings_from_config(cfg)
  assert [r.name for r in s.rungs] == ['s', 'm'] and s.rungs[0].seeds == (0,) and s.rungs[1].seeds == (0, 1, 2)
  assert s.budget_basis == 'baseline' and s.rung('m').tokens == 10_000
  with pytest.raises(LadderConfigError, match='unique'):
    LadderSettings(rungs=(rung(), rung()))
  with pytest.raises(LadderConfigError, match='budget_basis'):
    LadderSettings(rungs=(rung(),), budget_basis='everyone')
  with pytest.raises(LadderConfigError, match=r"unknown field\(s\) \['rung'\]"):
    ladder_settings_from_config({'rung': ()})
  with pytest.raises(LadderConfigError, match=r'rungs\[0\] has unknown field'):
    ladder_settings_from_config({'rungs': ({'name': 'a', 'tokens': 5, 'lr': 1},)})
  with pytest.raises(LadderConfigError, match='at least one rung'):
    LadderSettings(rungs=())


def test_steps_follow_the_token_budget_and_are_clipped():
  r = rung(tokens_per_param=2.0, min_steps=3, max_steps=50)
  assert r.steps_for(1000, 128) == (16, 16 * 128)  # ceil(2000 / 128)
  assert r.steps_for(10, 128) == (3, 3 * 128)
  assert r.steps_for(10 ** 6, 128) == (50, 50 * 128)
  assert rung(tokens_per_param=0.0, tokens=1000).steps_for(None, 100) == (10, 1000)
  with pytest.raises(LadderConfigError, match='needs a parameter count'):
    r.steps_for(None, 128)


# ------------------------------------------------------------------------------------------------ params
def test_abstract_param_count_matches_build_model():
  from flax import nnx
  from aira_jax.models.build import build_model, count_params
  base = micro_train_config()
  r = rung(model={'d_model': 32, 'num_layers': 2, 'num_heads': 2})
  designs = [Design(name='deltanet', kind='program', source=baseline_source('deltanet')),
             Design(name='hyb', kind='composition', source='mamba2,mlp,attention,mlp')]
  for design in designs:
    cfg = pc.rung_train_config(base, design, r, stack_compositions=True)
    got = pc.count_params_abstract(cfg)
    model_cfg = ml_collections.ConfigDict(cfg.model.to_dict())
    model_cfg.vocab_size = 259  # the byte tokenizer
    want = count_params(build_model(model_cfg, rngs=nnx.Rngs(0)))
    assert got.total == want['total'] and got.components == want
    assert got.non_embedding == want['total'] - want['embedding'] - want['head']
  # the two-mixer hybrid at num_layers 2 is not stacked; at 4 it is repeated twice
  assert pc.stacked_pattern('mamba2,mlp,attention,mlp', 2) == 'mamba2,mlp,attention,mlp'
  assert pc.stacked_pattern('attention,mlp', 3) == '(attention,mlp)*3'


def test_isolated_count_matches_and_reports_errors(tmp_path):
  base = micro_train_config()
  good = pc.rung_train_config(base, Design(name='a', kind='composition', source='attention,mlp'), rung(),
                              stack_compositions=True)
  bad = good.copy_and_resolve_references()
  bad.model.num_heads = 3  # 16 is not divisible by 3
  found = pc.count_params_isolated({'good': good.to_dict(), 'bad': bad.to_dict()}, workdir=str(tmp_path))
  assert found['good'] == pc.count_params_abstract(good)
  assert isinstance(found['bad'], str) and 'divisible' in found['bad']


# ------------------------------------------------------------------------------------------------ promotion
def add_run(store, design, scale, losses, *, seeds=None, fail=None, num_params=1000, tokens=5000):
  if not store.has_design(design):
    store.add_design(Design(name=design, kind='composition', source='attention,mlp'))
  exp = store.add_experiment(design, scale=scale, config={'train': {'max_steps': 7}})
  store.transition(exp.id, 'checked')
  if fail:
    return store.transition(exp.id, 'failed', reason=fail)
  store.transition(exp.id, 'training')
  seeds = seeds or tuple(range(len(losses)))
  counts = {'embedding': 100, 'head': 100, 'total': num_params}
  store.add_result(exp.id, Result(val_loss=float(np.mean(losses)), seeds=seeds, val_loss_per_seed=tuple(losses),
                                  num_params=num_params, tokens=tokens,
                                  meta={'summaries': {str(seeds[0]): {'steps': 7, 'param_counts': counts}}}))
  return exp


def test_promotion_ranks_filters_by_sigma_and_skips_failures(store):
  add_run(store, 'base', 'r1', [3.00, 3.02, 2.98])  # sigma = 0.02
  add_run(store, 'good', 'r1', [2.90])  # +5 sigma
  add_run(store, 'best', 'r1', [2.85, 2.87])  # +7 sigma
  add_run(store, 'meh', 'r1', [2.99])  # +0.5 sigma
  add_run(store, 'broken', 'r1', [], fail='crash: boom')
  outcomes = pr.rung_outcomes(store, ['good', 'best', 'meh', 'broken', 'nothing', 'base'], 'r1')
  assert outcomes['broken'].state == pr.FAILED and outcomes['nothing'].state == pr.MISSING
  assert outcomes['best'].val_loss_sd == pytest.approx(np.std([2.85, 2.87], ddof=1))
  assert outcomes['best'].params.non_embedding == 800 and outcomes['best'].steps == 7
  floor, rel = pr.noise_floor(outcomes['base'], 'r1')
  assert floor.sigma == pytest.approx(0.02) and rel == pytest.approx(0.02 / 3.0)
  decisions = pr.decide_promotions(rung(promote=1, min_delta_sigma=1.0), outcomes, baseline='base', floor=floor)
  by = {d.design: d for d in decisions}
  assert [d.design for d in decisions][:3] == ['best', 'good', 'meh']
  assert by['best'].promoted and by['best'].delta_sigma == pytest.approx(7.0)
  assert not by['good'].promoted and 'best 1' in by['good'].reason
  assert not by['meh'].promoted and 'below min_delta_sigma' in by['meh'].reason
  assert not by['broken'].promoted and 'boom' in by['broken'].reason
  two = pr.decide_promotions(rung(promote=2, min_delta_sigma=0.0), outcomes, baseline='base', floor=floor)
  assert [d.design for d in two if d.promoted] == ['best', 'good']


def test_noise_floor_is_borrowed_or_unknown(store):
  add_run(store, 'base', 'r2', [4.0])
  add_run(store, 'a', 'r2', [3.9])
  outcomes = pr.rung_outcomes(store, ['a', 'base'], 'r2')
  floor, rel = pr.noise_floor(outcomes['base'], 'r2', prior=[('r1', 0.01)])
  assert floor.sigma == pytest.approx(0.04) and 'r1' in floor.source and rel is None
  unknown, _ = pr.noise_floor(outcomes['base'], 'r2')
  assert unknown.sigma is None
  d = pr.decide_promotions(rung(min_delta_sigma=1.0), outcomes, baseline='base', floor=unknown)
  assert not d[0].promoted and 'cannot check min_delta_sigma' in d[0].reason
  # without a sigma requirement the ranking alone decides
  assert pr.decide_promotions(rung(), outcomes, baseline='base', floor=unknown)[0].promoted


def test_pick_experiment_prefers_trained_then_queued_then_failed():
  mk = lambda i, st: Experiment(design='a', id=i, status=st)
  assert pr.pick_experiment([mk(1, Status.FAILED), mk(2, Status.TRAINED), mk(3, Status.CHECKED)]).id == 2
  assert pr.pick_experiment([mk(1, Status.FAILED), mk(3, Status.CHECKED)]).id == 3
  assert pr.pick_experiment([mk(1, Status.FAILED), mk(4, Status.REJECTED)]).id == 4
  assert pr.pick_experiment([]) is None


# ------------------------------------------------------------------------------------------------ report/plot
def fabricated_report(tmp_path):
  c = np.logspace(12, 15, 4)
  base = fit_power_law(c, 1.0 + 30 * c ** -0.1)
  arch = fit_power_law(c / 1.5, 1.0 + 30 * c ** -0.1)
  rows = (DesignRow('base', True, 'trained', 1, 1000, 800, 5000, 7, 3.0, 0.02, (0, 1)),
          DesignRow('a', False, 'trained', 2, 900, 700, 5000, 7, 2.9, None, (0,), 0.1, 5.0, True),
          DesignRow('b', False, 'failed', 3, note='crash: boom'))
  pts = lambda scale: tuple((f'r{i}', float(x * scale), float(1.0 + 30 * x ** -0.1)) for i, x in enumerate(c))
  return LadderReport(baseline='base', rungs=[RungReport('r0', rows, 0.02, 'baseline std', ('a',), 2),
                                              RungReport('r1', skipped='the ladder was stopped')],
                      fits=[ArchFit('base', base, pts(1.0)), ArchFit('a', arch, pts(1 / 1.5))],
                      speedups=[compute_speedup('a', arch, base, target_loss=1.5)], target_loss=1.5,
                      target_source='test', winners=('a',))


def test_report_tables_and_files(tmp_path):
  report = fabricated_report(tmp_path)
  text = report.format_table()
  assert 'base (baseline)' in text and '+5.00' in text and 'crash: boom' in text and '+50.0' in text
  assert 'skipped: the ladder was stopped' in text
  md, js = report.write(str(tmp_path))
  data = json.loads(open(js, encoding='utf-8').read())
  assert data['speedups'][0]['faster_pct'] == pytest.approx(50.0, abs=0.1)
  assert data['rungs'][0]['rows'][1]['promoted'] is True
  assert '# Ladder of scales' in open(md, encoding='utf-8').read()


def test_plot_writes_a_png_or_says_why_not(tmp_path, monkeypatch):
  report = fabricated_report(tmp_path)
  path, note = plot_scaling(report.fits, baseline='base', path=str(tmp_path / 'p.png'), target_loss=1.5)
  assert path and note == '' and open(path, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  monkeypatch.setitem(sys.modules, 'matplotlib', None)  # import matplotlib now raises ImportError
  path, note = plot_scaling(report.fits, baseline='base', path=str(tmp_path / 'q.png'))
  assert path is None and 'not installed' in note and not os.path.exists(tmp_path / 'q.png')


def test_run_ladder_refuses_unknown_designs(store, tmp_path):
  store.add_design(Design(name='base', kind='composition', source='deltanet,mlp'))
  with pytest.raises(LadderError, match="no design named 'ghost'"):
    run_ladder(store, ['ghost'], LadderSettings(rungs=(rung(),)), EngineerSettings(train=micro_train_config()),
               baseline='base', workdir=str(tmp_path / 'l'))


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_micro_ladder_end_to_end_and_idempotent_rerun(store, tmp_path, monkeypatch):
  # A second seed of the same program hits the compilation cache instead of compiling again.
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'jax-cache'))
  store.add_design(Design(name='deltanet', kind='program', source=baseline_source('deltanet')))
  store.add_design(Design(name='attn-mlp', kind=DesignKind.COMPOSITION, source='attention,mlp'))
  engineer = EngineerSettings(train=micro_train_config(), workdir_root=str(tmp_path / 'engineer'), timeout_s=240.0,
                              memory_mb=4000, lease_s=60.0, heartbeat_s=2.0, platform='cpu', poll_s=0.2)
  settings = LadderSettings(rungs=(
      Rung(name='micro-s', model={'d_model': 16, 'num_layers': 1, 'num_heads': 2}, tokens_per_param=0.2,
           min_steps=4, max_steps=12, seeds=(0, 1), promote=1),
      Rung(name='micro-m', model={'d_model': 32, 'num_layers': 2, 'num_heads': 2}, tokens_per_param=0.2,
           min_steps=4, max_steps=12, promote=1)))
  events = []
  workdir = str(tmp_path / 'ladder')
  start = time.monotonic()
  report = run_ladder(store, ['attn-mlp'], settings, engineer, baseline='deltanet', workdir=workdir,
                      on_event=events.append)
  first_s = time.monotonic() - start
  assert [r.name for r in report.rungs] == ['micro-s', 'micro-m'] and report.new_experiments == 4
  assert report.trained_now == 4 and report.winners == ('attn-mlp',)
  for r in report.rungs:
    assert [row.design for row in r.rows] == ['deltanet', 'attn-mlp']
    assert all(row.state == 'trained' and row.val_loss is not None and not row.reused for row in r.rows)
    assert len(store.evaluated(scale=r.name)) == 2
  small, medium = report.rungs
  assert small.rows[0].seeds == (0, 1) and small.rows[0].val_loss_sd is not None and small.noise_floor > 0
  assert medium.rows[0].seeds == (0,) and 'micro-s' in medium.noise_source  # borrowed relative spread
  assert small.promoted == ('attn-mlp',) and small.rows[1].promoted
  # Genesys budget: steps = ceil(0.2 * N / (4 * 32)) within [4, 12], N the design's non-embedding count
  for row in small.rows:
    assert row.steps == min(12, max(4, math.ceil(0.2 * row.n / 128))) and row.tokens == row.steps * 128
  # the composition is stacked to the rung's depth
  exp = store.experiments(design='attn-mlp', scale='micro-m')[0]
  assert exp.config['model']['pattern'] == '(attention,mlp)*2' and exp.config['model']['d_model'] == 32
  assert medium.rows[1].params > small.rows[1].params
  assert {f.arch: f.fit.points for f in report.fits} == {'deltanet': 2, 'attn-mlp': 2}
  assert all(f.fit.ok and f.fit.alpha > 0 for f in report.fits)  # both losses fall from rung to rung
  assert len(report.speedups) == 1 and report.target_loss == medium.rows[0].val_loss
  assert report.speedups[0].faster_pct is not None
  for name in ('ladder.md', 'ladder.json', 'ladder.png'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert {'rung_start', 'queued', 'training', 'promoted', 'rung_done', 'done'} <= {e.kind for e in events}

  # Rerun: every (design, rung) is reused, nothing trains, no experiment is added.
  n_exps, results = len(store.experiments()), [(e.id, r.id) for e, r in store.evaluated()]
  start = time.monotonic()
  again = run_ladder(store, ['attn-mlp'], settings, engineer, baseline='deltanet', workdir=workdir)
  assert time.monotonic() - start < min(20.0, first_s / 3)
  assert again.trained_now == 0 and again.new_experiments == 0 and len(store.experiments()) == n_exps
  assert [(e.id, r.id) for e, r in store.evaluated()] == results
  assert all(row.reused for r in again.rungs for row in r.rows)
  assert [row.val_loss for r in again.rungs for row in r.rows] == [row.val_loss for r in report.rungs for row in r.rows]
  assert again.speedups[0].faster_pct == report.speedups[0].faster_pct


def test_unbuildable_rung_fails_without_training_and_rerun_keeps_it(store, tmp_path):
  store.add_design(Design(name='deltanet', kind='program', source=baseline_source('deltanet')))
  store.add_design(Design(name='hyb', kind='composition', source='attention,mlp'))
  bad = Rung(name='odd-heads', model={'d_model': 16, 'num_heads': 3}, tokens=1000, promote=1)
  nxt = Rung(name='next', tokens=1000)
  settings = LadderSettings(rungs=(bad, nxt), plot=False)
  engineer = EngineerSettings(train=micro_train_config(), workdir_root=str(tmp_path / 'engineer'))
  report = run_ladder(store, ['hyb'], settings, engineer, baseline='deltanet', workdir=str(tmp_path / 'l'))
  assert report.trained_now == 0 and report.new_experiments == 2
  for name in ('deltanet', 'hyb'):
    (exp,) = store.experiments(design=name, scale='odd-heads')
    assert exp.status == Status.FAILED and 'parameter count failed' in exp.reason and 'divisible' in exp.reason
  assert report.rungs[0].promoted == () and report.rungs[1].skipped == 'no design promoted from odd-heads'
  assert report.rungs[0].noise_floor is None and not report.winners
  assert not any(f.fit.ok for f in report.fits) and report.speedups[0].faster_pct is None
  assert report.plot_path is None and 'plot is False' in report.plot_note
  again = run_ladder(store, ['hyb'], settings, engineer, baseline='deltanet', workdir=str(tmp_path / 'l'))
  assert again.new_experiments == 0 and all(row.reused for row in again.rungs[0].rows)


def test_budget_from_the_baseline_gives_equal_tokens(store, tmp_path):
  from aira_jax.discovery.ladder.runner import _Ladder
  store.add_design(Design(name='deltanet', kind='program', source=baseline_source('deltanet')))
  store.add_design(Design(name='wide', kind='composition', source='attention,mlp,mlp'))
  r = Rung(name='eq', model={'d_model': 32, 'num_heads': 2}, tokens_per_param=1.0, max_steps=10_000)
  settings = LadderSettings(rungs=(r,), budget_basis='baseline')
  engineer = EngineerSettings(train=micro_train_config()).validate()
  ladder = _Ladder(store, settings, engineer, 'deltanet', str(tmp_path), None, threading.Event(), None)
  plans = ladder.plan(r, ['wide', 'deltanet'])
  assert plans['wide'].count.non_embedding > plans['deltanet'].count.non_embedding
  assert plans['wide'].steps == plans['deltanet'].steps == math.ceil(plans['deltanet'].count.non_embedding / 128)
  exps = {n: store.get_experiment(p.experiment_id) for n, p in plans.items()}
  assert all(e.status == Status.CHECKED and e.priority == 100 and e.scale == 'eq' for e in exps.values())
  assert exps['wide'].config['train'] == {'max_steps': plans['wide'].steps, 'max_tokens': 0}
  # the counts are cached in the workdir: planning the pair again needs no child process
  assert len(json.load(open(tmp_path / 'ladder_params.json', encoding='utf-8'))) == 2


def test_a_stopped_ladder_trains_nothing_and_still_reports(store, tmp_path):
  store.add_design(Design(name='deltanet', kind='program', source=baseline_source('deltanet')))
  stop = threading.Event()
  stop.set()
  report = run_ladder(store, ['deltanet'], LadderSettings(rungs=(rung(),)), EngineerSettings(train=micro_train_config()),
                      baseline='deltanet', workdir=str(tmp_path / 'l'), stop=stop)
  assert report.stopped and report.rungs[0].skipped == 'the ladder was stopped' and not store.experiments()
  assert report.plot_path is None and os.path.exists(report.json_path)
