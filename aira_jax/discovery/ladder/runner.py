"""Runs the ladder of scales: train the admitted designs and the baseline at each rung, promote, fit, report.

    report = run_ladder(store, ['gdn-v2', 'hybrid-3'], settings, engineer_settings, baseline='deltanet',
                        workdir='runs/ladder')
    print(report.format_table())

Per rung, in order: every admitted design and the baseline gets one experiment at scale = the rung's name, with the
rung's model/train overrides and a step budget from its token budget (Genesys: tokens = tokens_per_param * N).
The (design, rung) pair is the key: an experiment already in the store is reused, so rerunning the same ladder on
the same store trains nothing twice (a failed pair stays failed unless `retry_failed`). Training is the
Engineer's, in this process, restricted to the rung's scale (each run in its own child process with limits), with
the rung's seeds. Then promotion (promotion.py) picks who goes up; after the last rung, scaling laws are fitted
per architecture (scaling.py), the plot drawn (plot.py) and ladder.md / ladder.json written (report.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from absl import logging

from aira_jax.discovery.engineer import Debugger
from aira_jax.discovery.engineer_settings import ConfigOverrideError, EngineerSettings
from aira_jax.discovery.train_queue import train_queue
from aira_jax.discovery.records import Status
from aira_jax.discovery.store import TRAIN_QUEUE, ExperimentStore, NotFoundError
from aira_jax.discovery.ladder import params as pc
from aira_jax.discovery.ladder import promotion as pr
from aira_jax.discovery.ladder.plot import plot_scaling
from aira_jax.discovery.ladder.report import ArchFit, DesignRow, LadderReport, RungReport
from aira_jax.discovery.ladder.scaling import compute_speedup, fit_power_law, training_flops
from aira_jax.discovery.ladder.settings import LadderSettings, Rung

PARAM_CACHE = 'ladder_params.json'


class LadderError(ValueError):
  """The ladder cannot start (unknown design, bad settings)."""


@dataclasses.dataclass(frozen=True)
class LadderEvent:
  """Progress for a caller's `on_event`: rung_start, queued, reused, count_failed, training, rung_done,
  promoted, skipped, stopped, done."""
  kind: str
  rung: str = ''
  design: str = ''
  message: str = ''
  data: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Plan:
  design: str
  experiment_id: int
  reused: bool  # the pair's outcome was already recorded before this call
  count: pc.ParamCount | None = None
  steps: int | None = None
  tokens: int | None = None
  note: str = ''


class _Ladder:
  def __init__(self, store: ExperimentStore, settings: LadderSettings, engineer: EngineerSettings, baseline: str,
               workdir: str, on_event: Callable[[LadderEvent], None] | None, stop: threading.Event | None,
               debugger: Debugger | None, workers: int = 1):
    self.store, self.settings, self.engineer, self.baseline = store, settings, engineer, baseline
    self.workers = workers
    self.workdir, self.on_event, self.stop, self.debugger = workdir, on_event, stop, debugger
    self.cache_path = os.path.join(workdir, PARAM_CACHE)
    self.cache: dict[str, dict] = _read_json(self.cache_path)
    self.new_experiments = 0
    self.history: list[tuple[Rung, dict[str, _Plan], dict[str, pr.Outcome]]] = []

  def emit(self, kind: str, rung: str = '', design: str = '', message: str = '', **data: Any) -> None:
    logging.info('ladder %s %s %s %s', kind, rung, design, message)
    if self.on_event is not None:
      try:
        self.on_event(LadderEvent(kind, rung, design, message, data))
      except Exception:  # pylint: disable=broad-except
        logging.exception('ladder on_event callback raised (ignored)')

  def stopped(self) -> bool:
    return self.stop is not None and self.stop.is_set()

  # ------------------------------------------------------------------------------------------ planning
  def counts(self, rung: Rung, names: Sequence[str]) -> dict[str, pc.ParamCount | str]:
    """Parameter counts of `names` at `rung` (cached in the workdir by model config)."""
    out: dict[str, pc.ParamCount | str] = {}
    todo: dict[str, dict] = {}
    keys: dict[str, str] = {}
    for name in names:
      try:
        cfg = pc.rung_train_config(self.engineer.train, self.store.get_design(name), rung,
                                   stack_compositions=self.settings.stack_compositions)
      except (ConfigOverrideError, ValueError) as e:
        out[name] = f'{type(e).__name__}: {e}'
        continue
      keys[name] = _config_key(cfg)
      if keys[name] in self.cache:
        out[name] = pc.ParamCount(**self.cache[keys[name]])
      else:
        todo[name] = cfg.to_dict()
    if todo:
      found = pc.count_params_isolated(todo, timeout_s=self.settings.param_timeout_s, workdir=self.workdir)
      for name, count in found.items():
        out[name] = count
        if isinstance(count, pc.ParamCount):
          self.cache[keys[name]] = count.to_dict()
      _write_json(self.cache_path, self.cache)
    return out

  def plan(self, rung: Rung, names: Sequence[str]) -> dict[str, _Plan]:
    plans: dict[str, _Plan] = {}
    need = []
    for name in names:
      exp = pr.pick_experiment(self.store.experiments(design=name, scale=rung.name))
      retry = exp is not None and exp.status in (Status.FAILED, Status.REJECTED) and self.settings.retry_failed
      if exp is None or retry:
        need.append(name)
        continue
      if exp.status == Status.PROPOSED:  # an earlier call stopped between adding and queueing it
        exp = self.store.transition(exp.id, Status.CHECKED, reason='ladder')
      done = exp.status not in TRAIN_QUEUE
      plans[name] = _Plan(name, exp.id, reused=done, steps=(exp.config.get('train') or {}).get('max_steps'))
      self.emit('reused' if done else 'queued', rung.name, name, f'experiment {exp.id} ({exp.status.value})')
    if not need:
      return plans
    basis, by_baseline = self.settings.param_basis, self.settings.budget_basis == 'baseline'
    counts = self.counts(rung, sorted(set(need) | ({self.baseline} if by_baseline else set())))
    ref_cfg = pc.rung_train_config(self.engineer.train, self.store.get_design(self.baseline), rung,
                                   stack_compositions=False)
    per_step = pc.tokens_per_step(ref_cfg)
    for name in need:
      design = self.store.get_design(name)
      count = counts.get(name)
      ref = counts.get(self.baseline) if by_baseline else count
      if not isinstance(count, pc.ParamCount) or not isinstance(ref, pc.ParamCount):
        why = count if not isinstance(count, pc.ParamCount) else f'the baseline: {ref}'
        exp = self.store.add_experiment(name, scale=rung.name, priority=self.settings.priority, config=pc.rung_overrides(
            design, rung, self.engineer.train, steps=None, stack_compositions=self.settings.stack_compositions))
        self.store.transition(exp.id, Status.FAILED, reason=f'ladder: parameter count failed at {rung.name}: {why}')
        self.new_experiments += 1
        plans[name] = _Plan(name, exp.id, False, note='parameter count failed')
        self.emit('count_failed', rung.name, name, str(why)[:500])
        continue
      steps, tokens = rung.steps_for(ref.n(basis), per_step)
      overrides = pc.rung_overrides(design, rung, self.engineer.train, steps=steps,
                                    stack_compositions=self.settings.stack_compositions)
      exp = self.store.add_experiment(name, scale=rung.name, config=overrides, priority=self.settings.priority)
      self.store.transition(exp.id, Status.CHECKED, reason='ladder')
      self.new_experiments += 1
      plans[name] = _Plan(name, exp.id, False, count, steps, tokens)
      self.emit('queued', rung.name, name, f'experiment {exp.id}: N={ref.n(basis):,} ({basis}), {steps} steps, '
                f'{tokens:,} tokens', experiment_id=exp.id, steps=steps, tokens=tokens)
    return plans

  # ------------------------------------------------------------------------------------------ training
  def train(self, rung: Rung, plans: dict[str, _Plan]) -> int:
    ids = {p.experiment_id for p in plans.values()}

    def pending():
      return [e for e in self.store.experiments(status=TRAIN_QUEUE, scale=rung.name) if e.id in ids]

    queued = pending()
    if not queued or self.stopped():
      return 0
    foreign = [e.id for e in self.store.experiments(status=TRAIN_QUEUE, scale=rung.name) if e.id not in ids]
    if foreign:
      logging.warning('ladder rung %s: the store also queues experiments %s at this scale; the Engineer may train '
                      'them too (give the ladder its own rung names)', rung.name, foreign[:10])
    settings = dataclasses.replace(self.engineer, scale=rung.name, seeds=rung.seeds or self.engineer.seeds)
    self.emit('training', rung.name, message=f'{len(queued)} experiment(s), seeds {list(settings.seeds)}')
    # Ours carry the ladder's priority, so they are claimed first; the Engineers drain the rung's queue, also what
    # other workers held and released, and run side by side when workers > 1.
    train_queue(self.store, settings, workers=self.workers, stop=self.stop or threading.Event(),
                prefix=f'ladder-{rung.name}-{os.getpid()}', debugger=self.debugger)
    return len(queued) - len(pending())

  # ------------------------------------------------------------------------------------------ one rung
  def rung(self, rung: Rung, admitted: list[str]) -> RungReport:
    names = admitted + [self.baseline]
    self.emit('rung_start', rung.name, message=f'designs {admitted} + baseline {self.baseline}')
    plans = self.plan(rung, names)
    trained_now = self.train(rung, plans)
    outcomes = pr.rung_outcomes(self.store, names, rung.name)
    prior = [(r.name, rel) for r, _, o in self.history if (rel := pr.noise_floor(o[self.baseline], r.name)[1])]
    floor, _ = pr.noise_floor(outcomes[self.baseline], rung.name, prior)
    decisions = pr.decide_promotions(rung, outcomes, baseline=self.baseline, floor=floor)
    self.history.append((rung, plans, outcomes))
    rows = [self.row(rung, plans[self.baseline], outcomes[self.baseline], None)]
    rows += [self.row(rung, plans[d.design], outcomes[d.design], d) for d in decisions]
    promoted = tuple(d.design for d in decisions if d.promoted)
    for d in decisions:
      if d.promoted:
        self.emit('promoted', rung.name, d.design, d.reason, delta_sigma=d.delta_sigma)
    self.emit('rung_done', rung.name, message=f'promoted {list(promoted)}; trained now {trained_now}')
    return RungReport(rung.name, tuple(rows), floor.sigma, floor.source, promoted, trained_now)

  def row(self, rung: Rung, plan: _Plan, o: pr.Outcome, d: pr.Decision | None) -> DesignRow:
    count = o.params or plan.count
    if d is not None:
      note = plan.note or d.reason
    else:
      note = plan.note or (f'{o.state}: {o.reason}' if o.state != pr.TRAINED else '')
    return DesignRow(
        design=o.design, baseline=d is None, state=o.state, experiment_id=plan.experiment_id,
        params=count.total if count else o.num_params, n=count.n(self.settings.param_basis) if count else None,
        tokens=o.tokens or plan.tokens, steps=o.steps or plan.steps, val_loss=o.val_loss, val_loss_sd=o.val_loss_sd,
        seeds=o.seeds, delta=d.delta if d else None, delta_sigma=d.delta_sigma if d else None,
        promoted=bool(d and d.promoted), reused=plan.reused, note=note[:300])

  # ------------------------------------------------------------------------------------------ scaling
  def fits(self, report: LadderReport) -> None:
    points: dict[str, list[tuple[str, int | None, int | None, int | None, float]]] = {}
    for rung, plans, outcomes in self.history:
      for name, o in outcomes.items():
        if not o.finite:
          continue
        count = o.params or plans[name].count
        tokens = o.tokens or plans[name].tokens
        points.setdefault(name, []).append((rung.name, count.non_embedding if count else None,
                                            count.total if count else o.num_params, tokens, o.val_loss))
    basis = self.settings.param_basis
    if basis == 'non_embedding' and any(p[1] is None for ps in points.values() for p in ps):
      basis = 'total'
      report.param_basis_note = 'non-embedding counts missing for some runs; total parameters used for all'
    report.param_basis = basis
    archs = dict.fromkeys(name for _, _, outcomes in self.history for name in outcomes)  # every arch that ran
    for arch in [self.baseline] + [a for a in archs if a != self.baseline]:
      usable = [(r, training_flops(ne if basis == 'non_embedding' else tot, d), loss)
                for r, ne, tot, d, loss in points.get(arch, []) if (ne if basis == 'non_embedding' else tot) and d]
      fit = fit_power_law([c for _, c, _ in usable], [l for _, _, l in usable])
      report.fits.append(ArchFit(arch, fit, tuple(usable)))
    base_points = next((f.points for f in report.fits if f.arch == self.baseline), ())
    if self.settings.target_loss > 0:
      report.target_loss, report.target_source = self.settings.target_loss, 'ladder.target_loss'
    elif base_points:
      rung, _, loss = max(base_points, key=lambda p: p[1])
      report.target_loss, report.target_source = loss, f'the baseline at rung {rung}'
    else:
      report.target_source = 'no baseline result at any rung'
    base_fit = next((f.fit for f in report.fits if f.arch == self.baseline), None)
    for f in report.fits:
      if f.arch != self.baseline and base_fit is not None:
        report.speedups.append(compute_speedup(f.arch, f.fit, base_fit, target_loss=report.target_loss))


def run_ladder(store: ExperimentStore, designs: Sequence[str], settings: LadderSettings,
               engineer_settings: EngineerSettings, *, baseline: str, workdir: str,
               on_event: Callable[[LadderEvent], None] | None = None, stop: threading.Event | None = None,
               debugger: Debugger | None = None, workers: int = 1) -> LadderReport:
  """Runs (or resumes) the ladder; returns the report, also written to `workdir` (ladder.md, ladder.json, png).

  `designs`: names in the store, best first (the first rung admits its `max_designs`); `baseline` runs at
  every rung. `stop` ends the ladder after the current run (the Engineer releases its claim). `workers`: Engineers
  training a rung side by side in this process (threads; each run is its own child process).
  """
  if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
    raise LadderError(f'workers must be an integer >= 1, got {workers!r}')
  if not isinstance(settings, LadderSettings):
    raise LadderError(f'settings must be LadderSettings, got {type(settings).__name__}')
  if not isinstance(engineer_settings, EngineerSettings):
    raise LadderError(f'engineer_settings must be EngineerSettings, got {type(engineer_settings).__name__}')
  names = list(dict.fromkeys(n for n in designs if n != baseline))
  for name in [baseline] + names:
    try:
      store.get_design(name)
    except NotFoundError:
      raise LadderError(f'ladder: no design named {name!r} in the store {store.url}') from None
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  ladder = _Ladder(store, settings, dataclasses.replace(engineer_settings).validate(), baseline, workdir, on_event,
                   stop, debugger, workers)
  report = LadderReport(baseline=baseline)
  admitted = names[:settings.rungs[0].max_designs]
  for i, rung in enumerate(settings.rungs):
    if ladder.stopped():
      report.stopped = True
      report.rungs.append(RungReport(rung.name, skipped='the ladder was stopped'))
      continue
    if not admitted:
      why = 'no designs given' if i == 0 else f'no design promoted from {settings.rungs[i - 1].name}'
      report.rungs.append(RungReport(rung.name, skipped=why))
      ladder.emit('skipped', rung.name, message=why)
      continue
    result = ladder.rung(rung, admitted)
    report.rungs.append(result)
    if ladder.stopped():
      report.stopped = True
    if i + 1 < len(settings.rungs):
      admitted = list(result.promoted[:settings.rungs[i + 1].max_designs])
    elif not report.stopped:
      report.winners = result.promoted
  report.new_experiments = ladder.new_experiments
  ladder.fits(report)
  if settings.plot:
    report.plot_path, report.plot_note = plot_scaling(report.fits, baseline=baseline, target_loss=report.target_loss,
                                                      path=os.path.join(workdir, 'ladder.png'))
  else:
    report.plot_note = 'ladder.plot is False'
  report.write(workdir)
  ladder.emit('stopped' if report.stopped else 'done', message=report.md_path or '')
  return report


def _config_key(cfg: Any) -> str:
  """Everything the parameter count depends on: the model section and what fixes the vocabulary."""
  data = cfg.data
  blob = {'model': cfg.model.to_dict(), 'tokenizer': data.tokenizer, 'spm': str(data.get('spm_model_path', '')),
          'spm_vocab_size': data.get('spm_vocab_size')}
  return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding='utf-8') as f:
      value = json.load(f)
    return value if isinstance(value, dict) else {}
  except (OSError, ValueError):
    return {}


def _write_json(path: str, value: dict) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(value, f)
  os.replace(tmp, path)
