"""Loss against training compute: measured points per architecture and rung, fitted curves, baseline highlighted.

    path, note = plot_scaling(fits, baseline='deltanet', path='ladder.png')   # (None, why) without matplotlib
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from absl import logging

from aira_jax.discovery.ladder.report import ArchFit

_MARKERS = ('o', 's', '^', 'D', 'v', 'P', 'X', '*', 'h', '<', '>')


def plot_scaling(fits: Sequence[ArchFit], *, baseline: str, path: str, target_loss: float | None = None,
                 title: str = 'Ladder of scales') -> tuple[str | None, str]:
  """Writes a PNG at `path`; returns (path, '') or (None, why nothing was written)."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use('Agg', force=True)  # headless: never needs a display
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    why = f'matplotlib is not installed ({e}); no plot written'
    logging.warning('%s', why)
    return None, why
  if not any(f.points for f in fits):
    return None, 'no measured points to plot'
  rungs = sorted({rung for f in fits for rung, _, _ in f.points},
                 key=lambda r: min(c for f in fits for rr, c, _ in f.points if rr == r))
  marker = {r: _MARKERS[i % len(_MARKERS)] for i, r in enumerate(rungs)}
  fig, ax = plt.subplots(figsize=(8, 5.5))
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  others = [f for f in fits if f.arch != baseline]
  ordered = others + [f for f in fits if f.arch == baseline]  # the baseline drawn last, on top
  for i, f in enumerate(ordered):
    is_base = f.arch == baseline
    color = 'black' if is_base else colors[i % len(colors)]
    label = f'{f.arch} (baseline)' if is_base else f.arch
    if f.fit.ok:
      lo, hi = f.fit.c_min, f.fit.c_max
      xs = np.logspace(np.log10(lo) - 0.1, np.log10(hi) + 0.1, 100)
      label += f': {f.fit.E:.3g} + {f.fit.A:.3g}·C^-{f.fit.alpha:.3f}' if f.fit.E else \
          f': {f.fit.A:.3g}·C^-{f.fit.alpha:.3f}'
      ax.plot(xs, f.fit.loss(xs), color=color, lw=2.5 if is_base else 1.3, ls='-' if is_base else '--',
              label=label, zorder=3 if is_base else 2)
      label = None
    for rung, c, loss in f.points:
      ax.scatter([c], [loss], color=color, marker=marker[rung], s=70 if is_base else 40,
                 edgecolors='black' if not is_base else 'white', linewidths=0.6, zorder=4, label=label)
      label = None
  for r in rungs:  # a legend entry per rung marker
    ax.scatter([], [], color='grey', marker=marker[r], label=f'rung {r}')
  if target_loss is not None:
    ax.axhline(target_loss, color='grey', lw=0.8, ls=':', label=f'L* = {target_loss:.4g}')
  ax.set_xscale('log')
  ax.set_xlabel('training compute C = 6·N·D (FLOPs)')
  ax.set_ylabel('validation loss')
  ax.set_title(title)
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=8, loc='best')
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path, ''
