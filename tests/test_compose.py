"""Compose mode: the space, operators, aggregation, extrapolation, both proposers and the search over a store."""
import json
import os

import numpy as np
import pytest

from aira_jax.discovery.compose import aggregate as agg
from aira_jax.discovery.compose import operators as ops
from aira_jax.discovery.compose.extrapolate import extrapolate, stack, stretch
from aira_jax.discovery.compose.proposers import EvolutionaryComposer, EvolutionConfig, Evaluated, LLMComposer
from aira_jax.discovery.compose.settings import ComposeConfigError, compose_settings
from aira_jax.discovery.compose.space import (ComposeSpace, CompositionError, composition_name, from_pattern, runs,
                                              to_pattern)
from aira_jax.discovery.llm import LLMClient
from aira_jax.discovery.records import validate_name

SPACE = ComposeSpace(num_sublayers=8, min_mlps=1)


# ------------------------------------------------------------------------------------------------ space
def test_pattern_round_trip_and_names():
    layers = ('mamba2', 'mamba2', 'mlp', 'attention', 'mlp', 'mlp', 'gated_deltanet', 'mlp')
    assert to_pattern(layers) == 'mamba2*2,mlp,attention,mlp*2,gated_deltanet,mlp'
    assert from_pattern(to_pattern(layers)) == layers
    assert runs(layers)[:2] == [('mamba2', 2), ('mlp', 1)]
    name = composition_name(layers, SPACE)
    assert name == 'cmp-SSMAMMGM' and validate_name(name) == name
    deep = ComposeSpace(num_sublayers=200)
    long_name = composition_name(('attention', 'mlp') * 100, deep)
    assert validate_name(long_name) and len(long_name) < 40


def test_space_names_each_problem():
    assert SPACE.problems(('attention', 'mlp') * 4) == []
    problems = ' '.join(SPACE.problems(('mlp',) * 7))
    assert '7 sublayers' in problems and 'sequence mixer' in problems
    with pytest.raises(CompositionError, match='transformer_xl'):
        SPACE.check(('transformer_xl',) + ('mlp',) * 7)
    capped = ComposeSpace(num_sublayers=4, max_fraction={'attention': 0.25})
    assert 'fraction' in ' '.join(capped.problems(('attention', 'attention', 'mlp', 'mlp')))
    with pytest.raises(CompositionError, match='unknown primitive'):
        ComposeSpace(primitives=('attention', 'lstm'))
    with pytest.raises(CompositionError, match='no sequence mixer'):
        ComposeSpace(primitives=('mlp',))


def test_settings_validation_names_the_field():
    assert compose_settings({'proxy_sublayers': 4, 'target_sublayers': 8}).target_sublayers == 8
    with pytest.raises(ComposeConfigError, match='unknown field'):
        compose_settings({'num_pattern': 3})
    with pytest.raises(ComposeConfigError, match='multiple of proxy_sublayers'):
        compose_settings({'proxy_sublayers': 6, 'target_sublayers': 16})
    with pytest.raises(ComposeConfigError, match='num_patterns'):
        compose_settings({'num_patterns': 0})
    with pytest.raises(ComposeConfigError, match='strategies'):
        compose_settings({'strategies': ('stack', 'zoom')})


# ------------------------------------------------------------------------------------------------ operators
def test_operators_keep_depth_and_do_what_they_say():
    rng = np.random.default_rng(0)
    base = ('attention', 'mlp') * 4
    for _ in range(20):
        child, what = ops.mutate_unit(base, SPACE, rng)
        diff = [i for i in range(8) if child[i] != base[i]]
        assert len(diff) == 1 and f'sublayer {diff[0]}' in what
        swapped, _ = ops.swap_adjacent(base, SPACE, rng)
        assert sorted(swapped) == sorted(base) and swapped != base
    a, b = ('mamba2',) * 8, ('mlp',) * 8
    for _ in range(20):
        child, what = ops.crossover(a, b, rng)
        assert len(child) == 8 and set(child) <= {'mamba2', 'mlp'}
        if what.startswith('one-point'):
            cut = child.index('mlp')
            assert child == a[:cut] + b[cut:]
    with pytest.raises(ValueError, match='equal depth'):
        ops.crossover(a, b[:4], rng)
    refs = ops.reference_compositions(SPACE)
    assert refs and all(SPACE.problems(r) == [] for r, _ in refs)
    assert refs[0][0] == ('attention', 'mlp') * 4


# ------------------------------------------------------------------------------------------------ aggregation
def test_majority_vote_ties_go_to_the_better_rank():
    ranked = [('attention', 'mlp', 'mamba2', 'mlp'), ('mamba2', 'mlp', 'mamba2', 'mlp'),
              ('mamba2', 'mlp', 'attention', 'mlp'), ('attention', 'mlp', 'mamba2', 'mlp')]
    assert agg.majority_vote(ranked) == ('attention', 'mlp', 'mamba2', 'mlp')
    # 1-1 tie at position 0: the best-ranked pattern's choice wins.
    assert agg.majority_vote(ranked[1:3])[0] == 'mamba2'


def test_majority_vote_is_repaired_into_the_space():
    space = ComposeSpace(num_sublayers=4)
    ranked = [('attention', 'mlp', 'mlp', 'mlp'), ('mlp', 'mlp', 'mlp', 'mamba2'), ('mlp', 'mlp', 'mlp', 'mlp')]
    voted = agg.majority_vote(ranked, space)
    assert space.problems(voted) == [] and voted[0] == 'attention'


def test_clusters_separate_families():
    fam_a = [('attention', 'mlp') * 4, ('attention', 'mlp') * 3 + ('mamba2', 'mlp')]
    fam_b = [('mamba2', 'mamba2', 'mamba2', 'mlp') * 2, ('mamba2', 'mamba2', 'deltanet', 'mlp') * 2]
    ranked = [fam_a[0], fam_b[0], fam_a[1], fam_b[1]]
    groups = agg.cluster(ranked, 2)
    assert groups == [[0, 2], [1, 3]]
    voted = agg.cluster_vote(ranked, 2, SPACE)
    assert voted[0][0] == fam_a[0] and voted[1][1] == [1, 3]


# ------------------------------------------------------------------------------------------------ extrapolation
def test_stack_and_stretch():
    proxy = ('mamba2', 'mamba2', 'mlp', 'attention', 'mlp', 'mlp')
    assert stack(proxy, 12) == proxy * 2
    st = stretch(proxy, 12)
    assert st == ('mamba2',) * 4 + ('mlp',) * 2 + ('attention',) * 2 + ('mlp',) * 4
    odd = stretch(proxy, 9)   # runs 2,1,1,2 * 1.5 = 3,1.5,1.5,3 -> total exactly 9, order kept
    assert len(odd) == 9 and [p for p, _ in runs(odd)] == [p for p, _ in runs(proxy)]
    with pytest.raises(ValueError, match='multiple'):
        stack(proxy, 8)
    with pytest.raises(ValueError, match='strategy'):
        extrapolate(proxy, 12, 'zoom')


# ------------------------------------------------------------------------------------------------ proposers
def _history(layers_losses):
    return [Evaluated(f'c{i}', tuple(layers), loss, 'trained' if loss is not None else 'failed', '', 'draft')
            for i, (layers, loss) in enumerate(layers_losses)]


def test_evolutionary_composer_starts_from_references_then_evolves():
    comp = EvolutionaryComposer(SPACE, EvolutionConfig(seed=3, init_random=4))
    first = comp.propose([], 4)
    assert [c.operator for c in first][:2] == ['reference', 'reference']
    assert len({c.layers for c in first}) == 4 and all(SPACE.problems(c.layers) == [] for c in first)
    assert comp.propose([], 4) == first  # deterministic
    hist = _history([(c.layers, 2.0 + i * 0.1) for i, c in enumerate(first)])
    nxt = comp.propose(hist, 6, draw=1)
    assert len(nxt) == 6
    seen = {h.layers for h in hist}
    assert all(c.layers not in seen for c in nxt) and len({c.layers for c in nxt}) == 6
    assert {c.operator for c in nxt} <= {'crossover', *ops.MUTATIONS}
    assert all(c.parents and set(c.parents) <= {h.name for h in hist} for c in nxt)


class _Script:
    """An offline-backend handler that replies from a list, recording each request's text."""

    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def __call__(self, request):
        self.prompts.append('\n'.join(m.content for m in request.messages if isinstance(m.content, str)))
        return self.replies.pop(0)


def _client(**handlers):
    return LLMClient({'backend': 'offline', 'max_reasks': 2}, offline_handlers=handlers)


def test_llm_composer_validates_and_reasks():
    good = ['attention', 'mlp'] * 4
    script = _Script([
        {'compositions': [{'layers': ['attention', 'mlp'], 'motivation': 'too short to be valid here'}]},
        {'compositions': [{'layers': good, 'motivation': 'a Transformer to anchor the search'}]},
    ])
    composer = LLMComposer(_client(composer=script), SPACE)
    cands = composer.propose([], 2)
    assert [c.layers for c in cands] == [tuple(good)] and cands[0].operator == 'draft'
    assert 'Operator: draft' in script.prompts[0]
    assert '2 sublayers; the search depth is 8' in script.prompts[1]   # the re-ask names the problem


def test_llm_composer_debugs_failures_then_improves_with_analysis():
    failed = ('attention',) * 7 + ('mlp',)
    hist = _history([(('attention', 'mlp') * 4, 2.0), (('mamba2', 'mlp') * 4, 1.9), (failed, None)])
    hist[2] = Evaluated('c2', failed, None, 'failed', 'oom: out of memory', 'draft')
    fix = ['mamba2', 'mlp', 'attention', 'mlp', 'mamba2', 'mlp', 'swa', 'mlp']
    composer_script = _Script([
        {'compositions': [{'layers': fix, 'motivation': 'fewer attention layers to fit in memory'}]},
        {'compositions': [{'layers': ['gated_deltanet', 'mlp'] * 4, 'motivation': 'gated delta rule everywhere'}]},
    ])
    analyst = _Script([{'analysis': 'Mamba2 hybrids lead (c1, 1.9) over the Transformer (c0, 2.0).',
                        'promising': ['more SSM'], 'avoid': ['all-attention stacks']}])
    composer = LLMComposer(_client(composer=composer_script, compose_analyst=analyst), SPACE)
    cands = composer.propose(hist, 1)
    assert cands[0].operator == 'debug' and cands[0].parents == ('c2',)
    assert 'oom: out of memory' in composer_script.prompts[0]
    assert 'Mamba2 hybrids lead' in composer.analyze(hist)
    cands = composer.propose(hist, 1)
    assert cands[0].operator == 'improve' and 'Avoid: all-attention stacks' in composer_script.prompts[1]


# ------------------------------------------------------------------------------------------------ the search
def micro_config(num_patterns=3):
    """A compose config that trains for seconds: 4 sublayers, d_model 32, T 32, 8 steps."""
    from configs import compose_tiny
    cfg = compose_tiny.get_config()
    cfg.compose.update({'proxy_sublayers': 4, 'target_sublayers': 8, 'num_patterns': num_patterns,
                        'batch_size': 3, 'init_random': 2, 'top_k': 3, 'n_clusters': 2, 'max_seconds': 0.0,
                        'workers': 2, 'primitives': ('attention', 'mlp', 'mamba2', 'deltanet')})
    t = cfg.engineer.train
    t.model.d_model, t.model.num_heads = 32, 2
    t.train.seq_len, t.train.global_batch, t.train.max_steps, t.train.warmup_steps = 32, 4, 8, 2
    t.train.eval_batches, t.data.val_docs = 1, 8
    del cfg['ladder']
    return cfg


def test_search_records_everything_and_resumes(tmp_path):
    from aira_jax.discovery.compose.search import ComposeSearch
    events = []
    search = ComposeSearch(micro_config(), str(tmp_path), on_event=events.append)
    try:
        rep = search.run()
        hist = search.history('search')
        assert len(hist) == 3 and all(h.status == 'trained' and h.ok for h in hist)
        assert hist[0].operator == 'reference'
        n_exp = len(search.store.experiments())
        agg_names = [a.get('name') for a in rep.aggregates if a.get('name')]
        assert all(search.store.get_design(n).meta['compose']['stage'] == 'aggregate' for n in agg_names)
        assert rep.extrapolated and {e['strategy'] for e in rep.extrapolated} == {'stack', 'stretch'}
        ext = search.store.get_design(rep.extrapolated[0]['name'])
        assert len(from_pattern(ext.source)) == 8 and ext.parent == rep.extrapolated[0]['from']
        assert rep.baseline.startswith('base-') and from_pattern(search.store.get_design(rep.baseline).source) == \
            ('attention', 'mlp') * 4
    finally:
        search.close()
    report = json.loads((tmp_path / 'compose.json').read_text())
    assert len(report['search']) >= 3 and (tmp_path / 'compose.md').read_text().startswith('# Compose search')
    # A rerun trains nothing new: every stage finds its work recorded.
    again = ComposeSearch(micro_config(), str(tmp_path), on_event=events.append)
    try:
        again.run()
        assert len(again.store.experiments()) == n_exp
    finally:
        again.close()


@pytest.mark.parametrize('name', ['compose_tiny', 'compose_proxy'])
def test_compose_configs_validate(name):
    import importlib.util
    import pathlib
    from aira_jax.train.validate import validate_config
    path = pathlib.Path(__file__).resolve().parents[1] / 'configs' / f'{name}.py'
    spec = importlib.util.spec_from_file_location(f'cfg_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config()
    s = compose_settings(cfg.compose)
    space = s.space()
    assert all(not space.problems(c) for c, _ in ops.reference_compositions(space))
    validate_config(cfg.engineer.train)
    from aira_jax.discovery.ladder import ladder_settings_from_config
    assert not ladder_settings_from_config(cfg).stack_compositions
    assert [r['name'] for r in cfg.ladder.rungs] and s.target_sublayers % s.proxy_sublayers == 0


def test_store_design_programs_become_primitives(tmp_path):
    from flax import nnx
    from aira_jax.discovery.compose.search import ComposeSearch
    from aira_jax.discovery.records import Design
    from aira_jax.discovery.store import ExperimentStore
    from aira_jax.models import build_model
    from aira_jax.models.loader import baseline_source
    other = ExperimentStore(str(tmp_path / 'discovery.sqlite'))
    _, exp = other.propose(Design(name='dn-found', kind='program', source=baseline_source('deltanet')))
    other.transition(exp.id, 'checked')
    other.add_design(Design(name='a-hybrid', kind='composition', source='attention,mlp'))
    other.propose(Design(name='dn-leaky', kind='program', source=baseline_source('deltanet') + '\n# leaky\n'))
    other.close()
    cfg = micro_config()
    cfg.compose.design_store = str(tmp_path / 'discovery.sqlite')
    cfg.compose.store_designs = ('dn-found',)
    search = ComposeSearch(cfg, str(tmp_path / 'run'))
    try:
        assert 'design:dn-found' in search.space.primitives
        model_cfg = search.engineer.train.model.to_dict()
        assert model_cfg['programs']['dn-found'].startswith(baseline_source('deltanet')[:40])
        model_cfg.update(vocab_size=64, pattern='design:dn-found,mlp')
        assert nnx.eval_shape(lambda: build_model(model_cfg, rngs=nnx.Rngs(0))) is not None
        assert search.space.code('design:dn-found') == 'P0'
    finally:
        search.close()
    cfg.compose.store_designs = ('a-hybrid',)
    with pytest.raises(ComposeConfigError, match='not a program'):
        ComposeSearch(cfg, str(tmp_path / 'run2'))
    cfg.compose.store_designs = ('dn-leaky',)
    with pytest.raises(ComposeConfigError, match='never passed the gates'):
        ComposeSearch(cfg, str(tmp_path / 'run3'))


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    import pathlib
    from aira_jax import compose as cli
    configs = pathlib.Path(__file__).resolve().parents[1] / 'configs'
    base = ['aira-compose', f'--workdir={tmp_path}']
    assert cli.main(base + [f'--config={configs / "discover_tiny.py"}']) == 2
    assert 'no `compose` section' in capsys.readouterr().err
    assert cli.main(base + [f'--config={configs / "compose_tiny.py"}', '--config.compose.nope=1']) == 2
    assert 'nope' in capsys.readouterr().err
    assert cli.main(['aira-compose', f'--config={configs / "compose_tiny.py"}']) == 2
    assert '--workdir is required' in capsys.readouterr().err


def test_sigterm_abandons_the_training_and_still_writes_the_report(tmp_path):
    """What a job scheduler (or the GPU suite's `timeout`) does at the end of a budget: SIGTERM. The training
    under way is abandoned and released, and compose.md still reports the run, marked as stopped."""
    import pathlib
    import signal
    import subprocess
    import sys
    import time
    root = pathlib.Path(__file__).resolve().parents[1]
    t = '--config.engineer.train.'
    args = [sys.executable, '-m', 'aira_jax.compose', f'--config={root / "configs" / "compose_tiny.py"}',
            f'--workdir={tmp_path}', '--config.compose.proxy_sublayers=4', '--config.compose.target_sublayers=8',
            '--config.compose.num_patterns=2', '--config.compose.batch_size=1', '--config.compose.workers=1',
            '--config.compose.run_ladder=False', f'{t}model.d_model=32', f'{t}model.num_heads=2',
            f'{t}train.seq_len=32', f'{t}train.global_batch=4', f'{t}train.max_steps=100000',
            f'{t}train.max_seconds=120']  # trains until stopped
    proc = subprocess.Popen(args, cwd=root, env={**os.environ, 'PYTHONPATH': str(root), 'JAX_PLATFORMS': 'cpu'},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list((tmp_path / 'engineer').glob('exp-*')):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        time.sleep(2.0)  # the training child is running
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert 'abandoning the training step' in out
    md = (tmp_path / 'compose.md').read_text()
    assert md.startswith('# Compose search') and 'Stopped: interrupted.' in md
    assert json.loads((tmp_path / 'compose.json').read_text())['stopped'] == 'interrupted'
    from aira_jax.discovery.store import ExperimentStore
    store = ExperimentStore(str(tmp_path / 'store.sqlite'))
    try:
        exps = store.experiments()
        assert len(exps) == 1 and exps[0].status in ('checked', 'training') and exps[0].claimed_by is None
    finally:
        store.close()


def test_a_search_that_trains_nothing_fails_and_says_why(tmp_path):
    """Every composition failing (here: the corpus is missing) is a failed run (exit 1) that names the first
    failure, not a quiet success; the report is still written."""
    import pathlib
    import subprocess
    import sys
    root = pathlib.Path(__file__).resolve().parents[1]
    t = '--config.engineer.train.'
    args = [sys.executable, '-m', 'aira_jax.compose', f'--config={root / "configs" / "compose_tiny.py"}',
            f'--workdir={tmp_path}', '--config.compose.proxy_sublayers=4', '--config.compose.target_sublayers=8',
            '--config.compose.num_patterns=2', '--config.compose.batch_size=2', '--config.compose.workers=1',
            '--config.compose.run_ladder=False', '--config.compose.aggregate=False', f'{t}data.source=openstax',
            f'{t}data.openstax_path={tmp_path / "missing.jsonl.xz"}']
    out = subprocess.run(args, cwd=root, env={**os.environ, 'PYTHONPATH': str(root), 'JAX_PLATFORMS': 'cpu'},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert 'no composition trained' in out.stderr and 'OpenStax corpus not found' in out.stderr
    assert '0 compositions trained' in out.stdout and (tmp_path / 'compose.md').exists()
