"""Export discovered designs from an experiment store to the gallery, with their Orbax checkpoints.

    entry = export_design(store, 'gdn-v2', 'runs/gallery')            # best experiment, best seed
    entries = export_top(store, 'runs/gallery', k=5)                   # the 5 lowest validation losses

The Engineer trains each seed of an experiment in <result.meta['workdir']>/seed-<N>/, a trainer workdir
(config.json, summary.json, checkpoints/<step>/). An export copies one of those workdirs into the entry's folder:
config.json (made self-contained: a design program given as a file path is inlined, a sentencepiece model is
copied next to it), summary.json and only the chosen checkpoint step, copied whole with shutil so Orbax reads it
as it wrote it. The design's record, lineage, analyses, judge scores and fitness go into entry.json.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, NamedTuple

from absl import logging

from aira_jax.discovery.records import Design, Experiment, Result
from aira_jax.discovery.store import ExperimentStore, NotFoundError
from aira_jax.gallery.entry import (SOURCE_FILES, GalleryEntry, GalleryError, check_entry_name, check_free,
                                    install, now_iso, staging_dir, write_entry)

SPM_FILE = 'sentencepiece.model'
_RUN_FILES = ('summary.json', 'metrics.jsonl')  # copied when present (config.json is rewritten, not copied)

# Ranks exportable runs in export_top; lower is better.
RankKey = Callable[[Design, Experiment, Result], float]


class RunChoice(NamedTuple):
  experiment: Experiment
  result: Result
  seed: int
  seed_dir: Path
  step: int
  seed_loss: float | None


# ---------------------------------------------------------------------------------------------- choosing
def checkpoint_steps(seed_dir: Path) -> list[int]:
  """Finished Orbax steps under <seed_dir>/checkpoints (in-progress saves carry a tmp suffix, not a number)."""
  root = seed_dir / 'checkpoints'
  if not root.is_dir():
    return []
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir() and (p / 'state').is_dir())


def _run_dir(result: Result) -> Path | None:
  workdir = (result.meta or {}).get('workdir')
  return Path(workdir).expanduser() if isinstance(workdir, str) and workdir else None


def _finite(x: Any) -> float | None:
  return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _seed_losses(result: Result, run_dir: Path) -> dict[int, float | None]:
  """Each seed's validation loss: the recorded per-seed values, else the seed run's summary.json."""
  seeds = list(result.seeds)
  if not seeds:  # a result recorded without seeds: whatever seed runs the directory holds
    seeds = sorted(int(p.name[5:]) for p in run_dir.glob('seed-*') if p.name[5:].isdigit())
  if result.val_loss_per_seed and len(result.val_loss_per_seed) == len(seeds):
    return {s: _finite(v) for s, v in zip(seeds, result.val_loss_per_seed)}
  out = {}
  for s in seeds:
    try:
      summary = json.loads((run_dir / f'seed-{s}' / 'summary.json').read_text(encoding='utf-8'))
      out[s] = _finite(summary.get('final_val_loss'))
    except (OSError, ValueError, AttributeError):
      out[s] = None
  return out


def _choose_seed(exp: Experiment, result: Result, seed: int | None) -> tuple[RunChoice | None, str]:
  """The seed run to export (lowest loss among those with checkpoints), or None and why there is none."""
  run_dir = _run_dir(result)
  if run_dir is None:
    return None, f"experiment {exp.id}: its result has no meta['workdir'] (not trained by the Engineer?)"
  if not run_dir.is_dir():
    return None, f'experiment {exp.id}: its run directory {run_dir} is gone'
  losses = _seed_losses(result, run_dir)
  if seed is not None:
    if seed not in losses:
      return None, f'experiment {exp.id} has no seed {seed} (seeds: {sorted(losses)})'
    losses = {seed: losses[seed]}
  found, missing = [], []
  for s, loss in losses.items():
    steps = checkpoint_steps(run_dir / f'seed-{s}')
    if steps:
      found.append(RunChoice(exp, result, s, run_dir / f'seed-{s}', steps[-1], loss))
    else:
      missing.append(str(run_dir / f'seed-{s}' / 'checkpoints'))
  if not found:
    return None, (f'experiment {exp.id}: no checkpoint left in {", ".join(missing) or run_dir} (the Engineer '
                  'deletes them after recording when engineer.keep_checkpoints=False; retrain with '
                  'keep_checkpoints=True to export)')
  found.sort(key=lambda c: (c.seed_loss is None, c.seed_loss if c.seed_loss is not None else 0.0, c.seed))
  return found[0], ''


def choose_run(store: ExperimentStore, name: str, *, experiment_id: int | None = None,
               seed: int | None = None, scale: str | None = None) -> RunChoice:
  """The experiment (lowest val_loss among those whose checkpoints remain, unless given) and seed to export."""
  try:
    store.get_design(name)
  except NotFoundError:
    raise GalleryError(f'no design named {name!r} in the store {store.url}') from None
  evaluated = store.evaluated(design=name, scale=None if experiment_id is not None else scale)
  if experiment_id is not None:
    exp = store.get_experiment(experiment_id) if _exists(store, experiment_id) else None
    if exp is None or exp.design != name:
      raise GalleryError(f'experiment {experiment_id} is not an experiment of design {name!r}'
                         + ('' if exp is None else f' (it belongs to {exp.design!r})'))
    evaluated = [(e, r) for e, r in evaluated if e.id == experiment_id]
    if not evaluated:
      raise GalleryError(f'experiment {experiment_id} of {name!r} has no result (status {exp.status.value}): '
                         'nothing trained to export')
  if not evaluated:
    raise GalleryError(f'design {name!r} has no trained experiment (no result recorded'
                       + (f' at scale {scale!r}' if scale else '') + f') in {store.url}')
  # Best first; a run whose loss is missing or not finite only when nothing better is left.
  evaluated.sort(key=lambda er: (_finite(er[1].val_loss) is None, _finite(er[1].val_loss) or 0.0, er[0].id))
  reasons = []
  for exp, result in evaluated:
    choice, why = _choose_seed(exp, result, seed)
    if choice is not None:
      if _finite(result.val_loss) is None:
        logging.warning('exporting experiment %d of %s, whose validation loss is %s', exp.id, name, result.val_loss)
      return choice
    reasons.append(why)
  raise GalleryError(f'design {name!r}: no trained experiment with checkpoints to export: ' + '; '.join(reasons))


def _exists(store: ExperimentStore, experiment_id: int) -> bool:
  try:
    store.get_experiment(experiment_id)
    return True
  except NotFoundError:
    return False


# ---------------------------------------------------------------------------------------------- copying
def _find_spm(path: str, seed_dir: Path) -> Path | None:
  for candidate in (Path(path).expanduser(), seed_dir / path):
    if candidate.is_file():
      return candidate
  return None


def _copy_run(choice: RunChoice, dest: Path) -> tuple[dict[str, Any], dict[str, Any]]:
  """Copies the seed run's trainer files into `dest`; returns the written config and notes for entry.extra."""
  src = choice.seed_dir
  try:
    config = json.loads((src / 'config.json').read_text(encoding='utf-8'))
  except FileNotFoundError:
    raise GalleryError(f'{src}/config.json is missing: the run cannot be restored without its config') from None
  except ValueError as e:
    raise GalleryError(f'{src}/config.json: malformed JSON ({e})') from None
  notes: dict[str, Any] = {'run_dir': str(src)}
  model, data = config.setdefault('model', {}), config.setdefault('data', {})
  design = model.get('design') or ''
  if not model.get('program_source') and not model.get('pattern') and str(design).endswith('.py'):
    # A design given as a file path: inline it, so the entry does not depend on that file staying put.
    try:
      model['program_source'] = Path(design).expanduser().read_text(encoding='utf-8')
    except OSError as e:
      raise GalleryError(f'{src}/config.json: model.design {design!r} cannot be read: {e}') from None
    notes['inlined_design_file'] = design
  if data.get('tokenizer') == 'sentencepiece':
    spm = _find_spm(str(data.get('spm_model_path') or ''), src)
    if spm is None:
      raise GalleryError(f"{src}/config.json: the run's sentencepiece model {data.get('spm_model_path')!r} was "
                         'not found; without it the checkpoint cannot be used')
    shutil.copy2(spm, dest / SPM_FILE)
    notes['tokenizer'] = {'sentencepiece': str(spm)}
    data['spm_model_path'] = SPM_FILE  # relative: load_run looks next to config.json
    data['spm_train'] = False          # never train a new tokenizer over a checkpoint's vocabulary
  (dest / 'config.json').write_text(json.dumps(config, indent=2, allow_nan=True) + '\n', encoding='utf-8')
  for name in _RUN_FILES:
    if (src / name).is_file():
      shutil.copy2(src / name, dest / name)
  if not (src / 'summary.json').is_file():
    logging.warning('%s has no summary.json; exporting without it', src)
  ckpt_src, ckpt_dest = src / 'checkpoints', dest / 'checkpoints'
  ckpt_dest.mkdir()
  for item in ckpt_src.iterdir():  # manager-level metadata files, if the Orbax version writes any
    if item.is_file():
      shutil.copy2(item, ckpt_dest / item.name)
  shutil.copytree(ckpt_src / str(choice.step), ckpt_dest / str(choice.step), symlinks=False)
  return config, notes


# ---------------------------------------------------------------------------------------------- records
def _lineage(store: ExperimentStore, name: str) -> dict[str, Any]:
  d = store.get_design(name)
  return {'parent': d.parent, 'ancestors': [a.name for a in store.ancestors(name)],
          'children': [c.name for c in store.children(name)], 'siblings': [s.name for s in store.siblings(name)],
          'references': list(d.references)}


def _fitness(store: ExperimentStore, lineage: dict[str, Any], name: str, scale: str,
             cfg: Any = None, seed_name: str | None = None) -> tuple[float | None, dict]:
  """Fitness as the loop computes it, against `seed_name` (default: the lineage's root, the search's seed) at
  the same scale. With no `cfg`, the default terms less 'benchmark' when the seed has no benchmark scores."""
  seed_name = seed_name or (lineage['ancestors'][-1] if lineage['ancestors'] else name)
  try:
    # pylint: disable=import-outside-toplevel
    from aira_jax.discovery.fitness import FitnessConfig
    from aira_jax.discovery.loop_context import StoreView
    view = StoreView(store, seed_name=seed_name, scale=scale, fitness_cfg=cfg or FitnessConfig())
    if cfg is None and view.baseline is not None and not view.baseline.benchmarks:
      terms = tuple(t for t in view.fitness_cfg.terms if t != 'benchmark')
      view.fitness_cfg = dataclasses.replace(view.fitness_cfg, terms=terms)
    report = view.fitness_report(name)
  except Exception as e:  # pylint: disable=broad-except  # fitness is a nicety; the export must not fail on it
    logging.warning('fitness of %s not computed: %s', name, e)
    return None, {}
  if report is None:
    return None, {'against': seed_name, 'why_none': 'no baseline: the seed design has no result at this scale'}
  return report.fitness, {'against': seed_name, 'terms': report.terms, 'missing': list(report.missing),
                          'flags': list(report.flags), 'discarded': report.discarded,
                          'loss_delta': report.loss_delta, 'loss_delta_z': report.loss_delta_z}


def _metrics(result: Result, choice: RunChoice) -> dict[str, Any]:
  out = {k: v for k, v in result.to_dict().items() if k not in ('meta', 'id', 'created_at', 'experiment_id')}
  out['exported_seed_val_loss'] = choice.seed_loss
  summaries = (result.meta or {}).get('summaries') or {}
  if isinstance(summaries, dict) and str(choice.seed) in summaries:
    out['exported_seed_summary'] = summaries[str(choice.seed)]
  return out


def export_design(store: ExperimentStore, name: str, gallery_dir: str | os.PathLike, *,
                  experiment_id: int | None = None, seed: int | None = None, overwrite: bool = False,
                  scale: str | None = None, entry_name: str | None = None, fitness_cfg: Any = None,
                  fitness_seed: str | None = None) -> GalleryEntry:
  """Exports design `name` to <gallery_dir>/<entry_name or name>/ and returns its entry.

  Picks the design's trained experiment (at `scale`, if given) with the lowest val_loss whose checkpoints remain
  (or `experiment_id`), and its seed run with the lowest loss (or `seed`); exports that run's latest checkpoint
  step. `fitness_cfg` (a discovery FitnessConfig) is how the entry's fitness is computed, against `fitness_seed`
  (default: the root of the design's lineage, i.e. the search's seed design).
  """
  entry_name = check_entry_name(entry_name or name)
  check_free(gallery_dir, entry_name, overwrite)
  choice = choose_run(store, name, experiment_id=experiment_id, seed=seed, scale=scale)
  design, exp, result = store.get_design(name), choice.experiment, choice.result
  lineage = _lineage(store, name)
  fitness, fitness_report = _fitness(store, lineage, name, exp.scale, fitness_cfg, fitness_seed)
  staging = staging_dir(gallery_dir)
  try:
    folder = staging / entry_name
    folder.mkdir()
    config, notes = _copy_run(choice, folder)
    kind = design.kind.value
    # The source that produced these weights (a Debugger fix may have made a newer version since).
    trained = config['model'].get('program_source') if kind == 'program' else config['model'].get('pattern')
    source = trained or design.source
    (folder / SOURCE_FILES[kind]).write_text(source, encoding='utf-8')
    if trained and trained != design.source:
      notes['source_differs_from_store'] = 'the entry keeps the source the checkpoint was trained with'
    entry = GalleryEntry(
        name=entry_name, kind=kind, origin='aira-jax', runnable=True, source_file=SOURCE_FILES[kind],
        motivation=design.motivation, summary=design.summary, original_name=design.name,
        metrics=_metrics(result, choice), scale=exp.scale, config_overrides=dict(exp.config), lineage=lineage,
        analyses=[{'experiment_id': e.id, 'text': a.text, 'compared_with': list(a.compared_with)}
                  for e, _ in store.evaluated(design=name) for a in store.analyses(e.id)],
        judge_scores=[{'experiment_id': e.id, 'total': s.total, **s.to_dict()}
                      for e, _ in store.evaluated(design=name) for s in store.judge_scores(e.id)],
        fitness=fitness, exported_at=now_iso(), store_url=store.url, experiment_id=exp.id, seed=choice.seed,
        checkpoint_step=choice.step,
        extra={**notes, 'fitness_report': fitness_report, 'design_meta': design.meta,
               'program_hash': (result.meta or {}).get('program_hash'), 'references': list(design.references)})
    write_entry(entry, folder)
    install(folder, gallery_dir, entry_name, overwrite=overwrite)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  logging.info('exported %s (experiment %d, seed %d, step %d) to %s', name, exp.id, choice.seed, choice.step,
               Path(gallery_dir) / entry_name)
  return entry


def export_top(store: ExperimentStore, gallery_dir: str | os.PathLike, k: int, *, key: RankKey | None = None,
               scale: str | None = None, overwrite: bool = False) -> list[GalleryEntry]:
  """Exports the k best designs that still have checkpoints: lowest val_loss first, or lowest `key(design,
  experiment, result)`. Designs whose runs cannot be exported are skipped (and logged)."""
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise GalleryError(f'k must be a positive integer, got {k!r}')
  ranked = []
  for design in store.designs():
    try:
      choice = choose_run(store, design.name, scale=scale)
    except GalleryError as e:
      logging.info('not in the running for export: %s', e)
      continue
    score = key(design, choice.experiment, choice.result) if key else _finite(choice.result.val_loss)
    if score is None or (isinstance(score, float) and math.isnan(score)):
      continue
    ranked.append((score, design.name, choice))
  if not ranked:
    raise GalleryError(f'no design in {store.url} has a trained experiment with checkpoints'
                       + (f' at scale {scale!r}' if scale else ''))
  top = sorted(ranked, key=lambda r: (r[0], r[1]))[:k]
  for _, n, _ in top:  # before writing anything: one taken name should not leave half the top-k exported
    check_free(gallery_dir, n, overwrite)
  return [export_design(store, n, gallery_dir, experiment_id=c.experiment.id, seed=c.seed, overwrite=overwrite)
          for _, n, c in top]
