"""The gallery: export from a real store and real tiny runs, restore in a fresh process, ASI-Arch import, CLI."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from aira_jax import gallery
from aira_jax.discovery.cognition import CognitionBase
from aira_jax.discovery.records import Analysis, Design, JudgeScore, Result
from aira_jax.discovery.store import ExperimentStore
from aira_jax.gallery.__main__ import main as cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALE = 'tiny'

# A causal running mean mixer: cheap and trainable.
PROGRAM = '''\
import jax.numpy as jnp
from flax import nnx


class Mixer(nnx.Module):

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs, **kwargs):
    self.proj = nnx.Linear(d_model, d_model, use_bias=False, rngs=rngs)

  def __call__(self, x):
    c = jnp.cumsum(x, axis=1) / jnp.arange(1, x.shape[1] + 1)[None, :, None]
    return self.proj(c)
'''
TEXT = 'The cat sat on the mat.'


def _tiny_config(model: dict, data: dict | None = None):
  from aira_jax.models.scales import get_scale
  from aira_jax.train.config import base_config
  cfg = base_config()
  cfg.model.update(get_scale(SCALE))
  cfg.model.update({'d_model': 32, 'num_layers': 1, 'num_heads': 2, **model})
  cfg.data.update({'source': 'synthetic', 'tokenizer': 'byte', 'val_docs': 8, 'synthetic_num_docs': 120,
                   **(data or {})})
  cfg.train.update({'seq_len': 32, 'global_batch': 4, 'max_steps': 5, 'warmup_steps': 1, 'lr': 3e-3,
                    'compute_dtype': 'float32', 'eval_every': 0, 'eval_batches': 1, 'log_every': 5,
                    'checkpoint_every': 0, 'tensorboard': False, 'prefetch': 0})
  return cfg


def _train(cfg, seed_dir) -> dict:
  from aira_jax.train.trainer import train
  return train(cfg, str(seed_dir))


def _record(store, design: Design, run_dir, *, val_loss, seeds=(0,), per_seed=None, summary=None,
            new_design=True):
  """propose (or add an experiment) -> checked -> claim -> training -> result, through the store's own API."""
  if new_design:
    _, exp = store.propose(design, scale=SCALE, config={'train': {'lr': 3e-3}})
  else:
    exp = store.add_experiment(design.name, scale=SCALE)
  store.transition(exp.id, 'checked')
  claim = store.claim('gallery-test')
  assert claim is not None and claim.experiment_id == exp.id
  store.transition(exp.id, 'training', claim=claim)
  summary = summary or {}
  store.add_result(exp.id, Result(
      val_loss=val_loss, bpb=summary.get('final_val_bpb'), num_params=summary.get('params'),
      tokens=summary.get('tokens'), throughput=summary.get('tokens_per_sec'), seeds=seeds,
      val_loss_per_seed=per_seed or (), meta={'workdir': str(run_dir)}), claim=claim)
  store.release(claim)
  return exp


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  """A store with a lineage base -> {child-a, child-b}, child-a -> grandchild, and a composition 'combo';
  child-a and combo trained for real (combo with a sentencepiece tokenizer), base with its checkpoints gone."""
  root = tmp_path_factory.mktemp('gallery')
  store = ExperimentStore(str(root / 'store.sqlite'))

  # base: trained once, checkpoints deleted afterwards (the Engineer's keep_checkpoints=False).
  base_run = root / 'runs' / 'exp-base'
  (base_run / 'seed-0').mkdir(parents=True)
  (base_run / 'seed-0' / 'config.json').write_text('{}')
  base = Design(name='base', kind='program', source=PROGRAM, motivation='the seed')
  base_exp = _record(store, base, base_run, val_loss=6.0, per_seed=(6.0,))

  # child-a: two seed runs (seed-1 a copy of seed-0, recorded with the lower loss), plus a second experiment
  # with an even lower loss whose checkpoints are gone.
  child_run = root / 'runs' / 'exp-child-a'
  summary = _train(_tiny_config({'program_source': PROGRAM}), child_run / 'seed-0')
  shutil.copytree(child_run / 'seed-0', child_run / 'seed-1')
  v = summary['final_val_loss']
  child = Design(name='child-a', kind='program', source=PROGRAM, parent='base',
                 motivation='a running mean is a causal mixer', summary='running-mean mixer')
  child_exp = _record(store, child, child_run, val_loss=v + 0.5, seeds=(0, 1), per_seed=(v + 1.0, v),
                      summary=summary)
  gone_run = root / 'runs' / 'exp-child-a-2'
  (gone_run / 'seed-0').mkdir(parents=True)
  _record(store, child, gone_run, val_loss=v + 0.4, per_seed=(v + 0.4,), new_design=False)
  store.add_analysis(child_exp.id, Analysis(text='child-a beats base by a clear margin', compared_with=('base',)))
  store.add_judge_score(child_exp.id, JudgeScore(sub_scores={'novelty': 6.0, 'soundness': 8.0}, judge='fake'))
  store.add_design(Design(name='child-b', kind='program', source=PROGRAM + '\n# b\n', parent='base'))
  store.add_design(Design(name='grandchild', kind='program', source=PROGRAM + '\n# g\n', parent='child-a'))

  # combo: a composition with a sentencepiece tokenizer trained into a folder the test later removes.
  spm_dir = root / 'spm'
  combo_run = root / 'runs' / 'exp-combo'
  combo_cfg = _tiny_config({'pattern': 'attention,mlp'},
                           {'tokenizer': 'sentencepiece', 'spm_model_path': str(spm_dir / 'tok.model'),
                            'spm_vocab_size': 400, 'spm_train_docs': 100})
  combo_summary = _train(combo_cfg, combo_run / 'seed-0')
  combo = Design(name='combo', kind='composition', source='attention,mlp', motivation='plain hybrid')
  _record(store, combo, combo_run, val_loss=combo_summary['final_val_loss'],
          per_seed=(combo_summary['final_val_loss'],), summary=combo_summary)
  yield {'root': root, 'store': store, 'child_run': child_run, 'combo_run': combo_run, 'spm_dir': spm_dir,
         'child_loss': v + 0.5, 'combo_loss': combo_summary['final_val_loss'], 'base_exp': base_exp,
         'child_exp': child_exp}
  store.close()


def _logits_of(workdir, text=TEXT):
  from aira_jax.evaluate.restore import load_run
  return gallery.text_logits(load_run(workdir=workdir), text)[1]


# ---------------------------------------------------------------------------------------------- export/restore
def test_export_program_and_restore_in_fresh_process(world, tmp_path):
  g = tmp_path / 'g'
  entry = gallery.export_design(world['store'], 'child-a', g)
  # The best experiment that still has checkpoints, and its lower-loss seed.
  assert entry.experiment_id == world['child_exp'].id and entry.seed == 1 and entry.checkpoint_step == 5
  assert entry.runnable and entry.origin == 'aira-jax' and entry.kind == 'program' and entry.scale == SCALE
  assert entry.lineage['parent'] == 'base' and entry.lineage['ancestors'] == ['base']
  assert entry.lineage['children'] == ['grandchild'] and entry.lineage['siblings'] == ['child-b']
  assert entry.analyses[0]['text'] == 'child-a beats base by a clear margin'
  assert entry.judge_scores[0]['total'] == pytest.approx(7.0)
  assert entry.fitness is not None and 0.0 < entry.fitness <= 1.0  # against base, the lineage's root
  assert entry.metrics['val_loss'] == pytest.approx(world['child_loss'])
  assert entry.metrics['val_loss_per_seed'][1] == entry.metrics['exported_seed_val_loss']
  assert entry.config_overrides == {'train': {'lr': 3e-3}}
  folder = g / 'child-a'
  assert (folder / 'program.py').read_text() == PROGRAM
  assert sorted(p.name for p in (folder / 'checkpoints').iterdir()) == ['5']
  assert gallery.read_entry(folder) == entry  # the manifest round-trips

  out = tmp_path / 'logits.npy'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.run([sys.executable, '-m', 'aira_jax.gallery', 'restore', 'child-a', f'--gallery={g}',
                         f'--text={TEXT}', f'--out={out}'], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'parameters' in proc.stdout and 'next-token predictions' in proc.stdout
  expected = _logits_of(world['child_run'] / 'seed-1')
  np.testing.assert_array_equal(np.load(out), expected)
  assert expected.shape[0] == len(TEXT.encode()) and expected.shape[1] >= 256  # byte ids + specials


def test_composition_with_sentencepiece_round_trips(world, tmp_path):
  g = tmp_path / 'g'
  expected = _logits_of(world['combo_run'] / 'seed-0')
  entry = gallery.export_design(world['store'], 'combo', g)
  folder = g / 'combo'
  assert entry.kind == 'composition' and entry.source_file == 'pattern.txt'
  assert (folder / 'pattern.txt').read_text() == 'attention,mlp'
  config = json.loads((folder / 'config.json').read_text())
  assert config['data']['spm_model_path'] == 'sentencepiece.model' and config['data']['spm_train'] is False
  hidden = world['root'] / 'spm-hidden'
  world['spm_dir'].rename(hidden)  # the entry must not need the original tokenizer file
  try:
    run = gallery.restore_entry(g, 'combo')
  finally:
    hidden.rename(world['spm_dir'])
  assert run.step == entry.checkpoint_step
  np.testing.assert_array_equal(gallery.text_logits(run, TEXT)[1], expected)


def test_export_top_and_key(world, tmp_path):
  losses = {'child-a': world['child_loss'], 'combo': world['combo_loss']}
  best, worst = sorted(losses, key=losses.get)
  [entry] = gallery.export_top(world['store'], tmp_path / 'g1', 1)
  assert entry.name == best
  [entry] = gallery.export_top(world['store'], tmp_path / 'g2', 1, key=lambda d, e, r: -r.val_loss)
  assert entry.name == worst
  assert len(gallery.export_top(world['store'], tmp_path / 'g3', 5)) == 2  # base cannot be exported
  with pytest.raises(gallery.GalleryError, match='already exists'):
    gallery.export_top(world['store'], tmp_path / 'g3', 2)


def test_export_errors(world, tmp_path):
  store, g = world['store'], tmp_path / 'g'
  with pytest.raises(gallery.GalleryError, match="no design named 'nope'"):
    gallery.export_design(store, 'nope', g)
  with pytest.raises(gallery.GalleryError, match='keep_checkpoints'):
    gallery.export_design(store, 'base', g)
  with pytest.raises(gallery.GalleryError, match='no trained experiment'):
    gallery.export_design(store, 'child-b', g)
  with pytest.raises(gallery.GalleryError, match='no seed 7'):
    gallery.export_design(store, 'child-a', g, seed=7)
  with pytest.raises(gallery.GalleryError, match='not an experiment of design'):
    gallery.export_design(store, 'child-a', g, experiment_id=world['base_exp'].id)
  entry = gallery.export_design(store, 'child-a', g, seed=0)
  assert entry.seed == 0
  with pytest.raises(gallery.GalleryError, match='already exists'):
    gallery.export_design(store, 'child-a', g)
  assert gallery.export_design(store, 'child-a', g, overwrite=True).seed == 1
  assert gallery.read_entry(g / 'child-a').seed == 1
  assert not [p for p in g.iterdir() if p.name.startswith('.')]  # no staging left behind
  with pytest.raises(gallery.GalleryError, match="no gallery entry 'ghost'"):
    gallery.restore_entry(g, 'ghost')


def test_malformed_entries_name_file_and_field(world, tmp_path):
  g = tmp_path / 'g'
  gallery.export_design(world['store'], 'child-a', g)
  broken = g / 'broken'
  shutil.copytree(g / 'child-a', broken)
  data = json.loads((broken / 'entry.json').read_text())
  (broken / 'entry.json').write_text(json.dumps({**data, 'name': 'broken', 'kind': 'banana'}))
  with pytest.raises(gallery.EntryFormatError, match=r"broken/entry.json: field 'kind'"):
    gallery.read_entry(broken)
  (broken / 'entry.json').write_text(json.dumps({**data, 'name': 'broken', 'checkpoint_step': 'five'}))
  with pytest.raises(gallery.EntryFormatError, match="field 'checkpoint_step'"):
    gallery.restore_entry(g, 'broken')
  (broken / 'entry.json').write_text(json.dumps({**data, 'name': 'broken', 'schema_version': 99}))
  with pytest.raises(gallery.EntryFormatError, match='newer'):
    gallery.read_entry(broken)
  no_kind = {k: v for k, v in data.items() if k != 'kind'}
  (broken / 'entry.json').write_text(json.dumps({**no_kind, 'name': 'broken'}))
  with pytest.raises(gallery.EntryFormatError, match=r"missing field\(s\) \['kind'\]"):
    gallery.read_entry(broken)
  (broken / 'entry.json').write_text('{"name": "broken",')
  with pytest.raises(gallery.EntryFormatError, match='malformed JSON'):
    gallery.read_entry(broken)
  entries, problems = gallery.scan_gallery(g)
  assert [e.name for e in entries] == ['child-a'] and len(problems) == 1 and 'broken' in problems[0]


# ---------------------------------------------------------------------------------------------- ASI-Arch
def _asi_records():
  return [
      {'name': 'delta net/v2 (gated)', 'program': 'import torch\nclass DeltaNet(torch.nn.Module): pass\n',
       'motivation': 'Hierarchical gating lets the memory forget stale associations at two time scales.',
       'summary': 'Two-level forget gates on a delta-rule memory.', 'result': {'train': 'step,loss\n1,5.0\n',
                                                                               'test': 'arc,piqa\n0.4,0.6\n'},
       'parameters': '417.16M', 'score': 0.61},
      {'name': 'PathFormer', 'program': 'import torch  # path-wise routing\n', 'motivation': 'Route tokens along '
       'content-dependent paths so that recall of distant facts improves.', 'result': 'loss 4.2',
       'parameters': 20_000_000, 'score': '0.55'},
  ]


def test_asi_arch_import_list_and_dict_forms(tmp_path):
  g = tmp_path / 'g'
  path = tmp_path / '106.json'
  path.write_text(json.dumps(_asi_records()))
  notes = tmp_path / 'notes.jsonl'
  assert cli(['gallery', 'import-asi-arch', f'--file={path}', f'--gallery={g}', f'--cognition_out={notes}']) == 0
  entry = gallery.load_entry(g, 'delta_net_v2_gated')
  assert entry.origin == 'asi-arch' and not entry.runnable and entry.original_name == 'delta net/v2 (gated)'
  assert entry.metrics['reported']['score'] == 0.61 and entry.num_params == 417_160_000
  assert (g / 'delta_net_v2_gated' / 'program_torch.py').read_text().startswith('import torch')
  assert gallery.load_entry(g, 'PathFormer').metrics['reported']['score'] == 0.55
  with pytest.raises(gallery.GalleryError, match='not runnable'):
    gallery.restore_entry(g, 'PathFormer')

  base = CognitionBase()
  assert base.load_jsonl(notes) == 2
  [hit] = base.retrieve('the memory should forget stale associations', k=1)
  assert hit.entry.id == 'asi-arch-delta-net-v2-gated' and 'delta_net_v2_gated' in hit.entry.guidance

  # Dict form {name: record}, with names taken from the keys; a prefix keeps them apart from the list import.
  by_name = {r['name']: {k: v for k, v in r.items() if k != 'name'} for r in _asi_records()}
  entries = gallery.import_asi_arch(_write(tmp_path / 'd.json', by_name), g, prefix='v2-')
  assert sorted(e.name for e in entries) == ['v2-PathFormer', 'v2-delta_net_v2_gated']
  # JSONL form.
  jsonl = tmp_path / 'r.jsonl'
  jsonl.write_text(''.join(json.dumps(r) + '\n' for r in _asi_records()))
  assert [r.name for r in gallery.load_asi_arch(jsonl)] == ['delta net/v2 (gated)', 'PathFormer']


def _write(path, data):
  path.write_text(json.dumps(data))
  return path


def _snapshot(g):
  return {str(p.relative_to(g)): p.read_bytes() for p in sorted(g.rglob('*')) if p.is_file()}


def test_asi_arch_bad_files_leave_gallery_untouched(tmp_path):
  g = tmp_path / 'g'
  gallery.import_asi_arch(_write(tmp_path / 'ok.json', _asi_records()), g)
  before = _snapshot(g)
  bad = _asi_records() + [{'name': 'third', 'motivation': 'no program'}]
  bad[0] = {**bad[0], 'name': 'fresh-name'}  # valid and new: must not be written either
  with pytest.raises(gallery.AsiArchError, match=r"bad.json: record 2 'third': missing field 'program'"):
    gallery.import_asi_arch(_write(tmp_path / 'bad.json', bad), g)
  with pytest.raises(gallery.AsiArchError, match="record 1 'PathFormer': field 'score' must be a number"):
    gallery.import_asi_arch(_write(tmp_path / 'bad2.json', [bad[0], {**bad[1], 'score': 'high'}]), g)
  with pytest.raises(gallery.GalleryError, match='already exists'):  # a clash is found before writing
    gallery.import_asi_arch(_write(tmp_path / 'clash.json', [bad[0], _asi_records()[1]]), g)
  assert cli(['gallery', 'import-asi-arch', f'--file={tmp_path / "bad.json"}', f'--gallery={g}']) == 1
  (tmp_path / 'junk.json').write_text('{"name": ')
  assert cli(['gallery', 'import-asi-arch', f'--file={tmp_path / "junk.json"}', f'--gallery={g}']) == 1
  assert _snapshot(g) == before
  assert not (g / 'fresh-name').exists()


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_list_show_export_and_usage(world, tmp_path, capsys):
  g = tmp_path / 'g'
  store_path = world['root'] / 'store.sqlite'
  assert cli(['gallery', 'export', f'--store={store_path}', '--design=combo', f'--gallery={g}']) == 0
  gallery.import_asi_arch(_write(tmp_path / 'a.json', _asi_records()[1:]), g)
  capsys.readouterr()
  assert cli(['gallery', 'list', f'--gallery={g}']) == 0
  out = capsys.readouterr().out
  assert 'combo' in out and 'PathFormer' in out and 'composition' in out and 'asi-arch' in out
  assert cli(['gallery', 'show', 'combo', f'--gallery={g}']) == 0
  out = capsys.readouterr().out
  assert 'attention,mlp' in out and 'plain hybrid' in out and 'lineage' in out
  assert cli(['gallery', 'show', 'PathFormer', f'--gallery={g}']) == 0
  assert 'path-wise routing' in capsys.readouterr().out

  assert cli(['gallery', 'show', 'ghost', f'--gallery={g}']) == 1
  assert 'error: no gallery entry' in capsys.readouterr().err
  assert cli(['gallery', 'export', f'--store={store_path}', '--design=base', f'--gallery={g}']) == 1
  assert 'keep_checkpoints' in capsys.readouterr().err
  for argv in (['gallery'], ['gallery', 'frobnicate'], ['gallery', 'export', '--design=combo'],
               ['gallery', 'export', f'--store={store_path}', '--design=combo', '--top=2'],
               ['gallery', 'export', f'--store={tmp_path / "none.sqlite"}', '--top=1'],
               ['gallery', 'restore'], ['gallery', 'restore', 'combo', '--file=x.json'],
               ['gallery', 'list', '--top=notanumber'], ['gallery', 'import-asi-arch']):
    assert cli(argv + [f'--gallery={g}']) == 2, argv
    assert capsys.readouterr().err.startswith('error: ')
  assert not (tmp_path / 'none.sqlite').exists()
