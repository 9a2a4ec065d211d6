"""The compose report: compose.md (for people) and compose.json (for tools) in the workdir, and gallery export."""
from __future__ import annotations

import json
import math
import os
from typing import Any

from absl import logging

from aira_jax.discovery.compose.proposers import ranked
from aira_jax.discovery.compose.space import to_pattern


def _loss(v: float | None) -> str:
    return f'{v:.4f}' if v is not None and math.isfinite(v) else '-'


def search_table(history, *, top: int | None = None) -> str:
    good = ranked(history)
    rows = ['| rank | design | val loss | operator | pattern |', '| --- | --- | --- | --- | --- |']
    for i, h in enumerate(good[:top] if top else good):
        rows.append(f'| {i + 1} | {h.name} | {_loss(h.val_loss)} | {h.operator} | `{to_pattern(h.layers)}` |')
    for h in history:
        if not h.ok:
            rows.append(f'| - | {h.name} | {h.status} | {h.operator} | `{to_pattern(h.layers)}` ({h.reason[:80]}) |')
    return '\n'.join(rows)


def to_json(search, rep) -> dict[str, Any]:
    ladder = rep.ladder
    ladder_json = None
    if ladder is not None:
        ladder_json = ladder.to_dict() if hasattr(ladder, 'to_dict') else str(ladder)
    return {
        'workdir': search.workdir, 'store': search.store.url, 'proposer': getattr(search.composer, 'name', ''),
        'proxy_sublayers': search.s.proxy_sublayers, 'target_sublayers': search.s.target_sublayers,
        'search': [{'name': h.name, 'pattern': to_pattern(h.layers), 'val_loss': h.val_loss, 'status': h.status,
                    'operator': h.operator, 'reason': h.reason} for h in rep.history],
        'aggregates': rep.aggregates, 'extrapolated': rep.extrapolated, 'baseline': rep.baseline,
        'ladder': ladder_json, 'stopped': rep.stopped, 'wall_s': rep.wall_s,
    }


def write(search, rep) -> str:
    s = search.s
    trained = [h for h in rep.history if h.ok]
    lines = ['# Compose search', '',
             f'Proposer: {getattr(search.composer, "name", "?")}. Proxy: {s.proxy_sublayers} sublayers; '
             f'{len(rep.history)} compositions ({len(trained)} trained); target depth {s.target_sublayers}. '
             f'Wall time {rep.wall_s:.0f} s.' + (f' Stopped: {rep.stopped}.' if rep.stopped else ''), '',
             '## Proxy results (search and aggregation)', '', search_table(rep.history), '']
    if rep.aggregates:
        lines += ['## Aggregation', '', '| method | pattern | design | val loss | from |', '| --- | --- | --- | --- | --- |']
        for a in rep.aggregates:
            lines.append(f"| {a['method']} | `{a['pattern']}` | {a.get('name') or a.get('same_as')} | "
                         f"{_loss(a.get('val_loss'))} | {', '.join(a['from'])} |")
        lines.append('')
    if rep.extrapolated:
        lines += ['## Extrapolation', '', f'Baseline: {rep.baseline}', '',
                  '| design | from | strategy | pattern |', '| --- | --- | --- | --- |']
        lines += [f"| {e['name']} | {e['from']} | {e['strategy']} | `{e['pattern']}` |" for e in rep.extrapolated]
        lines.append('')
    if rep.ladder is not None:
        lines += ['## Ladder of scales', '']
        lines.append(rep.ladder.format_table() if hasattr(rep.ladder, 'format_table') else str(rep.ladder))
        lines.append('')
    md = os.path.join(search.workdir, 'compose.md')
    with open(md, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines))
    with open(os.path.join(search.workdir, 'compose.json'), 'w', encoding='utf-8') as f:
        json.dump(to_json(search, rep), f, indent=1, default=str)
    return md


def best_of_ladder(ladder, k: int) -> list[str]:
    """The k designs (baseline excluded) with the lowest loss at the highest rung where any trained."""
    for rung in reversed(getattr(ladder, 'rungs', None) or []):
        rows = sorted((r for r in rung.rows if r.state == 'trained' and not r.baseline and r.val_loss is not None
                       and math.isfinite(r.val_loss)), key=lambda r: r.val_loss)
        if rows:
            return [r.design for r in rows[:k]]
    return []


def export_best(search, rep) -> list[str]:
    """Gallery entries for the best designs of the ladder's last rung (config compose.export_top)."""
    from aira_jax.gallery import export_design, default_gallery_dir  # pylint: disable=import-outside-toplevel
    names = best_of_ladder(rep.ladder, search.s.export_top)
    out = []
    gallery = os.path.join(search.workdir, 'gallery') if not os.environ.get('AIRA_GALLERY') else default_gallery_dir()
    for name in names:
        try:
            entry = export_design(search.store, name, gallery, overwrite=True)
            out.append(entry.name)
            search.on_event(f'exported {name} to the gallery {gallery}')
        except Exception as e:  # noqa: BLE001  (an export problem must not lose the report)
            logging.warning('compose: could not export %s: %s', name, e)
            search.on_event(f'export of {name} failed: {e}')
    return out
