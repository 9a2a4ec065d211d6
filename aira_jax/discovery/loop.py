"""The discovery loop (ASI-Arch's pipeline) over one store, resumable and safe on Ctrl-C.

    seed program trained over k seeds (the baseline and its noise floor), analysed and judged
    then iterations of: pool.select (parent + references) -> Researcher -> novelty -> gates (rewrites) ->
        Code checker -> Engineer trains (in this process for workers=1; worker processes for N > 1) ->
        Analyst (+ cognition) -> Summarizer -> Judge -> fitness (in code) -> the pool, derived from the store

The store in the workdir is the whole state: a rerun resumes where the last run stopped (iterations are counted
from the designs it holds; trained-but-unanalysed experiments are analysed; queued ones trained). The agents talk
to an LLM through one client, or to the offline agents behind the same client (`llm.backend = 'offline'`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

from absl import logging

from aira_jax.discovery import engineer as engineer_lib
from aira_jax.discovery.agents import Analyst, CodeChecker, Debugger, Judge, NoveltyChecker, Researcher, Summarizer
from aira_jax.discovery.cognition import CognitionBase
from aira_jax.discovery.gates.config import settings_from_config as gate_settings_from_config
from aira_jax.discovery.leaderboard import format_table, leaderboard_rows, write_leaderboard
from aira_jax.discovery.llm import LLMClient, llm_config_from
from aira_jax.discovery.loop_analysis import AnalysisStage
from aira_jax.discovery.loop_context import StoreView
from aira_jax.discovery.loop_iteration import ProposalStage
from aira_jax.discovery.loop_settings import LoopSettings, fitness_config, loop_settings, pool_config
from aira_jax.discovery.loop_workers import StopControl, WorkerPool, write_resolved_config
from aira_jax.discovery.progress import Progress
from aira_jax.discovery.records import Design, DesignKind, Status, validate_name
from aira_jax.discovery.store import ExperimentStore
from aira_jax.report import RunInfo, collect, fitness_settings, write_report, write_run_info

STORE_FILE = "store.sqlite"
REPORT_EVERY_S = 300.0   # while running, report.md is refreshed after an analysis at most this often
SEED_PRIORITY = 1000   # the seed's runs are claimed before any proposal


class LoopError(RuntimeError):
    """The loop cannot go on (e.g. the seed design does not train)."""


@dataclasses.dataclass
class RunSummary:
    iterations: int = 0          # iterations run in this session
    trained: int = 0             # designs with a result (the seed excluded), in the whole store
    interrupted: bool = False
    stopped_because: str = ""
    wall_s: float = 0.0
    cost_usd: float = 0.0
    leaderboard: str = ""


def make_llm_client(cfg: Any, workdir: str, *, backend: str | None = None) -> LLMClient:
    """The client of config.llm; offline agents behind it when the backend is 'offline'; calls logged in the
    workdir (llm_calls.jsonl) unless the config names another log."""
    from aira_jax.discovery.offline import offline_handlers  # pylint: disable=import-outside-toplevel
    from aira_jax.discovery.offline.proposer import ProposerConfig  # pylint: disable=import-outside-toplevel
    llm = llm_config_from(cfg.llm)
    changes = {}
    if backend:
        changes["backend"] = backend
    if not llm.log_path:
        changes["log_path"] = os.path.join(workdir, "llm_calls.jsonl")
    llm = dataclasses.replace(llm, **changes) if changes else llm
    handlers = None
    if llm.backend == "offline":
        off = cfg.get("offline") or {}
        off = off.to_dict() if hasattr(off, "to_dict") else dict(off)
        handlers = offline_handlers(proposer=ProposerConfig(**off))
    return LLMClient(llm, offline_handlers=handlers)


def debugger_from_config(cfg: Any) -> Debugger:
    """The worker's `--debugger` factory: the Debugger agent on the client of config.llm (the worker process's
    own client; its calls go to the same JSONL log as the loop's)."""
    workdir = os.path.dirname(os.path.abspath(cfg.llm.log_path)) if cfg.llm.get("log_path") else os.getcwd()
    settings = engineer_lib.settings_from_config(cfg)
    return Debugger(make_llm_client(cfg, workdir), max_attempts=settings.debug_attempts)


def logged_cost(path: str) -> float:
    """LLM cost recorded by earlier sessions of this workdir."""
    total = 0.0
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    total += float(json.loads(line).get("cost_usd") or 0.0)
                except (ValueError, AttributeError):
                    continue
    return total


class DiscoveryLoop:
    def __init__(self, cfg: Any, workdir: str, *, client: LLMClient | None = None, workers: int = 1,
                 progress: Progress | None = None, stop: StopControl | None = None,
                 store: ExperimentStore | None = None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.cfg, self.workdir, self.workers = cfg, os.path.abspath(workdir), workers
        os.makedirs(self.workdir, exist_ok=True)
        self.s: LoopSettings = loop_settings(cfg)
        self.seed_name = _seed_of(self.s)
        self.fitness_cfg = fitness_config(cfg)
        self.pool_cfg = pool_config(cfg, seed_name=self.seed_name, scale=self.s.scale)
        # Every section is validated before the store is opened: a bad flag leaves no store or run.json behind.
        self.gate_settings = gate_settings_from_config(cfg.get("check"))
        self.engineer_settings = self._engineer_settings()
        self.store = store or ExperimentStore(os.path.join(self.workdir, STORE_FILE))
        write_run_info(self.workdir, self.run_info())  # what the report needs to read the store as this loop does
        self.client = client or make_llm_client(cfg, self.workdir)
        self.progress = progress or Progress()
        self.stop = stop or StopControl(self.progress.event)
        self.prior_cost = logged_cost(self.client.config.log_path) if client is None else 0.0
        cog = cfg.get("cognition") or {}
        self.cognition = CognitionBase.starter() if cog.get("starter", True) else CognitionBase()
        for path in cog.get("paths", ()) or ():
            self.cognition.load_jsonl(path)
        k = int(cog.get("k", 3))
        self.debugger = Debugger(self.client, max_attempts=self.engineer_settings.debug_attempts)
        self.proposals = ProposalStage(
            self.store, self.s, researcher=Researcher(self.client), novelty=NoveltyChecker(
                self.client, top_k=self.s.novelty_top_k), checker=CodeChecker(self.client), cognition=self.cognition,
            gate_settings=self.gate_settings, pool_cfg=self.pool_cfg, fitness_cfg=self.fitness_cfg,
            budget_text=self._budget_text(), on_stage=self._stage, on_event=self._event, retrieval_k=k)
        self.analysis = AnalysisStage(self.store, analyst=Analyst(self.client, self.cognition, k=k),
                                      judge=Judge(self.client), summarizer=Summarizer(self.client), view=self.view,
                                      on_stage=self._stage, on_event=self._event)

    # ------------------------------------------------------------------------------------------ plumbing
    def view(self) -> StoreView:
        return StoreView(self.store, seed_name=self.seed_name, scale=self.s.scale, fitness_cfg=self.fitness_cfg)

    def _engineer_settings(self) -> engineer_lib.EngineerSettings:
        settings = engineer_lib.settings_from_config(self.cfg)
        root = settings.workdir_root
        if not os.path.isabs(root):
            root = os.path.join(self.workdir, "engineer")
        return dataclasses.replace(settings, workdir_root=root, scale=self.s.scale).validate()

    def _budget_text(self) -> str:
        t, m = self.engineer_settings.train.train, self.engineer_settings.train.model
        tokens = t.max_steps * t.global_batch * t.seq_len
        return (f"{t.max_steps} steps of {t.global_batch} x {t.seq_len} tokens (~{tokens / 1e6:.1f}M tokens)"
                + (f", at most {t.max_seconds:.0f} s" if t.max_seconds else "")
                + f"; model d_model {m.d_model}, {m.num_layers} layers, {m.num_heads} heads; parameters within "
                f"{self.gate_settings.budget_tolerance:.0%} of the {self.gate_settings.budget_reference} budget")

    def _cost(self) -> float:
        return self.prior_cost + self.client.ledger.total.cost_usd

    def _stage(self, stage: str, design: str = "") -> None:
        self.progress.update(stage=stage, design=design, cost_usd=self._cost())

    def _event(self, text: str) -> None:
        self.progress.event(text)
        with open(os.path.join(self.workdir, "events.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps({"t": time.time(), "event": text}) + "\n")

    def _refresh(self) -> None:
        v = self.view()
        best = v.best()
        self.progress.update(trained=v.trained_count(), best_name=best[0] if best else "",
                             best_fitness=best[1] if best else None, cost_usd=self._cost())

    # ------------------------------------------------------------------------------------------ the seed
    def _seed_source(self) -> str:
        if self.s.seed_is_file:
            path = os.path.expanduser(self.s.seed_design)
            if not os.path.isfile(path):
                raise LoopError(f"seed design program {path!r} does not exist")
            with open(path, encoding="utf-8") as f:
                return f.read()
        from aira_jax.models.loader import baseline_source  # pylint: disable=import-outside-toplevel
        try:
            return baseline_source(self.s.seed_design)
        except ValueError as e:
            raise LoopError(f"seed.design: {e}") from None

    def _ensure_seed(self) -> None:
        if not self.store.has_design(self.seed_name):
            design = Design(name=self.seed_name, kind=DesignKind.PROGRAM, source=self._seed_source(),
                            motivation=f"The seed design ({self.s.seed_design}): the baseline every proposal is "
                                       "measured against.", summary=f"seed baseline {self.s.seed_design}",
                            meta={"seed": True, "baseline_seeds": list(self.s.baseline_seeds)})
            _, exp = self.store.propose(design, scale=self.s.scale, priority=SEED_PRIORITY)
            self.store.transition(exp.id, Status.CHECKED, reason="seed: a trusted baseline program")
            self._event(f"seed design {self.seed_name} recorded; training it over seeds {list(self.s.baseline_seeds)}")
        exps = self.store.experiments(design=self.seed_name, scale=self.s.scale)
        if not any(e.status in (Status.CHECKED, Status.TRAINING, Status.TRAINED, Status.ANALYSED) for e in exps):
            exp = self.store.add_experiment(self.seed_name, scale=self.s.scale, priority=SEED_PRIORITY)
            self.store.transition(exp.id, Status.CHECKED, reason="seed: retrained after a failed run")

    def _train_seed(self) -> None:
        queued = [e for e in self.store.experiments(design=self.seed_name, scale=self.s.scale)
                  if e.status in (Status.CHECKED, Status.TRAINING)]
        if not queued:
            return
        self._stage("training seed", self.seed_name)
        seeds = dataclasses.replace(self.engineer_settings, seeds=self.s.baseline_seeds)
        eng = engineer_lib.Engineer(self.store, seeds, worker_id=self.s.worker_id, debugger=None)
        self.stop.in_training = True
        try:
            eng.work(stop=self.stop.abandon, max_experiments=1)
        finally:
            self.stop.in_training = False
        if self.stop.abandon.is_set():
            return
        exps = self.store.experiments(design=self.seed_name, scale=self.s.scale)
        if not any(e.status in (Status.TRAINED, Status.ANALYSED) for e in exps):
            reason = exps[-1].reason if exps else "no experiment"
            raise LoopError(f"the seed design {self.seed_name!r} did not train: {reason}")
        self._event(f"seed trained: {self.view().metrics(self.seed_name).text()}")

    # ------------------------------------------------------------------------------------------ resume
    def _resume_proposed(self) -> None:
        """Finishes the status move of proposals interrupted between being stored and being checked/rejected."""
        for e in self.store.experiments(status=Status.PROPOSED, scale=self.s.scale):
            d = self.store.get_design(e.design)
            outcome = d.meta.get("outcome")
            if outcome == Status.CHECKED.value or d.parent is None:
                self.store.transition(e.id, Status.CHECKED, reason="resumed")
            else:
                self.store.transition(e.id, Status.REJECTED, reason=d.meta.get("reason") or "interrupted before check")

    def _iterations_done(self) -> int:
        its = [d.meta.get("iteration") for d in self.store.designs()]
        its = [i for i in its if isinstance(i, int)]
        return max(its) + 1 if its else 0

    # ------------------------------------------------------------------------------------------ run
    def run(self) -> RunSummary:
        summary, t0 = RunSummary(), time.monotonic()
        self.stop.install()
        pool = None
        try:
            self._resume_proposed()
            self._ensure_seed()
            self._train_seed()
            it = self._iterations_done()
            self.progress.update(max_iterations=self.s.max_iterations, iteration=it)
            failures = 0
            if self.workers > 1 and not self.stop.requested:
                pool = self._start_workers()
            last_report = time.monotonic()
            while not self.stop.requested:
                if self.analysis.run_pending(stop=lambda: self.stop.requested) \
                        and time.monotonic() - last_report >= REPORT_EVERY_S:
                    self.report()   # a live report.md for people watching a long run
                    last_report = time.monotonic()
                self._refresh()
                if self.stop.requested:
                    break
                v = self.view()
                in_flight = sum(e.status in (Status.CHECKED, Status.TRAINING) for e in v.experiments)
                why_not = self._why_not_propose(it, t0, failures)
                if why_not is None and in_flight < self.workers:
                    self.progress.update(iteration=it + 1)
                    outcome = self.proposals.run(v, it)
                    it, summary.iterations = it + 1, summary.iterations + 1
                    failures = 0 if outcome.accepted else failures + 1
                    continue
                if in_flight:
                    self._train_or_wait(pool)
                    continue
                if self.analysis.pending():
                    continue
                summary.stopped_because = why_not or "done"
                break
            if self.stop.abandon.is_set():
                summary.interrupted, summary.stopped_because = True, "abandoned (Ctrl-C twice)"
            elif self.stop.requested and not summary.stopped_because:
                summary.stopped_because = "stop requested"
                self.analysis.run_pending()   # a trained experiment is analysed before stopping
        except KeyboardInterrupt:
            summary.interrupted, summary.stopped_because = True, "interrupted"
            logging.warning("discovery loop interrupted")
        finally:
            if pool is not None:
                pool.stop()
            self.stop.uninstall()
        summary.wall_s = time.monotonic() - t0
        summary.trained = self.view().trained_count()
        summary.cost_usd = self._cost()
        summary.leaderboard = self.leaderboard()
        self.progress.update(stage=f"finished ({summary.stopped_because})", design="")
        self.progress.close()
        return summary

    def _why_not_propose(self, it: int, t0: float, failures: int) -> str | None:
        if it >= self.s.max_iterations:
            return f"{self.s.max_iterations} iterations done"
        if self.s.max_seconds and time.monotonic() - t0 > self.s.max_seconds:
            return f"time budget of {self.s.max_seconds:.0f} s used"
        if failures >= self.s.max_consecutive_failures:
            return f"{failures} iterations in a row without a trainable design"
        return None

    def _train_or_wait(self, pool: WorkerPool | None) -> None:
        if pool is not None:
            pool.ensure()
            self._stage("training (workers)", "")
            self.stop.abandon.wait(self.s.poll_s)
            return
        queued = [e for e in self.view().experiments if e.status in (Status.CHECKED, Status.TRAINING)]
        self._stage("training", queued[0].design if queued else "")
        eng = engineer_lib.Engineer(self.store, self.engineer_settings, worker_id=self.s.worker_id,
                                    debugger=self.debugger)
        self.stop.in_training = True
        try:
            recorded = eng.work(stop=self.stop.abandon, max_experiments=1)
        finally:
            self.stop.in_training = False
        before = {e.id for e in queued}
        for e in self.store.experiments(status=Status.FAILED, scale=self.s.scale):
            if e.id in before:
                self._event(f"training failed: {e.design}: {e.reason[:200]}")
        if not recorded and not self.stop.abandon.is_set():
            self.stop.abandon.wait(self.s.poll_s)   # the queue is held by a stale claim: wait for its lease

    def _start_workers(self) -> WorkerPool:
        cfg = self.cfg.copy_and_resolve_references() if hasattr(self.cfg, "copy_and_resolve_references") else self.cfg
        with cfg.unlocked() if hasattr(cfg, "unlocked") else _null():
            cfg.engineer.workdir_root = self.engineer_settings.workdir_root
            cfg.engineer.scale = self.s.scale
            cfg.llm.log_path = self.client.config.log_path
            cfg.llm.backend = self.client.config.backend
        path = write_resolved_config(cfg, os.path.join(self.workdir, "resolved_config.py"))
        pool = WorkerPool(self.workers, store_url=self.store.engine.url.render_as_string(hide_password=False),
                          config_path=path,
                          log_dir=os.path.join(self.workdir, "workers"),
                          extra_args=("--noidle_exit", "--debugger=aira_jax.discovery.loop:debugger_from_config"))
        pool.ensure()
        self._event(f"started {self.workers} worker processes (logs in {pool.log_dir})")
        return pool

    # ------------------------------------------------------------------------------------------ report
    def run_info(self) -> RunInfo:
        where = self.store.location   # a server URL keeps no password
        store = STORE_FILE if where == os.path.join(self.workdir, STORE_FILE) else where
        return RunInfo(seed=self.seed_name, scale=self.s.scale, fitness=fitness_settings(self.fitness_cfg),
                       store=store)

    def report(self, top: int = 5) -> str | None:
        """Writes report.md (and report.json, figures) in the workdir from this loop's own view of the store;
        returns its path, or None when it failed (logged: a report never costs the run its records)."""
        try:
            return write_report(collect(self.view(), self.workdir, llm_log=self.client.config.log_path,
                                        store=self.store.location), top=top)
        except Exception as e:  # pylint: disable=broad-except
            logging.warning("could not write the discovery report: %s: %s", type(e).__name__, e)
            return None

    def leaderboard(self, top: int = 10) -> str:
        v = self.view()
        rows = leaderboard_rows(v)
        table = format_table(rows, top=top, noise_floor=v.baseline.loss_std if v.baseline else None,
                             seed_loss=v.baseline.loss_mean if v.baseline else None)
        write_leaderboard(self.workdir, rows, table)
        return table


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run_info_from_config(cfg: Any) -> RunInfo:
    """The seed, scale and fitness rules a loop with this config uses (for reporting on a run without run.json)."""
    s = loop_settings(cfg)
    return RunInfo(seed=_seed_of(s), scale=s.scale, fitness=fitness_settings(fitness_config(cfg)))


def _seed_of(s: LoopSettings) -> str:
    return validate_name(s.seed_name or _seed_name(s.seed_design), "seed design name")


def _seed_name(design: str) -> str:
    base = os.path.basename(design)
    return base[:-3] if base.endswith(".py") else base
