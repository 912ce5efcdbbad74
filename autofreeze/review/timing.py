"""Time on the terminal: durations written one way (``0.4s``, ``12.3s``, ``4m05s``, ``1h02m``)
and what the rest of a study costs, from the measured cost of its finished trials.

The estimate of the time left (:func:`eta`) is built from the median wall time per epoch of the
trials that trained a backbone, never of those that trained a head on cached pooled features:
the head-only recipe runs first and costs next to nothing per epoch (0.1 s against 2 s on the
quickstart), so an estimate from it alone said "~30 s left" of a 4-minute search. That time per
epoch is scaled to the epochs still to run: the rest of each running trial and the trials of
the budget not started yet (at the mean epochs a searched trial ran, pruning included; all the
epochs before one has finished), shared by the workers. A time budget caps them: no trial
starts once the search's share is spent (with half a typical trial to spare, as the trial loop
judges it: :func:`autofreeze.study.allowance.search_spent`), however many the count leaves (a
study of ``n_trials = 40`` and ``budget = "1m"`` ends after the trials a minute holds; counting
the other 36 said 1m26s left three seconds before the end). Then come the re-runs of the top
plans, one after the other in the search's process, each at the measured time of a trial that
ran to the end, as many as are left and, with a time budget, as the rest of it holds. At the
end nothing is left: 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from optuna.trial import FrozenTrial, TrialState

from autofreeze.study import records
from autofreeze.study.allowance import typical_trial

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


def full_run(trials: Sequence[FrozenTrial]) -> float | None:
    """What one run to the end costs: the median wall time of the complete trials that trained
    a backbone (of any complete trial if none did), or None."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and records.seconds(t)]
    trained = [t for t in complete if not head_only(t)] or complete
    return statistics.median(float(records.seconds(t)) for t in trained) if trained else None


def eta(
    trials: Sequence[FrozenTrial],
    *,
    n_trials: int | None,
    epochs: int,
    workers: int | None = None,
    reruns: int = 0,
    budget_left: float | None = None,
    search_left: float | None = None,
) -> float | None:
    """Seconds until the search's trials and then the re-runs are done (see the module's text).

    Args:
        trials: the study's trials.
        n_trials: the search's trials (the count less the re-runs' room); None: no count.
        epochs: a trial's epochs.
        workers: how many trials run at once (default: the trials running now, at least 1).
        reruns: the re-runs of the top plans still to run, at most.
        budget_left: the compute seconds a time budget has left; None: no time budget.
        search_left: of which the search's share (its trials start only while it lasts).

    Returns:
        The seconds, or None while no trial that trained a backbone has finished, or with
        neither a count nor a time budget.
    """
    if n_trials is None and search_left is None:
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
    rest = per_epoch * sum(max(0, epochs - epochs_run(t)) for t in running)
    new = math.inf
    if n_trials is not None:
        counted = sum(records.counts(t) for t in runs)
        new = per_epoch * per_trial * max(0, n_trials - counted - len(running))
    if search_left is not None:  # a trial starts only while the share holds half a typical one
        typical = typical_trial(trials) or 0.0
        new = min(new, max(0.0, search_left - rest)) if search_left > 0.5 * typical else 0.0
    parallel = workers or max(1, len(running))
    rerun = full_run(trials) or per_epoch * epochs
    if budget_left is not None:  # a re-run starts only while the budget holds it
        reruns = min(reruns, int(max(0.0, budget_left - rest - new) // rerun))
    return (rest + new) / parallel + max(0, reruns) * rerun
