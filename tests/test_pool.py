"""Candidate pool: top-k membership, cold start, batched updates, seeded selection and each policy."""
import collections

import pytest

from aira_jax.discovery import (CandidatePool, Design, Experiment, ExperimentStore, FitnessConfig, JudgeScore,
                                PoolConfig, PoolError, QuadrantPolicy, Result, SelectionPolicy, UCTPolicy,
                                register_policy)
from aira_jax.discovery.pool import visible_count

LOSS_ONLY = FitnessConfig(terms=("loss",))
BASE_LOSS = 3.0


def make_history(losses, *, seed_runs=(3.0, 3.05, 2.95), evals=None, parents=None):
    """Seed 'seed' with several runs, then one proposal per loss ('p0', 'p1', ...) in arrival order."""
    designs = {"seed": Design(name="seed", kind="program", source="seed src")}
    history, eid = [], 0
    for loss in seed_runs:
        eid += 1
        history.append((Experiment(design="seed", id=eid, status="trained"), Result(val_loss=loss)))
    for i, loss in enumerate(losses):
        name = f"p{i}"
        designs[name] = Design(name=name, kind="program", source=f"src {i}",
                               parent=(parents or {}).get(name, "seed"))
        for _ in range((evals or {}).get(name, 1)):
            eid += 1
            history.append((Experiment(design=name, id=eid, status="trained"), Result(val_loss=loss)))
    return history, designs


def build(losses, cfg, *, judges=None, children=None, fitness_cfg=LOSS_ONLY, policy=None, **kw):
    history, designs = make_history(losses, **kw)
    return CandidatePool.from_history(history, designs, judges or {}, children or {}, cfg, fitness_cfg,
                                      policy=policy)


# Distinct losses in (2.73, 3.27): no leakage, strictly ranked; p0 is worst, the last one best.
LOSSES = [3.27 - 0.0075 * i for i in range(70)]
WARM = PoolConfig(cold_start=0, update_every=1)


def test_top_k_membership_and_ranking():
    pool = build(LOSSES, WARM)
    assert len(pool) == 50
    fitness = [c.fitness for c in pool.members]
    assert fitness == sorted(fitness, reverse=True) and [c.rank for c in pool.members] == list(range(1, 51))
    assert pool.names[:3] == ["p69", "p68", "p67"]
    assert "p0" not in pool.names  # the worst fall out of the top 50
    assert pool.baseline.loss_mean == pytest.approx(BASE_LOSS)


def test_asi_arch_selection_ranges_and_determinism():
    pool = build(LOSSES, WARM)
    again = build(LOSSES, WARM)
    sels = [pool.select() for _ in range(40)]
    assert [(s.parent.name, [r.name for r in s.references]) for s in sels] == \
           [(s.parent.name, [r.name for r in s.references]) for s in (again.select(i) for i in range(40))]
    top10, lower = set(pool.names[:10]), set(pool.names[10:50])
    for s in sels:
        assert s.parent.name in top10 and s.policy == "asi_arch"
        refs = [r.name for r in s.references]
        assert len(refs) == 4 and len(set(refs)) == 4 and set(refs) <= lower
    assert len({s.parent.name for s in sels}) > 3  # parents vary across draws
    other = build(LOSSES, PoolConfig(cold_start=0, update_every=1, seed=1))
    assert [other.select(i).parent.name for i in range(40)] != [s.parent.name for s in sels]


def test_references_fall_back_when_pool_is_small():
    pool = build(LOSSES[:6], WARM)  # seed + 6 proposals: no ranks beyond the parent range
    s = pool.select(0)
    refs = [r.name for r in s.references]
    assert len(refs) == 4 and s.parent.name not in refs and set(refs) <= set(pool.names)


def test_cold_start_keeps_the_seed_only():
    cfg = PoolConfig(cold_start=5, update_every=3)
    early = build(LOSSES[:4], cfg)
    assert early.names == ["seed"] and early.in_cold_start and early.next_update_at == 5
    s = early.select(0)
    assert s.parent.name == "seed" and s.references == ()
    at = build(LOSSES[:5], cfg)
    assert not at.in_cold_start and set(at.names) == {"seed", "p0", "p1", "p2", "p3", "p4"}


def test_batched_updates():
    cfg = PoolConfig(cold_start=5, update_every=3)
    assert [visible_count(n, cfg) for n in range(12)] == [0, 0, 0, 0, 0, 5, 5, 5, 8, 8, 8, 11]
    p7 = build(LOSSES[:7], cfg)
    assert "p5" not in p7.names and "p6" not in p7.names and p7.next_update_at == 8
    p8 = build(LOSSES[:8], cfg)
    assert {"p5", "p6", "p7"} <= set(p8.names) and p8.num_visible == 8
    # Pool content is a function of the results so far, not of when it was built.
    assert build(LOSSES[:8], cfg).names == p8.names


def test_leakage_and_broken_candidates():
    losses = [3.0, 2.5, float("nan"), 2.9]  # p1 leaks (17% below), p2 diverged
    pool = build(losses, WARM)
    # Both are discarded: a leak is implausible, a diverged run has no loss to rank by.
    assert "p1" not in pool.names and "p2" not in pool.names
    assert pool.names[0] == "p3"


def test_judge_scores_and_aggregated_runs_count():
    history, designs = make_history([2.9, 2.9], evals={"p1": 3})
    exp_of = {e.design: e.id for e, _ in history}
    judges = {exp_of["p0"]: [JudgeScore({"x": 2})], exp_of["p1"]: [JudgeScore({"x": 9})]}
    pool = CandidatePool.from_history(history, designs, judges, {}, WARM, FitnessConfig(terms=("loss", "judge")))
    by = {c.name: c for c in pool.members}
    assert by["p1"].fitness > by["p0"].fitness
    assert by["p1"].metrics.num_evals == 3 and len(by["p1"].experiment_ids) == 3
    assert by["seed"].report.missing == ("judge",)


def test_uct_prefers_rarely_expanded_designs():
    losses = [2.9, 2.9, 2.9]  # equal fitness: visits decide
    children = {"seed": 10, "p0": 5, "p1": 0, "p2": 3}
    pool = build(losses, WARM, children=children, policy=UCTPolicy(c=1.0))
    assert pool.select(0).parent.name == "p1" and pool.select(1).parent.name == "p1"
    assert pool.select(0).policy == "uct"
    greedy = build([2.95, 2.8, 2.9], WARM, children={"p1": 100}, policy=UCTPolicy(c=0.0))
    assert greedy.select(0).parent.name == "p1"  # no exploration bonus: best fitness wins
    by_name = build(losses, PoolConfig(cold_start=0, update_every=1, policy="uct", policy_kwargs={"c": 1.0}),
                    children=children)
    assert by_name.select(0).parent.name == "p1"


def test_quadrant_policy_samples_across_quadrants():
    # Ranked: p9 p8 p7 p6 seed(=p5, earlier) p5 p4 .. p0; the better 6 are 'good'. Confident: 3 runs (seed too).
    losses = [3.1 - 0.02 * i for i in range(10)]
    evals = {"p9": 3, "p8": 3, "p1": 3, "p0": 3}
    policy = QuadrantPolicy()
    pool = build(losses, WARM, evals=evals, policy=policy)
    quads = policy.quadrants(pool.members)
    assert sorted(c.name for q in quads.values() for c in q) == sorted(pool.names)  # a partition
    assert {c.name for c in quads["good_confident"]} == {"p9", "p8", "seed"}
    assert {c.name for c in quads["good_unconfident"]} == {"p7", "p6", "p5"}
    assert {c.name for c in quads["poor_confident"]} == {"p1", "p0"}
    assert {c.name for c in quads["poor_unconfident"]} == {"p4", "p3", "p2"}
    counts = collections.Counter()
    name_to_quad = {c.name: q for q, cs in quads.items() for c in cs}
    for i in range(400):
        s = pool.select(i)
        counts[name_to_quad[s.parent.name]] += 1
        ref_quads = [name_to_quad[r.name] for r in s.references]
        assert len(set(ref_quads)) >= 3 and s.parent.name not in [r.name for r in s.references]
    assert set(counts) == set(QuadrantPolicy.QUADRANTS)
    assert counts["good_confident"] > counts["poor_confident"]  # weights 0.4 vs 0.1
    only = build(losses, WARM, evals=evals, policy=QuadrantPolicy(weights=(1, 0, 0, 0)))
    assert {only.select(i).parent.name for i in range(30)} == {"p9", "p8", "seed"}
    with pytest.raises(ValueError):
        QuadrantPolicy(weights=(1, 1, 1))


def test_custom_policy_and_errors():
    class Worst(SelectionPolicy):
        name = "worst"

        def select_parent(self, ranked, rng, cfg):
            return ranked[-1]

    register_policy("worst", Worst)
    pool = build(LOSSES[:5], PoolConfig(cold_start=0, update_every=1, policy="worst"))
    assert pool.select(0).parent.name == pool.names[-1]
    with pytest.raises(ValueError, match="unknown selection policy"):
        build(LOSSES[:5], PoolConfig(cold_start=0, update_every=1, policy="nope"))
    with pytest.raises(PoolError, match="parent_top"):
        PoolConfig(size=5, parent_top=10)
    with pytest.raises(PoolError, match="no results"):
        CandidatePool.from_history([], {}, {}, {}, PoolConfig(baseline="seed"))
    history, designs = make_history([2.9])
    designs["seed2"] = Design(name="seed2", kind="program", source="s2")
    history.append((Experiment(design="seed2", id=99), Result(val_loss=3.0)))
    with pytest.raises(PoolError, match="set PoolConfig.baseline"):
        CandidatePool.from_history(history, designs, {}, {}, WARM, LOSS_ONLY)
    empty = CandidatePool([], cfg=WARM, baseline=None, num_proposals=0, num_visible=0)
    with pytest.raises(PoolError, match="empty"):
        empty.select()


def test_pool_derived_from_store(tmp_path):
    store = ExperimentStore(tmp_path / "s.sqlite")

    def run(design, loss):
        exp = store.add_experiment(design)
        store.transition(exp.id, "checked")
        store.transition(exp.id, "training")
        store.add_result(exp.id, Result(val_loss=loss))
        return exp

    store.add_design(Design(name="seed", kind="program", source="seed"))
    for loss in (3.0, 3.05, 2.95):
        run("seed", loss)
    for i in range(8):
        store.add_design(Design(name=f"p{i}", kind="program", source=f"s{i}", parent="seed" if i < 4 else "p0"))
        run(f"p{i}", 3.0 - 0.02 * i)
    store.add_experiment("p7", scale="340M")  # other rungs of the ladder do not count
    cfg = PoolConfig(cold_start=4, update_every=3)
    pool = CandidatePool.from_store(store, cfg, LOSS_ONLY)
    history, designs = make_history([3.0 - 0.02 * i for i in range(8)],
                                    parents={f"p{i}": "p0" for i in range(4, 8)})
    ref = CandidatePool.from_history(history, designs, {}, {"seed": 4, "p0": 4}, cfg, LOSS_ONLY)
    assert pool.names == ref.names and pool.num_visible == 7
    assert {c.name: c.children for c in pool.members}["p0"] == 4
    assert [pool.select(i).parent.name for i in range(10)] == [ref.select(i).parent.name for i in range(10)]
    store.close()
