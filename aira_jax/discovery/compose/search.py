"""Compose mode, stage by stage: search on the proxy -> aggregate -> extrapolate -> ladder -> report.

    search = ComposeSearch(cfg, workdir)      # cfg: a compose config (configs/compose_tiny.py)
    report = search.run()

Every design and result goes to the experiment store in the workdir (compositions are designs of kind
'composition' whose source is the pattern string), so a rerun resumes: trained experiments are never trained
again, and each stage only adds what is missing. Training goes through the Engineer (child process per run,
memory limit, hard timeout, failures recorded with their kind); `workers` threads train side by side.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Any, Callable

from absl import logging

from aira_jax.discovery.compose import aggregate as agg
from aira_jax.discovery.compose.extrapolate import extrapolate
from aira_jax.discovery.compose.proposers import (Candidate, EvolutionaryComposer, EvolutionConfig, Evaluated,
                                                  LLMComposer, ranked)
from aira_jax.discovery.compose.settings import ComposeConfigError, ComposeSettings, compose_settings
from aira_jax.discovery.compose.space import ComposeSpace, Composition, composition_name, describe, from_pattern, \
    to_pattern
from aira_jax.discovery.engineer_settings import EngineerSettings, settings_from_config
from aira_jax.discovery.records import Design, DesignKind, Status
from aira_jax.discovery.store import ExperimentStore
from aira_jax.discovery.train_queue import train_queue

STAGES = ('search', 'aggregate', 'extrapolate', 'baseline')
STORE_FILE = 'store.sqlite'


@dataclasses.dataclass
class ComposeReport:
    history: list[Evaluated]
    aggregates: list[dict[str, Any]]
    extrapolated: list[dict[str, Any]]
    baseline: str
    ladder: Any = None
    stopped: str = ''
    wall_s: float = 0.0


class ComposeSearch:
    def __init__(self, cfg: Any, workdir: str, *, client: Any = None, on_event: Callable[[str], None] | None = None,
                 stop: threading.Event | None = None, should_stop: Callable[[], bool] | None = None):
        """stop: abandon at once (training children are stopped, claims released); should_stop: finish the
        current step and start no new one (Ctrl-C once)."""
        self.cfg, self.workdir = cfg, os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        if 'compose' not in cfg or 'engineer' not in cfg:
            raise ComposeConfigError('a compose config needs `compose` and `engineer` sections '
                                     '(start from configs/compose_tiny.py)')
        self.s: ComposeSettings = compose_settings(cfg.compose)
        self.stop = stop or threading.Event()
        self._should_stop = should_stop or (lambda: False)
        self.on_event = on_event or (lambda msg: logging.info('compose: %s', msg))
        programs = self._store_programs()
        self.space: ComposeSpace = self.s.space(programs)
        base = settings_from_config(cfg)
        root = base.workdir_root if os.path.isabs(base.workdir_root) else os.path.join(self.workdir,
                                                                                          base.workdir_root)
        train = base.train
        if programs:
            with train.model.unlocked():
                train.model.programs = dict(programs)
        self.engineer = dataclasses.replace(base, workdir_root=root, scale=self.s.proxy_scale, train=train)
        self.client = client
        self.composer = self._composer()
        self.store = ExperimentStore(os.path.join(self.workdir, STORE_FILE))
        self.t0 = time.monotonic()

    # ------------------------------------------------------------------------------------------- setup
    def _store_programs(self) -> dict[str, str]:
        """Accepted design programs of a discovery store, offered as 'design:<name>' primitives."""
        if not self.s.store_designs:
            return {}
        if not self.s.design_store:
            raise ComposeConfigError('compose.store_designs is set but compose.design_store names no store')
        other = ExperimentStore(self.s.design_store)
        try:
            progs = {}
            for name in self.s.store_designs:
                d = other.get_design(name)
                if d.kind != DesignKind.PROGRAM:
                    raise ComposeConfigError(f'compose.store_designs: {name!r} is a {d.kind.value}, not a program')
                passed = [e for e in other.experiments(design=name)
                          if e.status not in (Status.PROPOSED, Status.REJECTED)]
                if not passed:
                    raise ComposeConfigError(f'compose.store_designs: {name!r} never passed the gates in '
                                             f'{self.s.design_store} (only accepted designs can be primitives)')
                progs[name] = d.source
        finally:
            other.close()
        extra = tuple(f'design:{n}' for n in progs if f'design:{n}' not in self.s.primitives)
        self.s = dataclasses.replace(self.s, primitives=self.s.primitives + extra).validate()
        return progs

    def _composer(self):
        backend = str(self.cfg.llm.backend) if 'llm' in self.cfg else 'offline'
        if backend == 'offline' and self.client is None:
            return EvolutionaryComposer(self.space, EvolutionConfig(
                seed=self.s.seed, init_random=self.s.init_random, use_references=self.s.use_references,
                tournament=self.s.tournament, crossover_rate=self.s.crossover_rate))
        if self.client is None:
            from aira_jax.discovery.llm import make_client  # pylint: disable=import-outside-toplevel
            self.client = make_client(self.cfg.llm)
        return LLMComposer(self.client, self.space, init_random=self.s.init_random)

    # ------------------------------------------------------------------------------------------- store
    def _designs(self, *stages: str) -> list[Design]:
        return [d for d in self.store.designs(kind=DesignKind.COMPOSITION.value)
                if (d.meta.get('compose') or {}).get('stage') in stages]

    def history(self, *stages: str) -> list[Evaluated]:
        """What the proxy says about every composition of `stages` (default: search and aggregate)."""
        stages = stages or ('search', 'aggregate')
        out = []
        for d in self._designs(*stages):
            info = d.meta.get('compose') or {}
            exps = [e for e in self.store.experiments(design=d.name) if e.scale == self.s.proxy_scale]
            loss, status, reason = None, 'pending', ''
            for e in exps:
                if e.status in (Status.TRAINED, Status.ANALYSED):
                    r = self.store.result(e.id)
                    loss, status = (r.val_loss if r else None), 'trained'
                elif e.status in (Status.FAILED, Status.REJECTED) and status != 'trained':
                    status, reason = e.status.value, e.reason
            out.append(Evaluated(d.name, tuple(info.get('layers') or from_pattern(d.source)), loss, status, reason,
                                 info.get('operator', '')))
        return out

    def _add(self, cand: Candidate, stage: str, *, scale: str | None, config: dict | None = None) -> str | None:
        """Records a candidate as a design (and, with a scale, a checked experiment); None if it exists."""
        prefix = {'search': 'cmp', 'aggregate': 'agg', 'extrapolate': 'ext', 'baseline': 'base'}[stage]
        name = composition_name(cand.layers, self.space, prefix)
        if self.store.has_design(name):
            return None
        parents = tuple(p for p in cand.parents if self.store.has_design(p))
        design = Design(name=name, kind=DesignKind.COMPOSITION, source=to_pattern(cand.layers),
                        motivation=cand.motivation, parent=parents[0] if parents else None,
                        references=parents[1:], summary=f'{len(cand.layers)} sublayers: {describe(cand.layers)}',
                        meta={'compose': {'stage': stage, 'operator': cand.operator, 'layers': list(cand.layers),
                                          'proposer': getattr(self.composer, 'name', ''), **cand.meta}})
        if scale is None:
            self.store.add_design(design)
        else:
            _, exp = self.store.propose(design, scale=scale, config=config or {})
            self.store.transition(exp.id, Status.CHECKED, reason=f'compose {stage}: composition of known primitives')
        return name

    def _train(self, settings: EngineerSettings | None = None) -> int:
        return train_queue(self.store, settings or self.engineer, workers=self.s.workers, stop=self.stop,
                           prefix='compose')

    def halted(self) -> bool:
        return self.stop.is_set() or bool(self._should_stop())

    def _out_of_time(self) -> bool:
        return bool(self.s.max_seconds) and time.monotonic() - self.t0 > self.s.max_seconds

    # ------------------------------------------------------------------------------------------- stages
    def search(self) -> list[Evaluated]:
        self._train()  # anything an interrupted run left queued
        draw = 0
        while not self.halted():
            hist = self.history('search')
            done = [h for h in hist if h.status != 'pending']
            if len(done) >= self.s.num_patterns:
                break
            if self._out_of_time():
                self.on_event(f'search: time budget reached after {len(done)} compositions')
                break
            want = min(self.s.batch_size, self.s.num_patterns - len(done))
            draw += 1
            cands = self.composer.propose(hist, want, draw=len(done) * 1000 + draw)
            added = [n for n in (self._add(c, 'search', scale=self.s.proxy_scale) for c in cands) if n]
            if not added:
                self.on_event('search: the proposer has nothing new to offer; stopping the search')
                break
            for name in added:
                d = self.store.get_design(name)
                self.on_event(f'proposed {name} [{d.meta["compose"]["operator"]}]: {d.source}')
            self._train()
            for h in self.history('search'):
                if h.name in added:
                    what = f'val loss {h.val_loss:.4f}' if h.ok else f'{h.status}: {h.reason[:120]}'
                    self.on_event(f'{h.name}: {what}')
            if isinstance(self.composer, LLMComposer):
                self.composer.analyze(self.history('search'))
        return self.history('search')

    def aggregate(self) -> list[dict[str, Any]]:
        """Majority vote over the top-k and one vote per cluster; new compositions are trained on the proxy."""
        if not self.s.aggregate:
            return []
        top = ranked(self.history('search'))[:self.s.top_k]
        if len(top) < 2:
            self.on_event('aggregate: fewer than two trained compositions; skipped')
            return []
        layers = [h.layers for h in top]
        names = [h.name for h in top]
        made = [('majority', agg.majority_vote(layers, self.space), list(range(len(top))))]
        made += [(f'cluster{i}', c, members) for i, (c, members) in
                 enumerate(agg.cluster_vote(layers, self.s.n_clusters, self.space))]
        out = []
        known = {h.layers: h.name for h in self.history()}
        for method, comp, members in made:
            entry = {'method': method, 'pattern': to_pattern(comp), 'from': [names[i] for i in members]}
            if comp in known:
                entry['same_as'] = known[comp]
            else:
                why = (f'Aggregation ({method}) of {len(members)} top proxy compositions '
                       f'({", ".join(names[i] for i in members)}): per-sublayer majority vote.')
                name = self._add(Candidate(comp, f'aggregate-{method}', why, tuple(names[i] for i in members)),
                                 'aggregate', scale=self.s.proxy_scale)
                entry['name'] = name
                if name:
                    known[comp] = name
            out.append(entry)
        self._train()
        losses = {h.name: h.val_loss for h in self.history()}
        for e in out:
            e['val_loss'] = losses.get(e.get('name') or e.get('same_as'))
            self.on_event(f"aggregate {e['method']}: {e['pattern']} -> {e.get('name') or e.get('same_as')} "
                          f"(val loss {e['val_loss']})")
        return out

    def extrapolate(self) -> tuple[list[dict[str, Any]], str]:
        """The best proxy compositions taken to the target depth by every strategy, and the baseline stack."""
        depth = self.s.target_sublayers
        best = ranked(self.history())[:self.s.extrapolate_top]
        out = []
        for h in best:
            for strategy in self.s.strategies:
                comp = extrapolate(h.layers, depth, strategy)
                why = (f'{strategy} of {h.name} (proxy loss {h.val_loss:.4f}) from {len(h.layers)} to {depth} '
                       f'sublayers.')
                name = self._add(Candidate(comp, f'extrapolate-{strategy}', why, (h.name,)), 'extrapolate',
                                 scale=None) or composition_name(comp, self.space, 'ext')
                out.append({'name': name, 'from': h.name, 'strategy': strategy, 'pattern': to_pattern(comp)})
                self.on_event(f'extrapolated {h.name} by {strategy} -> {name}: {to_pattern(comp)}')
        block = from_pattern(self.s.baseline)
        if depth % len(block):
            raise ComposeConfigError(f'compose.baseline block {self.s.baseline!r} ({len(block)} sublayers) does not '
                                     f'divide target_sublayers ({depth})')
        base_layers = block * (depth // len(block))
        base = self._add(Candidate(base_layers, 'baseline', f'Baseline: {self.s.baseline!r} stacked to {depth} '
                                   'sublayers (the reference every extrapolated design is compared with).'),
                         'baseline', scale=None) or composition_name(base_layers, self.space, 'base')
        return out, base

    def ladder(self, designs: list[str], baseline: str):
        if not self.s.run_ladder or 'ladder' not in self.cfg:
            self.on_event('the ladder of scales is skipped (' + ('compose.run_ladder is False' if not self.s.run_ladder
                                                                else 'no `ladder` section') + ')')
            return None
        from aira_jax.discovery.ladder import ladder_settings_from_config, run_ladder  # pylint: disable=import-outside-toplevel
        settings = ladder_settings_from_config(self.cfg)
        eng = dataclasses.replace(self.engineer, scale=None)

        def event(ev) -> None:
            if ev.kind in ('rung_start', 'training', 'rung_done', 'promoted', 'skipped', 'count_failed', 'done'):
                self.on_event(f'ladder {ev.rung or ""} {ev.kind}{" " + ev.design if ev.design else ""}: {ev.message}')

        return run_ladder(self.store, designs, settings, eng, baseline=baseline,
                          workdir=os.path.join(self.workdir, 'ladder'), on_event=event, stop=self.stop,
                          workers=self.s.workers)

    def run(self) -> ComposeReport:
        from aira_jax.discovery.compose import report as report_lib  # pylint: disable=import-outside-toplevel
        stopped = ''
        hist = self.search()
        aggregates = self.aggregate() if not self.halted() else []
        extrapolated, baseline = self.extrapolate() if not self.halted() else ([], '')
        ladder = None
        if not self.halted() and extrapolated:
            ladder = self.ladder(sorted({e['name'] for e in extrapolated}), baseline)
        if self.halted():
            stopped = 'interrupted'
        rep = ComposeReport(self.history(), aggregates, extrapolated, baseline, ladder, stopped,
                            time.monotonic() - self.t0)
        if ladder is not None and self.s.export_top and not self.halted():
            report_lib.export_best(self, rep)
        report_lib.write(self, rep)
        return rep

    def close(self) -> None:
        self.store.close()

