"""Discovery core: typed records, the experiment store, fitness and the candidate pool.

Kept free of JAX imports so that store-only processes (dashboards, queue tools) start fast.
"""
from aira_jax.discovery.fitness import Baseline, FitnessConfig, FitnessReport, Metrics, compute_fitness
from aira_jax.discovery.pool import Candidate, CandidatePool, PoolConfig, PoolError, Selection
from aira_jax.discovery.queue import ClaimHeldError, ClaimLostError
from aira_jax.discovery.records import (Analysis, Claim, CognitionEntry, CognitionRetrieval, Design, DesignKind,
                                        Experiment, IllegalTransitionError, JudgeScore, KernelVerdict, RecordError,
                                        Result,
                                        Status, StatusEvent, check_transition, program_hash)
from aira_jax.discovery.selection import (ASIArchPolicy, QuadrantPolicy, SelectionPolicy, UCTPolicy, make_policy,
                                          register_policy)
from aira_jax.discovery.store import (DuplicateNameError, ExperimentStore, NotFoundError, StoreError,
                                      TRAIN_QUEUE)

__all__ = [
    "ASIArchPolicy", "Analysis", "Baseline", "Candidate", "CandidatePool", "Claim", "ClaimHeldError",
    "ClaimLostError", "CognitionEntry", "CognitionRetrieval", "Design", "DesignKind", "DuplicateNameError",
    "Experiment", "ExperimentStore", "FitnessConfig", "FitnessReport", "IllegalTransitionError", "JudgeScore",
    "KernelVerdict", "Metrics", "NotFoundError", "PoolConfig", "PoolError", "QuadrantPolicy", "RecordError", "Result",
    "Selection", "SelectionPolicy", "Status", "StatusEvent", "StoreError", "TRAIN_QUEUE", "UCTPolicy",
    "check_transition", "compute_fitness", "make_policy", "program_hash", "register_policy",
]
