"""Token and cost accounting per role and per experiment, from a price table per model.

Prices are USD per million tokens (input, output). The defaults are list prices at the time of writing for a
few common models (standard tier, short prompts) and go stale: override them with `llm.prices`. A model with
no entry costs 0 and is flagged (`priced=False`), so missing prices show up instead of silently undercounting.
Cache hits cost nothing: they are counted as calls and cache hits, and their tokens are not billed again.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Mapping

from absl import logging

from aira_jax.discovery.llm.types import Usage

DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4o": (2.50, 10.0),
    "gpt-4o-mini": (0.15, 0.60),
    "offline": (0.0, 0.0),
}


class PriceTable:
    def __init__(self, overrides: Mapping[str, tuple[float, float]] | None = None, *, defaults: bool = True):
        self._prices = dict(DEFAULT_PRICES) if defaults else {}
        self._prices.update({k: (float(v[0]), float(v[1])) for k, v in (overrides or {}).items()})
        self._warned: set[str] = set()

    def price(self, model: str) -> tuple[float, float] | None:
        if model in self._prices:
            return self._prices[model]
        # Versioned names ('gemini-2.5-flash-001', 'models/gemini-2.5-pro') take the longest matching entry.
        bare = model.split("/")[-1]
        matches = [k for k in self._prices if bare == k or bare.startswith(k + "-")]
        return self._prices[max(matches, key=len)] if matches else None

    def cost(self, model: str, usage: Usage) -> tuple[float, bool]:
        """(USD, priced). Unpriced models cost 0 and are reported once in the log."""
        p = self.price(model)
        if p is None:
            if model not in self._warned:
                self._warned.add(model)
                logging.warning("no price for model %r: its cost is counted as 0 (set llm.prices)", model)
            return 0.0, False
        return (usage.input_tokens * p[0] + usage.output_tokens * p[1]) / 1e6, True


@dataclasses.dataclass
class Tally:
    calls: int = 0
    failed_calls: int = 0
    requests: int = 0          # backend round trips that reached the network (retries included)
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0

    def add(self, other: "Tally") -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class CostLedger:
    """Thread-safe running totals by role, by experiment, and overall."""

    def __init__(self):
        self._lock = threading.Lock()
        self.total = Tally()
        self.by_role: dict[str, Tally] = collections.defaultdict(Tally)
        self.by_experiment: dict[str, Tally] = collections.defaultdict(Tally)
        self.by_model: dict[str, Tally] = collections.defaultdict(Tally)

    def add(self, *, role: str, model: str, experiment: str | None, tally: Tally) -> None:
        with self._lock:
            for t in (self.total, self.by_role[role], self.by_model[model]):
                t.add(tally)
            if experiment is not None:
                self.by_experiment[experiment].add(tally)

    def summary(self) -> dict[str, object]:
        """JSON-safe snapshot (for logs, the store or a report)."""
        with self._lock:
            return {"total": dataclasses.asdict(self.total),
                    "by_role": {k: dataclasses.asdict(v) for k, v in sorted(self.by_role.items())},
                    "by_model": {k: dataclasses.asdict(v) for k, v in sorted(self.by_model.items())},
                    "by_experiment": {k: dataclasses.asdict(v) for k, v in sorted(self.by_experiment.items())}}
