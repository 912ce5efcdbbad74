"""How a study spends its budget: a count of trainings (``[study] n_trials``), compute seconds
(``[study] budget``, all workers together), or both, whichever ends first.

The budget holds everything the search trains: the probe's pass, the first plans (the textbook
recipes and the probe's plans), the searched trials, and the re-evaluation's re-runs of the top
plans. A study of ``n_trials = 20`` trains 20 times, not 20 plus six re-runs; a study of
``budget = "20m"`` ends within about 20 minutes of compute.

- **Re-runs** take at most a quarter of the trainings (:data:`RERUN_SHARE`) and, in a time
  budget, what is left after the search's share (:data:`RERUN_RESERVE`), once the search has
  run :data:`RERUN_FROM` trials. A study too small for two re-runs has none: it names the best
  single run, and says so.
- **First plans** are queued only as many as the budget surely runs (:func:`first_plans_room`):
  a third of the search trials (at least one) is left to the sampler, and with a time budget
  the count is estimated from the probe's pass. A plan left waiting when the budget ends would
  show in every view as a trial that never ran.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from autofreeze.config import StudyConfig
from autofreeze.study import records

RERUN_SHARE = 4  # at most one training in this many re-runs a top plan
RERUN_RESERVE = 0.2  # the share of a time budget kept for the re-runs
# search trials a time budget runs before it keeps that share: in the equal-time benchmark
# (13 to 22 trainings a search) re-runs changed the test accuracy of the plan handed over by
# -0.001 on average, and their fifth of the budget went missing from the search
RERUN_FROM = 20
SAMPLER_SHARE = 3  # at least one search trial in this many is the sampler's (never queued)
# a trial's epoch costs about this many of the probe's passes. Measured over the 9 tasks of the
# search-quality benchmark (benchmarks/trial_estimate.py; docs/benchmarks.md, "Trial estimate"):
# the first plans cost 0.56 to 1.58 passes an epoch, median 1.23 (frozen blocks are cached, and
# the probe's pass holds its ridge fits too). 1.6 is above every task's mean, so the plans
# queued still fit the budget; 3.0, the value before, overestimated 1.9 to 5.4 times and
# queued too few (a room of 1 in the warm-start benchmark where 5 to 35 trials ran).
TRAINING_PER_FORWARD = 1.6


@dataclass(frozen=True)
class Allowance:
    """What a study may spend: search trials, re-runs, seconds."""

    trials: int | None  # counted search trials (queued and sampled); None: no count
    top: int  # plans re-run before one is named best
    seeds: int  # extra seeds per re-run plan (at most)
    seconds: float | None  # the whole budget in compute seconds; None: no time budget

    @property
    def reruns(self) -> int:
        return self.top * self.seeds

    @property
    def total(self) -> int | None:
        """Every training of the study (``n_trials``): search trials and re-runs."""
        return None if self.trials is None else self.trials + self.reruns

    @property
    def search_seconds(self) -> float | None:
        """The seconds the search may spend before the re-runs' share."""
        if self.seconds is None:
            return None
        return self.seconds * (1 - RERUN_RESERVE) if self.reruns else self.seconds


def allowance(cfg: StudyConfig) -> Allowance:
    """The config's budget split into search trials and re-runs (see the module's text)."""
    s = cfg.study
    top, seeds = s.reevaluate, s.reevaluate_seeds
    if s.objectives or top < 1 or seeds < 1:  # a Pareto front is kept, never re-run
        top = seeds = 0
    if s.n_trials is not None and top:
        room = s.n_trials // RERUN_SHARE
        if room < 2:  # one re-run compares nothing
            top = seeds = 0
        else:
            top = min(top, room)
            seeds = min(seeds, room // top)
    trials = None if s.n_trials is None else s.n_trials - top * seeds
    return Allowance(trials, top, seeds, s.budget)


def first_plans_room(a: Allowance, trial_seconds: float | None) -> int | None:
    """How many first plans (recipes, the probe's) the budget surely runs; None: all of them.

    ``trial_seconds`` estimates one trial's compute (see :func:`trial_estimate`), for a time
    budget. A third of the search trials is the sampler's (one at least, with two or more).
    """
    n = a.trials
    if a.search_seconds is not None and trial_seconds:
        by_time = max(1, int(a.search_seconds / trial_seconds))
        n = by_time if n is None else min(n, by_time)
    if n is None:
        return None
    return n - max(1, n // SAMPLER_SHARE) if n > 1 else 1


def trial_estimate(probe_seconds: float, epochs: int) -> float:
    """One trial's compute, guessed before any ran: the probe runs the backbone once over the
    training and validation images; a trial trains ``epochs`` times over them."""
    return probe_seconds * TRAINING_PER_FORWARD * epochs


def _elapsed(t: FrozenTrial, now: datetime.datetime) -> float:
    """Seconds since a running trial started (Optuna stamps naive local times)."""
    if t.datetime_start is None:
        return 0.0
    start = t.datetime_start.replace(tzinfo=None)
    return max(0.0, (now - start).total_seconds())


def spent(study: optuna.Study, trials: Iterable[FrozenTrial] | None = None) -> float:
    """Compute seconds the study has spent: the probe, every trial that ran (running ones so
    far), and the re-runs."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    now = datetime.datetime.now()
    total = float((records.probe(study) or {}).get("seconds", 0.0))
    for t in trials:
        if t.state == TrialState.RUNNING:
            total += _elapsed(t, now)
        else:
            total += records.seconds(t, 0.0) or 0.0
    return total + sum(r["seconds"] for r in records.reruns(study))


def typical_trial(trials: Iterable[FrozenTrial]) -> float | None:
    """The median compute of the finished trials that ran to the end, or None."""
    done = sorted(
        s
        for t in trials
        if t.state == TrialState.COMPLETE and (s := records.seconds(t)) is not None
    )
    return done[len(done) // 2] if done else None


def search_share(a: Allowance, trials: Iterable[FrozenTrial]) -> float | None:
    """The seconds of a time budget the search may spend, with ``trials`` run so far (None
    without a time budget).

    The share kept for the re-runs is kept only once the search has run :data:`RERUN_FROM`
    trials; before that the search has the whole budget (and no re-run fits after it)."""
    if a.reruns and sum(records.counts(t) for t in trials) < RERUN_FROM:
        return a.seconds
    return a.search_seconds


def search_spent(a: Allowance, study: optuna.Study, trials: list[FrozenTrial]) -> bool:
    """Whether a new search trial would overrun the search's share of a time budget
    (:func:`search_share`): the seconds spent plus half a typical trial reach it (on average
    the budget is then met)."""
    limit = search_share(a, trials)
    if limit is None:
        return False
    typical = typical_trial(trials) or 0.0
    return spent(study, trials) + 0.5 * typical >= limit


def seconds_left(a: Allowance, study: optuna.Study) -> float:
    """What the whole time budget has left (infinite without one)."""
    if a.seconds is None:
        return math.inf
    return a.seconds - spent(study)
