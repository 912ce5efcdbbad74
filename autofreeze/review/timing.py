"""Time on the terminal: durations written one way (``0.4s``, ``12.3s``, ``4m05s``, ``1h02m``)
and what the rest of a study costs, from the measured cost of its finished trials.

The estimate of the time left (:func:`eta`) is the median wall time per epoch of the trials
that trained a backbone, never of those that trained a head on cached pooled features: the
head-only recipe runs first and costs next to nothing per epoch (0.1 s against 2 s on the
quickstart), so an estimate from it alone said "~30 s left" of a 4-minute search. That time
per epoch is scaled to the epochs still to run: the rest of each running trial, the trials of
the budget not started yet (at the mean epochs a searched trial ran, pruning included; all the
epochs before one has finished), shared by the workers, and then the re-evaluation runs that
follow the budget (``[study] reevaluate`` x ``reevaluate_seeds``, all their epochs, one after
the other in the search's process).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from optuna.trial import FrozenTrial, TrialState

from autofreeze.study import records

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def head_only(t: FrozenTrial) -> bool:
    """The trial trained its head on cached pooled features (see ``records.write_cache``)."""
    return records.cache_kind(t) == "pooled"


def epochs_run(t: FrozenTrial) -> int:
    """How many epochs a trial has run: its history has each one (written every epoch); a trial
    reports its metric only at validated epochs, so its last report is a lower bound."""
    return max(len(records.history(t)), max(t.intermediate_values, default=0))


def seconds_per_epoch(t: FrozenTrial) -> float | None:
    """A finished trial's wall time (building and caching included) per epoch it ran."""
    seconds = records.seconds(t)
    epochs = epochs_run(t)
    if t.state not in FINISHED or seconds is None or not epochs:
        return None
    return float(seconds) / epochs


def eta(
    trials: Sequence[FrozenTrial],
    *,
    n_trials: int | None,
    epochs: int,
    workers: int | None = None,
    reevaluations: int = 0,
    reruns_done: int = 0,
) -> float | None:
    """Seconds until the budget and then ``reevaluations`` re-runs (``reruns_done`` of them
    run) are done, or None while no trial that trained a backbone has finished (or without a
    budget).

    ``workers``: how many trials run at once (default: the trials running now, at least 1).
    """
    if n_trials is None:
        return None
    measured = [s for t in trials if not head_only(t) and (s := seconds_per_epoch(t)) is not None]
    if not measured:
        return None
    per_epoch = statistics.median(measured)
    runs = [t for t in trials if records.reevaluation_of(t) is None]
    running = [t for t in runs if t.state == TrialState.RUNNING]
    searched = [
        n
        for t in runs
        if t.state in FINISHED
        and records.baseline(t) is None
        and (n := epochs_run(t))
        and records.counts(t)
    ]
    per_trial = statistics.fmean(searched) if searched else epochs
    counted = sum(records.counts(t) for t in runs)
    not_started = max(0, n_trials - counted - len(running))
    budget_epochs = not_started * per_trial + sum(max(0, epochs - epochs_run(t)) for t in running)
    parallel = workers or max(1, len(running))
    left = max(0, reevaluations - reruns_done) * epochs  # the re-runs run one after another
    return per_epoch * (budget_epochs / parallel + left)
