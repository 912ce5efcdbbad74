"""What a study has found: its budget spent, its best trial and plan, a trial's plan, and the
Pareto front of a multi-objective study."""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from autofreeze.errors import StorageError
from autofreeze.plan import FreezePlan
from autofreeze.study import records


def budget(study: optuna.Study) -> tuple[int, int]:
    """(counted, running) trials of the whole study; see :func:`autofreeze.study.records.counts`."""
    return records.budget(study.get_trials(deepcopy=False))


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The plan named best after re-evaluation if there was one, else the best single run of a
    trial that is not itself a re-evaluation (a lucky seed does not make a plan best)."""
    trials = study.get_trials(deepcopy=False)
    choice = records.choice(study)
    if choice is not None:
        return trials[choice["trial"]]
    runs = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and math.isfinite(records.metric_value(t) or math.nan)
        and records.reevaluation_of(t) is None
    ]
    if not runs:
        return None  # with several objectives: the best metric (`best` shows the front)
    return (max if records.maximizes(study) else min)(runs, key=records.metric_value)


def trial_plan(study: optuna.Study, number: int) -> FreezePlan:
    """The plan trial ``number`` ran (it must have run to the end, or been pruned)."""
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials) or not records.plan(trials[number]):
        raise StorageError(
            f"study {study.study_name!r} has no trial {number} with a plan "
            "(see `autofreeze trials`)"
        )
    return FreezePlan.from_dict(records.plan(trials[number]))


def best_plan(study: optuna.Study) -> FreezePlan:
    trial = best_trial(study)
    if trial is None:
        raise StorageError(f"study {study.study_name!r} has no finished trial yet")
    return FreezePlan.from_dict(records.plan(trial))


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The final choice of a multi-objective study: its complete trials that no other beats in
    every objective (best metric first). Re-evaluations and duplicates of a plan are left out."""
    runs = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE
        and records.reevaluation_of(t) is None
        and t.values
        and all(math.isfinite(v) for v in t.values)
    ]
    # every objective as "smaller is better"
    signs = [-1 if d == optuna.study.StudyDirection.MAXIMIZE else 1 for d in study.directions]

    def key(t: FrozenTrial) -> list[float]:
        return [s * v for s, v in zip(signs, t.values, strict=True)]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    keys = {t.number: key(t) for t in runs}
    front = [t for t in runs if not any(dominates(keys[o.number], keys[t.number]) for o in runs)]
    front.sort(key=lambda t: keys[t.number])
    seen, out = set(), []
    for t in front:  # equal values: the first trial stands for them
        if tuple(keys[t.number]) not in seen:
            seen.add(tuple(keys[t.number]))
            out.append(t)
    return out
