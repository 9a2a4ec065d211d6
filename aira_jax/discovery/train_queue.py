"""Train a store's queue with N Engineers side by side in this process (threads; each run is its own child).

The Engineers share the queue through the store's leased claims, exactly as separate worker processes would, so
this is the in-process form of `--workers=N` for stages that own their queue (compose search, ladder rungs).
"""
from __future__ import annotations

import threading

from absl import logging

from aira_jax.discovery.engineer import Debugger, Engineer
from aira_jax.discovery.engineer_settings import EngineerSettings
from aira_jax.discovery.store import ExperimentStore


def train_queue(store: ExperimentStore, settings: EngineerSettings, *, workers: int, stop: threading.Event,
                prefix: str = 'trainer', debugger: Debugger | None = None) -> int:
    """Trains every queued experiment of `settings.scale` with `workers` Engineers; returns how many were recorded
    (trained or failed). Raises only when every worker died of an unexpected error."""
    counts = [0] * workers
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            engineer = Engineer(store, settings, worker_id=f'{prefix}-{i}', debugger=debugger)
            counts[i] = engineer.work(stop=stop, idle_exit=True)
        except BaseException as e:  # noqa: BLE001  (reported below; the other workers go on)
            errors.append(e)
            logging.exception('%s: training worker %d stopped', prefix, i)

    threads = [threading.Thread(target=work, args=(i,), name=f'{prefix}-{i}', daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(timeout=0.5)
    if errors and len(errors) == workers:
        raise RuntimeError(f'{prefix}: every training worker failed; first error: {errors[0]!r}')
    return sum(counts)
