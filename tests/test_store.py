"""Records and the experiment store: round-trips, transitions, names, lineage, and claims across processes."""
import math
import multiprocessing
import os
import signal
import time

import pytest
import sqlalchemy as sa

from aira_jax.discovery import (Analysis, ClaimHeldError, ClaimLostError, CognitionEntry, CognitionRetrieval,
                                Design, DuplicateNameError, ExperimentStore, IllegalTransitionError, JudgeScore,
                                KernelVerdict, NotFoundError, RecordError, Result, Status, StoreError, check_transition,
                                program_hash)

SRC = "class Mixer(nnx.Module):\n    pass\n"


class FakeClock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def program(name, parent=None, refs=(), src=SRC, **kw):
    return Design(name=name, kind="program", source=src, parent=parent, references=refs, **kw)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """Every store test runs on a SQLite file, and on PostgreSQL when AIRA_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url):
    s = ExperimentStore(store_url)
    yield s
    s.close()


def to_trained(store, exp_id, result=None):
    store.transition(exp_id, "checked")
    store.transition(exp_id, "training")
    return store.add_result(exp_id, result or Result(val_loss=3.0))


# ------------------------------------------------------------------------------------------------- records
def test_records_round_trip(store):
    seed = store.add_design(program("deltanet", motivation="seed", summary="the delta rule"))
    d, exp = store.propose(
        program("gdn-1", parent="deltanet", refs=["deltanet"], motivation="gate it", meta={"agent": "r1"}),
        scale="explore", config={"lr": 3e-4, "steps": [1, 2]}, priority=3)
    assert store.get_design("gdn-1").to_json() == d.to_json()
    assert store.get_design("deltanet") == seed
    assert store.get_experiment(exp.id) == exp
    assert exp.status == Status.PROPOSED and exp.config == {"lr": 3e-4, "steps": [1, 2]} and exp.priority == 3

    comp = store.add_design(Design(name="hybrid", kind="composition", source="mamba2,mlp,attention,mlp"))
    assert store.get_design("hybrid").kind.value == "composition" and comp.id is not None

    result = Result(loss_curve=[(0, 5.5), (100, 4.25), (200, math.nan)], val_loss=3.5, bpb=1.1,
                    benchmark_scores={"piqa": 0.6, "arc_e": math.nan}, num_params=20_000_000, tokens=10**9,
                    throughput=1.5e5, wall_time_s=3600.0, seeds=[0, 1], val_loss_per_seed=[3.4, 3.6],
                    meta={"steps": 200})
    stored = to_trained(store, exp.id, result)
    back = store.result(exp.id)
    assert back.to_json() == stored.to_json()  # to_json: NaN != NaN defeats ==
    assert math.isnan(back.loss_curve[2][1]) and math.isnan(back.benchmark_scores["arc_e"])
    assert back.seeds == (0, 1) and back.experiment_id == exp.id and back.num_params == 20_000_000

    j = store.add_judge_score(exp.id, JudgeScore({"novelty": 8, "soundness": 5}, {"novelty": 1, "soundness": 3},
                                                 rationale="ok", judge="m"))
    assert j.total == pytest.approx((8 + 15) / 4)
    assert store.judge_scores(exp.id) == [j]
    cog = store.add_cognition(exp.id, CognitionRetrieval(
        entries=[CognitionEntry("paper-7", "gating helps", 0.9), {"entry_id": "p-2", "text": "x"}], query="gate"))
    assert store.cognition(exp.id) == [cog] and cog.entries[1].entry_id == "p-2"
    a = store.add_analysis(exp.id, Analysis("better than parent", compared_with=["deltanet"]))
    assert store.analyses(exp.id) == [a]
    assert store.get_experiment(exp.id).status == Status.ANALYSED  # add_analysis moves trained -> analysed
    assert [e.to_status for e in store.status_history(exp.id)] == [
        Status.PROPOSED, Status.CHECKED, Status.TRAINING, Status.TRAINED, Status.ANALYSED]


@pytest.mark.parametrize("make", [
    lambda: Design(name="bad name", kind="program", source=SRC),
    lambda: Design(name="x", kind="mixer", source=SRC),
    lambda: Design(name="x", kind="program", source="  "),
    lambda: Design(name="x", kind="program", source=SRC, parent="x"),
    lambda: Design(name="x", kind="program", source=SRC, references=["a", "a"]),
    lambda: Result(val_loss=-1.0),
    lambda: Result(val_loss="low"),
    lambda: Result(seeds=[0, 1], val_loss_per_seed=[3.0]),
    lambda: Result(loss_curve=[(0, 1.0, 2.0)]),
    lambda: JudgeScore({"a": 11}),
    lambda: JudgeScore({"a": math.nan}),
    lambda: JudgeScore({"a": 5}, weights={"b": 1}),
    lambda: JudgeScore({}),
    lambda: Analysis(""),
    lambda: KernelVerdict(op="delta_rule", scope="cpu (jax 0.11.2)", verdict="guilty"),
    lambda: KernelVerdict(op="delta rule", scope="cpu (jax 0.11.2)", verdict="fault"),
    lambda: KernelVerdict(op="delta_rule", scope=" ", verdict="cleared"),
])
def test_bad_records_raise_clear_errors(make):
    with pytest.raises(RecordError):
        make()


def test_records_accept_numpy_scalars():
    np = pytest.importorskip("numpy")
    r = Result(val_loss=np.float32(2.5), benchmark_scores={"piqa": np.float32(0.5)}, seeds=[np.int64(3)],
               num_params=np.int64(7))
    assert Result.from_json(r.to_json()) == r and type(r.seeds[0]) is int and type(r.val_loss) is float
    j = JudgeScore({"a": np.float64(7.0)}, weights={"a": np.float32(2.0)})
    assert JudgeScore.from_json(j.to_json()).total == 7.0


def test_transitions_legal_and_illegal(store):
    _, exp = store.propose(program("a"))
    with pytest.raises(IllegalTransitionError, match="'proposed' -> 'trained'"):
        store.transition(exp.id, "trained")
    with pytest.raises(IllegalTransitionError, match="reason"):
        store.transition(exp.id, "rejected")  # rejection needs a reason
    assert store.get_experiment(exp.id).status == Status.PROPOSED  # refused moves change nothing
    store.transition(exp.id, "rejected", reason="not causal")
    e = store.get_experiment(exp.id)
    assert e.status == Status.REJECTED and e.reason == "not causal"
    for target in Status:
        with pytest.raises(IllegalTransitionError):
            store.transition(exp.id, target, reason="retry")  # terminal: no way out
    with pytest.raises(RecordError, match="unknown target status"):
        check_transition("proposed", "done")
    check_transition("training", "failed", "OOM")
    with pytest.raises(IllegalTransitionError):
        check_transition("training", "checked")


def test_programs_stored_once_by_hash(store):
    store.add_design(program("a"))
    store.add_design(program("b", parent="a"))
    store.add_design(program("c", src=SRC + "# changed\n"))
    assert store.num_programs() == 2
    assert store.program(program_hash(SRC)) == SRC
    with pytest.raises(NotFoundError):
        store.program("0" * 64)


def test_unique_names_and_suffix_helper(store):
    first = store.add_design(program("gated_x"))
    with pytest.raises(DuplicateNameError, match="unique_name"):
        store.add_design(program("gated_x", src="other"))
    assert store.get_design("gated_x") == first  # the original survives
    assert store.unique_name("gated_x") == "gated_x-2"
    store.add_design(program("gated_x-2"))
    assert store.unique_name("gated_x") == "gated_x-3"
    assert store.unique_name("gatedAx") == "gatedAx"  # '_' is not a LIKE wildcard here
    assert store.unique_name("fresh") == "fresh"


def test_bad_input_leaves_store_intact(store):
    d, exp = store.propose(program("a"))
    before = (store.designs(), store.experiments(), store.num_programs())
    with pytest.raises(NotFoundError, match="unknown parent/references"):
        store.propose(program("b", parent="ghost", src="new source"))
    with pytest.raises(NotFoundError):
        store.add_experiment("ghost")
    with pytest.raises(StoreError, match="status 'proposed'"):
        store.add_result(exp.id, Result(val_loss=1.0))
    with pytest.raises(RecordError, match="expected a Result"):
        store.add_result(exp.id, {"val_loss": 1.0})
    assert (store.designs(), store.experiments(), store.num_programs()) == before
    to_trained(store, exp.id)
    with pytest.raises(StoreError, match="already has a result"):
        store.add_result(exp.id, Result(val_loss=1.0))
    assert store.result(exp.id).val_loss == 3.0


def test_kernel_verdicts_round_trip_whoever_holds_the_experiment(store):
    """A kernel verdict is about a kernel on a device, not about the experiment's progress: it is written while
    another worker's claim holds the experiment, and read back whole, oldest first, by any worker."""
    store.propose(program("a"))
    store.transition(1, "checked")
    claim = store.claim("w0")
    fault = store.add_kernel_verdict(claim.experiment_id, KernelVerdict(
        op="delta_rule", scope="NVIDIA H200 (jax 0.11.2)", verdict="fault", reason="nan at step 3", worker="w0"))
    cleared = store.add_kernel_verdict(1, KernelVerdict(op="simple_gla", scope="cpu (jax 0.11.2)",
                                                        verdict="cleared"))
    assert store.kernel_verdicts() == [fault, cleared]
    assert fault.id < cleared.id and fault.experiment_id == 1 and fault.created_at is not None
    with pytest.raises(NotFoundError, match="no experiment with id 99"):
        store.add_kernel_verdict(99, KernelVerdict(op="delta_rule", scope="cpu", verdict="fault"))
    with pytest.raises(RecordError, match="expected a KernelVerdict"):
        store.add_kernel_verdict(1, {"op": "delta_rule"})
    assert store.kernel_verdicts() == [fault, cleared]


def test_lineage_queries(store):
    store.add_design(program("seed"))
    for name, parent in [("a", "seed"), ("b", "seed"), ("c", "seed"), ("a1", "a"), ("a1x", "a1")]:
        store.add_design(program(name, parent=parent))
    assert store.parent("a1").name == "a" and store.parent("seed") is None
    assert [d.name for d in store.children("seed")] == ["a", "b", "c"]
    assert [d.name for d in store.siblings("b")] == ["a", "c"]
    assert store.siblings("seed") == [] and store.children("c") == []
    assert [d.name for d in store.ancestors("a1x")] == ["a1", "a", "seed"]
    assert store.children_counts() == {"seed": 3, "a": 1, "a1": 1}
    with pytest.raises(NotFoundError):
        store.children("nobody")


def test_sqlite_store_uses_wal(tmp_path):
    store = ExperimentStore(tmp_path / "s.sqlite")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.close()


# ------------------------------------------------------------------------------------------------- claims
def test_claim_lease_heartbeat_and_takeover(store_url):
    clock = FakeClock()
    store = ExperimentStore(store_url, clock=clock)
    _, low = store.propose(program("low"))
    _, high = store.propose(program("high"), priority=5)
    for e in (low, high):
        store.transition(e.id, "checked")
    c1 = store.claim("w1", lease_s=10)
    assert c1.experiment_id == high.id and c1.attempt == 1  # priority first
    c2 = store.claim("w2", lease_s=10)
    assert c2.experiment_id == low.id
    assert store.claim("w3", lease_s=10) is None  # both live

    with pytest.raises(ClaimHeldError):
        store.transition(high.id, "training")  # a claim-less write to a held experiment
    store.transition(high.id, "training", claim=c1)
    clock.t += 8
    c1 = store.heartbeat(c1)  # renewed until t+18
    clock.t += 8
    assert store.claim("w3", lease_s=10, statuses=["training"]) is None  # heartbeat kept it
    clock.t += 11  # w1 died: its lease runs out
    c3 = store.claim("w3", lease_s=10, statuses=["training"])
    assert c3.experiment_id == high.id and c3.attempt == 2
    assert store.get_experiment(high.id).attempts == 2 and store.get_experiment(high.id).claimed_by == "w3"
    with pytest.raises(ClaimLostError, match="lost its claim"):
        store.heartbeat(c1)
    with pytest.raises(ClaimLostError):
        store.add_result(high.id, Result(val_loss=1.0), claim=c1)  # the stale worker cannot write
    assert store.release(c1) is False
    store.add_result(high.id, Result(val_loss=2.0), claim=c3)
    assert store.result(high.id).val_loss == 2.0

    assert store.release(c2) is True
    c4 = store.claim("w4", max_attempts=1)
    assert c4 is None  # low already had one attempt
    c4 = store.claim("w4", max_attempts=2)
    assert c4.experiment_id == low.id and c4.attempt == 2
    store.transition(low.id, "failed", reason="boom", claim=c4)
    assert store.get_experiment(low.id).claimed_by is None  # terminal states free the claim
    store.close()


def test_claim_argument_errors(store):
    with pytest.raises(ValueError, match="worker"):
        store.claim("")
    with pytest.raises(ValueError, match="lease_s"):
        store.claim("w", lease_s=0)
    with pytest.raises(ValueError):
        store.claim("w", statuses=["nonsense"])


# Workers below run in separate (spawned) processes: module-level so they pickle by reference.
def _drain_worker(url, worker, barrier, out):
    store = ExperimentStore(url)
    barrier.wait(timeout=60)
    done = []
    while (c := store.claim(worker, lease_s=60)) is not None:
        store.transition(c.experiment_id, "training", claim=c)
        time.sleep(0.01)  # some work, so the two workers interleave
        store.add_result(c.experiment_id, Result(val_loss=3.0, meta={"worker": worker}), claim=c)
        store.release(c)
        done.append(c.experiment_id)
    out.put((worker, done))


def _die_holding_claim(url, lease_s, out):
    store = ExperimentStore(url)
    c = store.claim("doomed", lease_s=lease_s)
    store.transition(c.experiment_id, "training", claim=c)
    out.put((c.experiment_id, c.lease_expires_at))
    out.close()
    out.join_thread()  # flush the queue's feeder thread, or SIGKILL would swallow the message
    os.kill(os.getpid(), signal.SIGKILL)


def _rescue_worker(url, out):
    store = ExperimentStore(url)
    deadline = time.time() + 60
    while time.time() < deadline:
        c = store.claim("rescuer", lease_s=60)
        if c is not None:
            store.add_result(c.experiment_id, Result(val_loss=2.5), claim=c)
            out.put((c.experiment_id, c.attempt, time.time()))
            return
        time.sleep(0.05)
    out.put(None)


def _queue_checked(url, n):
    store = ExperimentStore(url)
    ids = []
    for i in range(n):
        _, e = store.propose(program(f"d{i}"))
        ids.append(store.transition(e.id, "checked").id)
    return store, ids


def test_two_processes_share_the_queue(store_url):
    store, ids = _queue_checked(store_url, 40)
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_drain_worker, args=(store_url, f"w{i}", barrier, out)) for i in range(2)]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    done = got["w0"] + got["w1"]
    assert sorted(done) == ids  # every experiment once: none duplicated, none lost
    assert got["w0"] and got["w1"]  # both workers really took part
    for e in store.experiments():
        assert e.status == Status.TRAINED and e.attempts == 1 and e.claimed_by is None
        assert store.result(e.id).meta["worker"] == ("w0" if e.id in got["w0"] else "w1")
    store.close()


def test_dead_worker_claim_is_reclaimed_after_lease(store_url):
    store, (exp_id,) = _queue_checked(store_url, 1)
    lease_s = 3.0
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    doomed = ctx.Process(target=_die_holding_claim, args=(store_url, lease_s, out))
    doomed.start()
    claimed_id, expires = out.get(timeout=60)
    doomed.join(timeout=30)
    assert claimed_id == exp_id and doomed.exitcode == -signal.SIGKILL
    if time.time() < expires - 0.5:  # still inside the dead worker's lease: nobody may take it
        assert store.claim("early") is None
    rescuer = ctx.Process(target=_rescue_worker, args=(store_url, out))
    rescuer.start()
    rescued = out.get(timeout=90)
    rescuer.join(timeout=30)
    assert rescued is not None, "the rescuer never got the dead worker's experiment"
    rid, attempt, at = rescued
    assert rid == exp_id and attempt == 2 and at >= expires
    e = store.get_experiment(exp_id)
    assert e.status == Status.TRAINED and e.attempts == 2 and store.result(exp_id).val_loss == 2.5
    assert [ev.worker for ev in store.status_history(exp_id)][-2:] == ["doomed", "rescuer"]
    store.close()


def test_postgres_url_is_normalised_without_server():
    from aira_jax.discovery import db
    assert db.normalise_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(db.StoreConfigError, match="unsupported store backend"):
        db.normalise_url("mysql://u@h/db")
    with pytest.raises(db.StoreConfigError, match="does not exist"):
        db.normalise_url("/nonexistent-dir-xyz/store.sqlite")
    # The PostgreSQL claim must skip rows other claimers hold instead of waiting on them.
    from aira_jax.discovery import schema
    q = sa.select(schema.experiments.c.id).with_for_update(skip_locked=True)
    from sqlalchemy.dialects import postgresql
    assert "FOR UPDATE SKIP LOCKED" in str(q.compile(dialect=postgresql.dialect()))
