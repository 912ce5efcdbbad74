"""The study on its storage, Optuna only: storage URLs, records (every user attr), sampler and
pruner, queue and retries, the stored config, results (budget, best trial, Pareto front).
"""

from __future__ import annotations

from autofreeze.study.opening import open_study, wait_for_study
from autofreeze.study.results import best_plan, best_trial, budget, pareto_front, trial_plan
from autofreeze.study.retries import requeue_interrupted, requeue_lost, requeue_over_budget
from autofreeze.study.sampling import (
    make_pruner,
    make_sampler,
    run_stream,
    sampler_seed,
    warmup_steps,
    worker_label,
)
from autofreeze.study.stored import check_same_study, config_changes, store_config, stored_config

__all__ = [
    "best_plan",
    "best_trial",
    "budget",
    "check_same_study",
    "config_changes",
    "make_pruner",
    "make_sampler",
    "open_study",
    "pareto_front",
    "requeue_interrupted",
    "requeue_lost",
    "requeue_over_budget",
    "run_stream",
    "sampler_seed",
    "store_config",
    "stored_config",
    "trial_plan",
    "wait_for_study",
    "warmup_steps",
    "worker_label",
]
