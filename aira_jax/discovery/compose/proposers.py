"""Who proposes compositions: the offline evolutionary composer, or an LLM with AIRA-Compose's operators.

Both implement `propose(history, n, draw) -> list[Candidate]` over the same `Evaluated` history (every
composition tried so far with its proxy loss, or its failure), so the search loop does not care which one runs.

- `EvolutionaryComposer` (offline, no LLM): known hand designs first, random drafts until `init_random` are
  tried, then tournament selection with Genesys' operators: crossover of two parents, mutation of one unit,
  interleaving swaps, replacing a mixer kind. Never proposes a composition already tried.
- `LLMComposer`: the operators of AIRA-Compose: `draft` (no evidence yet), `improve` (from the ranked results and
  the latest analysis), `debug` (fix a composition whose training failed, given the error), `analyze` (reads the
  results and writes what works and what to avoid, for the next `improve`). Replies are validated against the
  space and re-asked with the problem named; an invalid reply never reaches the store.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from aira_jax.discovery.compose import operators as ops
from aira_jax.discovery.compose.space import ComposeSpace, Composition, describe, to_pattern


@dataclasses.dataclass(frozen=True)
class Candidate:
    layers: Composition
    operator: str                       # 'reference' | 'draft' | 'mutate_unit' | 'crossover' | 'improve' | ...
    motivation: str
    parents: tuple[str, ...] = ()       # store names of the parents (first = the parent of the lineage)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Evaluated:
    name: str
    layers: Composition
    val_loss: float | None              # None: not trained (failed or rejected)
    status: str = 'trained'             # 'trained' | 'failed' | 'rejected' | 'pending'
    reason: str = ''
    operator: str = ''

    @property
    def ok(self) -> bool:
        return self.val_loss is not None and math.isfinite(self.val_loss)


def ranked(history: Sequence[Evaluated]) -> list[Evaluated]:
    return sorted((h for h in history if h.ok), key=lambda h: (h.val_loss, h.name))


@dataclasses.dataclass(frozen=True)
class EvolutionConfig:
    seed: int = 0
    init_random: int = 6             # compositions tried (references + random drafts) before evolution starts
    use_references: bool = True
    tournament: int = 3
    elite_fraction: float = 0.5      # parents come from the best half of what trained
    crossover_rate: float = 0.4
    mutation_after_crossover: float = 0.3
    mlp_share: float = 0.5
    max_tries: int = 200


class EvolutionaryComposer:
    name = 'offline-evolutionary'

    def __init__(self, space: ComposeSpace, config: EvolutionConfig = EvolutionConfig()):
        self.space, self.cfg = space, config

    def propose(self, history: Sequence[Evaluated], n: int, draw: int = 0) -> list[Candidate]:
        rng = np.random.default_rng([self.cfg.seed, draw, len(history)])
        seen = {h.layers for h in history}
        out: list[Candidate] = []

        def take(c: Candidate) -> bool:
            if c.layers in seen or self.space.problems(c.layers):
                return False
            seen.add(c.layers)
            out.append(c)
            return True

        if self.cfg.use_references:
            for layers, why in ops.reference_compositions(self.space):
                if len(out) >= n or len(history) + len(out) >= self.cfg.init_random:
                    break
                take(Candidate(layers, 'reference', f'{why}, at the proxy depth of {len(layers)} sublayers'))
        good = ranked(history)
        tries = 0
        while len(out) < n and tries < self.cfg.max_tries:
            tries += 1
            if len(history) + len(out) < self.cfg.init_random or not good:
                layers, what = ops.random_draft(self.space, rng, mlp_share=self.cfg.mlp_share)
                take(Candidate(layers, 'draft', f'Exploration: {what}.'))
                continue
            take(self._evolve(good, rng))
        if len(out) < n:
            logging.warning('compose: the evolutionary composer found only %d new composition(s) of %d asked',
                            len(out), n)
        return out

    def _tournament(self, pool: list[Evaluated], rng: np.random.Generator) -> Evaluated:
        idx = rng.choice(len(pool), size=min(self.cfg.tournament, len(pool)), replace=False)
        return pool[int(min(idx))]  # pool is ranked: the smallest index is the fittest

    def _evolve(self, good: list[Evaluated], rng: np.random.Generator) -> Candidate:
        pool = good[:max(2, math.ceil(len(good) * self.cfg.elite_fraction))]
        parent = self._tournament(pool, rng)
        if len(pool) >= 2 and rng.random() < self.cfg.crossover_rate:
            mates = [p for p in pool if p.name != parent.name]
            mate = self._tournament(mates, rng)
            layers, what = ops.crossover(parent.layers, mate.layers, rng, a_name=parent.name, b_name=mate.name)
            op, parents = 'crossover', (parent.name, mate.name)
            if rng.random() < self.cfg.mutation_after_crossover:
                layers, more = ops.mutate_unit(layers, self.space, rng)
                what += f'; then {more}'
            why = (f'Crossover of {parent.name} (loss {parent.val_loss:.4f}) and {mate.name} (loss '
                   f'{mate.val_loss:.4f}): {what}. Combines parts of two of the best compositions so far.')
        else:
            op = str(rng.choice(list(ops.MUTATIONS), p=[0.6, 0.25, 0.15]))
            layers, what = ops.MUTATIONS[op](parent.layers, self.space, rng)
            parents = (parent.name,)
            why = f'Mutation of {parent.name} (loss {parent.val_loss:.4f}): {what}.'
        return Candidate(tuple(layers), op, why + f' Result: {describe(layers)}.', parents)


# ---------------------------------------------------------------------------------------------- LLM composer
OPERATOR_TEXT = {
    'draft': 'DRAFT: no results exist yet. Propose diverse compositions that test different hypotheses about which '
             'primitives and which interleavings work (ratios of mixers to MLPs, where attention goes, SSM vs '
             'delta-rule layers).',
    'improve': 'IMPROVE: propose compositions expected to beat the best results below. Build on what the ranking '
               'and the analysis show works; each proposal should change something specific and say why.',
    'debug': 'DEBUG: the compositions below failed to train (the error of each is given). Propose fixed versions '
             'that keep their idea but avoid the cause of the failure (e.g. fewer memory-heavy layers, a mixer '
             'that is numerically stable, at least one sequence mixer).',
}


def results_table(history: Sequence[Evaluated], *, top: int = 12, worst: int = 4) -> str:
    good = ranked(history)
    rows = [f'{i + 1:>3}. loss {h.val_loss:.4f}  {to_pattern(h.layers)}  ({h.name}; {h.operator})'
            for i, h in enumerate(good[:top])]
    if len(good) > top + worst:
        rows.append('   ...')
        rows += [f'     loss {h.val_loss:.4f}  {to_pattern(h.layers)}  ({h.name})' for h in good[-worst:]]
    bad = [h for h in history if not h.ok and h.status in ('failed', 'rejected')]
    rows += [f'   FAILED {to_pattern(h.layers)} ({h.name}): {h.reason[:200]}' for h in bad[-6:]]
    return '\n'.join(rows) or '(no results yet)'


class LLMComposer:
    name = 'llm'

    def __init__(self, client, space: ComposeSpace, *, role: str = 'composer', analyst_role: str = 'compose_analyst',
                 init_random: int = 6, debug_failures: bool = True):
        self.client, self.space = client, space
        self.role, self.analyst_role = role, analyst_role
        self.init_random, self.debug_failures = init_random, debug_failures
        self.analysis = '(no analysis yet)'
        self._debugged: set[str] = set()

    def operator_for(self, history: Sequence[Evaluated]) -> str:
        if self.debug_failures and [h for h in history if h.status == 'failed' and h.name not in self._debugged]:
            return 'debug'
        return 'draft' if len(ranked(history)) < min(self.init_random, 2) else 'improve'

    def _check(self, seen: set[Composition]):
        space = self.space

        def check(data) -> str | None:
            for i, item in enumerate(data.get('compositions') or ()):
                layers = tuple(item.get('layers') or ())
                problems = space.problems(layers)
                if problems:
                    return (f'compositions[{i}] {to_pattern(layers)!r} ' + '; '.join(problems) +
                            f'. Use exactly {space.num_sublayers} names from {list(space.primitives)}.')
                if layers in seen:
                    return f'compositions[{i}] {to_pattern(layers)!r} was already tried: propose a new one'
            return None
        return check

    def propose(self, history: Sequence[Evaluated], n: int, draw: int = 0) -> list[Candidate]:
        from aira_jax.discovery.llm import render_prompt, schemas  # pylint: disable=import-outside-toplevel
        op = self.operator_for(history)
        failed = [h for h in history if h.status == 'failed' and h.name not in self._debugged]
        shown = history if op != 'debug' else failed
        prompt = render_prompt(
            self.role, operator=op, operator_instructions=OPERATOR_TEXT[op], n=str(n),
            depth=str(self.space.num_sublayers), primitives=', '.join(self.space.primitives),
            constraints=self._constraints(), results=results_table(shown), analysis=self.analysis)
        seen = {h.layers for h in history}
        reply = self.client.complete(self.role, prompt, schema=schemas.COMPOSER, check=self._check(seen),
                                     experiment=f'compose-{draw}')
        if not reply.ok:
            logging.warning('compose: the %s reply failed (%s): %s', self.role, reply.failure.kind.value,
                            reply.failure.message[:300])
            return []
        if op == 'debug':
            self._debugged.update(h.name for h in failed)
        parents = tuple(h.name for h in (failed[:1] if op == 'debug' else ranked(history)[:1]))
        out, taken = [], set()
        for item in reply.data.get('compositions') or ():
            layers = tuple(item['layers'])
            if layers in taken:
                continue
            taken.add(layers)
            out.append(Candidate(layers, op, str(item.get('motivation') or '').strip() or f'{op} by the LLM',
                                 parents, meta={'model': getattr(reply, 'model', '')}))
        return out[:n]

    def analyze(self, history: Sequence[Evaluated]) -> str:
        """The `analyze` operator: updates the analysis the next `improve` reads; returns it."""
        from aira_jax.discovery.llm import render_prompt, schemas  # pylint: disable=import-outside-toplevel
        if not ranked(history):
            return self.analysis
        prompt = render_prompt(self.analyst_role, depth=str(self.space.num_sublayers),
                               primitives=', '.join(self.space.primitives), results=results_table(history))
        reply = self.client.complete(self.analyst_role, prompt, schema=schemas.COMPOSE_ANALYST,
                                     experiment='compose-analysis')
        if reply.ok:
            d = reply.data
            self.analysis = (d['analysis'].strip() + ('\nPromising: ' + '; '.join(d.get('promising') or ())
                                                      if d.get('promising') else '')
                             + ('\nAvoid: ' + '; '.join(d.get('avoid') or ()) if d.get('avoid') else ''))
        else:
            logging.warning('compose: the analysis failed (%s)', reply.failure.kind.value)
        return self.analysis

    def _constraints(self) -> str:
        s = self.space
        parts = [f'exactly {s.num_sublayers} sublayers', f'at least {s.min_mixers} sequence mixer(s)']
        if s.min_mlps:
            parts.append(f'at least {s.min_mlps} mlp sublayer(s)')
        parts += [f'at most {frac:.0%} {p}' for p, frac in s.max_fraction.items()]
        return '; '.join(parts)
