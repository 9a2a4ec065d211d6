"""Runs the gates in order in this process; the first failure stops the run.

Runs trusted code as well as untrusted: the sandbox child calls `run_gates` after installing the runtime guard;
tests and benchmarks call it directly on programs they wrote.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from absl import logging

from aira_jax.discovery.gates import causality, cost, numerics, program, training
from aira_jax.discovery.gates.common import CheckContext, GateFailure, describe_exception, program_line
from aira_jax.discovery.gates.config import GATE_NAMES, GateSettings
from aira_jax.discovery.gates.verdict import GateVerdict, Verdict

GATES: tuple[tuple[str, Callable[[CheckContext], dict[str, Any]]], ...] = (
    ('static', program.static_gate),
    ('load', program.load_gate),
    ('forward', numerics.forward_gate),
    ('causality', causality.causality_gate),
    ('batch', numerics.batch_gate),
    ('cost', cost.cost_gate),
    ('gradients', training.gradients_gate),
    ('budget', training.budget_gate),
    ('train', training.train_gate),
)
assert tuple(n for n, _ in GATES) == GATE_NAMES

Event = dict[str, Any]


def _unexpected(gate: str, exc: BaseException) -> GateVerdict:
  text = describe_exception(exc)
  if isinstance(exc, MemoryError) or 'RESOURCE_EXHAUSTED' in text:
    text += ' (the check ran out of memory: the program allocates too much; avoid [T, T] or per-step state copies)'
  line = program_line(exc)[0]
  return GateVerdict(False, gate, f'gate {gate} failed with {text}', {'line': line, 'internal': line is None})


def run_gate(name: str, fn: Callable[[CheckContext], dict[str, Any]], ctx: CheckContext, guard=None) -> GateVerdict:
  start = time.monotonic()
  try:
    verdict = GateVerdict(True, name, '', fn(ctx) or {})
  except GateFailure as e:
    verdict = GateVerdict(False, name, e.reason, e.details)
  except Exception as e:  # an error the gate did not anticipate; still the program's most of the time
    logging.exception('gate %s raised', name)
    verdict = _unexpected(name, e)
  except BaseException as e:  # SystemExit/KeyboardInterrupt raised from program code; never let it end the check
    if isinstance(e, KeyboardInterrupt) and guard is None:
      raise
    verdict = _unexpected(name, e)
  if guard is not None:
    refused = guard.drain()
    if refused:
      verdict = GateVerdict(False, name, f'the program attempted operations the policy forbids: {"; ".join(refused[:5])}'
                            f'. Design programs may only compute: no files, network, processes or threads.',
                            {'refused': refused})
  verdict.seconds = time.monotonic() - start
  return verdict


def run_gates(source: str, name: str, settings: GateSettings | None = None, *,
              on_event: Callable[[Event], None] | None = None, skip: Sequence[str] = (), guard=None) -> Verdict:
  """All gates in order (or up to settings.stop_after), in this process. `on_event` gets {'event': 'start',
  'gate', 'index'} before and {'event': 'gate', 'verdict'} after each gate."""
  settings = (settings or GateSettings()).validate()
  ctx = CheckContext(source=source, name=name, settings=settings)
  start = time.monotonic()
  done: list[GateVerdict] = []
  for index, (gate, fn) in enumerate(GATES):
    if gate in skip:
      continue
    if on_event:
      on_event({'event': 'start', 'gate': gate, 'index': index})
    verdict = run_gate(gate, fn, ctx, guard)
    done.append(verdict)
    logging.info('gate %s: %s (%.1f s) %s', gate, 'ok' if verdict.ok else 'FAILED', verdict.seconds, verdict.reason)
    if on_event:
      on_event({'event': 'gate', 'verdict': verdict.to_dict()})
    if not verdict.ok or gate == settings.stop_after:
      break
  return Verdict.from_gates(done, time.monotonic() - start)
