"""Open a discovery workdir for reporting: its store, and which seed, scale and fitness rules the run used.

The loop writes them to <workdir>/run.json when it starts (`write_run_info`). For a workdir without it (older
runs, or a store copied alone) they are inferred: the seed is the first design without a parent, the scale that of
the seed's experiments, the fitness rules the defaults.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any

from aira_jax.discovery import fitness as fitness_lib
from aira_jax.discovery.loop_context import StoreView
from aira_jax.discovery.store import ExperimentStore

RUN_FILE = "run.json"
STORE_FILE = "store.sqlite"


class ReportError(ValueError):
    """The workdir cannot be reported on (no store, unreadable run.json, an empty store, ...)."""


@dataclasses.dataclass(frozen=True)
class RunInfo:
    seed: str
    scale: str
    fitness: dict[str, Any] = dataclasses.field(default_factory=dict)
    store: str = STORE_FILE           # relative to the workdir, or a database URL
    inferred: bool = False            # True: read off the store (no run.json), fitness rules guessed

    def fitness_config(self) -> fitness_lib.FitnessConfig:
        try:
            return fitness_lib.FitnessConfig(**self.fitness)
        except (TypeError, fitness_lib.FitnessError) as e:
            raise ReportError(f"{RUN_FILE}: bad fitness settings {self.fitness!r}: {e}") from None


def fitness_settings(cfg: fitness_lib.FitnessConfig) -> dict[str, Any]:
    """A FitnessConfig as run.json keeps it (JSON types: the terms as a list)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def write_run_info(workdir: str, info: RunInfo) -> str:
    path = os.path.join(workdir, RUN_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in dataclasses.asdict(info).items() if k != "inferred"}, f, indent=1)
    return path


def read_run_info(workdir: str) -> RunInfo | None:
    path = os.path.join(workdir, RUN_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            blob = json.load(f)
        return RunInfo(seed=str(blob["seed"]), scale=str(blob["scale"]), fitness=dict(blob.get("fitness") or {}),
                       store=str(blob.get("store") or STORE_FILE))  # never 'inferred': the loop wrote it
    except (ValueError, KeyError, TypeError) as e:
        raise ReportError(f"{path}: unreadable run description ({e})") from None


def _store_url(workdir: str, store: str) -> str:
    if "://" in store:
        return store
    path = store if os.path.isabs(store) else os.path.join(workdir, store)
    if not os.path.exists(path):
        raise ReportError(f"no experiment store at {path}: is {workdir} a discovery workdir "
                          "(python -m aira_jax.discover --workdir=...)?")
    return path


def infer_run_info(store: ExperimentStore) -> RunInfo:
    designs = store.designs()
    roots = [d for d in designs if d.parent is None]
    if not roots:
        raise ReportError("the store holds no seed design (a design without a parent): nothing to report yet")
    seed = next((d for d in roots if d.meta.get("seed")), roots[0]).name
    experiments = store.experiments()
    scales = collections.Counter(e.scale for e in experiments if e.design == seed)
    if not scales:
        raise ReportError(f"the store holds no experiment for its seed {seed!r}: nothing to report yet")
    scale = scales.most_common(1)[0][0]
    # The fitness terms the records can support, with the default rules (the run's own config is not known).
    seed_ids = {e.id for e in experiments if e.design == seed and e.scale == scale}
    terms = ["loss"]
    if any(r.benchmark_scores for e, r in store.evaluated(scale=scale) if e.id in seed_ids):
        terms.append("benchmark")
    if store.judge_scores():
        terms.append("judge")
    return RunInfo(seed=seed, scale=scale, fitness={"terms": terms}, inferred=True)


def open_run(workdir: str, *, store: str | None = None, info: RunInfo | None = None
             ) -> tuple[ExperimentStore, StoreView, RunInfo]:
    """The run's store (close it when done), a view of it as the loop sees it, and the run's description
    (`info`, e.g. from the run's config, overrides run.json)."""
    workdir = os.path.abspath(workdir)
    if not os.path.isdir(workdir):
        raise ReportError(f"workdir {workdir} does not exist")
    info = info or read_run_info(workdir)
    if info is None and os.path.exists(os.path.join(workdir, "compose.json")):
        raise ReportError(f"{workdir} is a compose search (python -m aira_jax.compose): its report is "
                          f"{os.path.join(workdir, 'compose.md')}, with the ladder's in ladder/ladder.md")
    url = _store_url(workdir, store or (info.store if info else STORE_FILE))
    try:
        es = ExperimentStore(url)
    except Exception as e:  # pylint: disable=broad-except  (bad URL, server down, wrong or hidden password)
        hint = " (run.json keeps a server URL without its password: pass --store=URL)" if "***" in url else ""
        raise ReportError(f"cannot open the store {url}: {type(e).__name__}: "
                          f"{' '.join(str(e).split())[:300]}{hint}") from None
    try:
        info = info or infer_run_info(es)
        view = StoreView(es, seed_name=info.seed, scale=info.scale, fitness_cfg=info.fitness_config())
    except BaseException:
        es.close()
        raise
    return es, view, info
