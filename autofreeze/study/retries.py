"""Retrying a trial: a trial cut short (Ctrl-C, a killed worker, a stale heartbeat) goes back
to the queue linked to the one it replaces (user attr ``retry_of``); the queue runs retries
before any other waiting trial (:mod:`autofreeze.study.queue`)."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autofreeze.progress import Progress
from autofreeze.study import records


def requeue_lost(study: optuna.Study, progress: Progress) -> int:
    """Re-queue the trials that were cut short (failed with no reason: a killed worker, a
    broken pipe) and that nothing has re-queued yet; return how many.

    Ctrl-C and stale heartbeats re-queue their trial at once; this catches the rest, so the
    next run of the study runs every recipe it started with.
    """
    trials = study.get_trials(deepcopy=False)
    handed_back = {records.retry_of(t) for t in trials if records.is_retry(t)}
    for t in trials:
        handed_back.update(t.system_attrs.get("retry_history", ()))
    lost = [
        t
        for t in trials
        if t.state == TrialState.FAIL
        and not records.counts(t)
        and records.reevaluation_of(t) is None
        and not records.over_budget(t)  # never ran; a queued plan was re-queued at once
        and t.number not in handed_back
        and records.params_of(t)  # a trial that died before its sampler chose: nothing to redo
    ]
    for trial in lost:
        study.enqueue_trial(records.params_of(trial), user_attrs=records.retry_attrs(trial))
        progress(f"trial {trial.number} was cut short without a result: re-queued")
    return len(lost)


def requeue_interrupted(study: optuna.Study, number: int | None, progress: Progress) -> None:
    """Put the trial a Ctrl-C cut short back in the queue, linked to the one it replaces."""
    if number is None:
        return
    trial = study.get_trials(deepcopy=False)[number]
    if trial.state != TrialState.FAIL or records.fail_reason(trial):
        return
    study.enqueue_trial(records.params_of(trial), user_attrs=records.retry_attrs(trial))
    progress(f"interrupted trial {number} re-queued; run the same command to resume")


MAX_RETRY = 3  # re-runs of one trial whose worker died before it is left failed


def requeue_over_budget(study: optuna.Study, trial: FrozenTrial) -> None:
    """A queued plan (a recipe, a prior) whose trial lost the race for the last of the budget
    never ran: it goes back to the queue, linked to the trial it replaces."""
    queued = trial.system_attrs.get("fixed_params")  # the plan enqueue_trial stored
    if queued:
        study.enqueue_trial(queued, user_attrs=records.retry_attrs(trial))


def retry_callback() -> Any:
    """Optuna's stale-trial retry, with the new trial's user attr ``retry_of`` naming the
    trial it replaces (the first one of a chain), visible in the dashboard while it waits."""

    class RetryStaleTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
        calls = 0  # trials failed as stale, handed here (the worker loop reads the study again)

        def __call__(self, study: Any, trial: Any) -> None:
            self.calls += 1
            trial = copy.deepcopy(trial)
            first = trial.system_attrs.get("failed_trial", trial.number)
            records.mark_retry_of(trial, first)
            super().__call__(study, trial)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryStaleTrial(max_retry=MAX_RETRY)
