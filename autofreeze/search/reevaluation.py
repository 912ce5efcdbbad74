"""A robust final choice: before one plan is named best, the top plans run again with other
seeds, and the choice goes by their mean.

With about a hundred validation images one image is one point of accuracy, so the best single
run is often a lucky seed. After the search's budget, the ``[study] reevaluate`` best distinct
plans each run ``reevaluate_seeds`` more times (other training seeds: head initialisation and
batch order). The plan with the best mean is chosen; among the plans whose mean lies within one
standard error of it, the one with the least mean wall time if it takes at most 80 % of the best
one's (the one-standard-error rule of Hastie, Tibshirani & Friedman, *The Elements of
Statistical Learning*, 2009, section 7.10: with three runs a 95 % interval is 2.5 standard
errors wide and would hand the choice to the cheapest of nearly any top three). The 95 %
interval (Student's t) is what ``best`` shows. Re-evaluations are recorded trials
(``reevaluation_of``), never pruned and not counted in the budget.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autofreeze.progress import Progress
from autofreeze.study import records

# two-sided 95 % quantiles of Student's t by degrees of freedom (1.96 beyond)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228}  # fmt: skip


def _plan_key(t: FrozenTrial) -> str:
    return json.dumps(records.plan(t), sort_keys=True)


def top_plans(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The best ``k`` completed trials with distinct plans (re-evaluations left out)."""
    runs = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE
        and t.value is not None
        and math.isfinite(t.value)
        and records.reevaluation_of(t) is None
    ]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    runs.sort(key=lambda t: -t.value if maximize else t.value)  # type: ignore[operator]
    top: dict[str, FrozenTrial] = {}
    for t in runs:
        top.setdefault(_plan_key(t), t)
        if len(top) == k:
            break
    return list(top.values())


def enqueue_reevaluations(
    study: optuna.Study, top: list[FrozenTrial], seeds: int, base_seed: int
) -> int:
    """Queue the re-runs that do not exist yet (a resumed search adds none twice)."""
    have = {  # a re-run cut short (FAIL without a reason) is queued again
        (records.reevaluation_of(t), records.seed(t))
        for t in study.get_trials(deepcopy=False)
        if records.reevaluation_of(t) is not None
        and (t.state != TrialState.FAIL or records.fail_reason(t))
    }
    queued = 0
    for t in top:
        for s in range(1, seeds + 1):
            if (t.number, base_seed + s) not in have:
                attrs = records.reevaluation_attrs(t.number, base_seed + s)
                study.enqueue_trial(t.params, user_attrs=attrs)
                queued += 1
    return queued


def summarize(study: optuna.Study, top: list[FrozenTrial]) -> list[dict[str, Any]]:
    """Per plan: its runs' values, mean, 95 % half-width and mean wall time."""
    trials = study.get_trials(deepcopy=False)
    out = []
    for t in top:
        runs = [t] + [
            r
            for r in trials
            if records.reevaluation_of(r) == t.number and r.state == TrialState.COMPLETE
        ]
        values = [float(r.value) for r in runs if r.value is not None]
        n = len(values)
        sem = statistics.stdev(values) / math.sqrt(n) if n > 1 else None
        half = _T95.get(n - 1, 1.96) * sem if sem is not None else None
        seconds = [records.seconds(r, 0.0) for r in runs]
        out.append(
            {
                "trial": t.number,
                "name": records.name(t),
                "values": values,
                "mean": statistics.fmean(values),
                "sem": sem,
                "ci95": half,
                "seconds": statistics.fmean(seconds),
            }
        )
    return out


CHEAPER = 0.8  # a plan is cheaper when it takes at most this share of the best one's time


def choose(summaries: list[dict[str, Any]], maximize: bool) -> dict[str, Any]:
    """The best mean; among the plans within one standard error of it, the cheapest, if it
    costs at most ``CHEAPER`` of the best's wall time (smaller differences are timing noise on
    a shared machine, not worth a lower mean)."""
    best = max(summaries, key=lambda s: s["mean"] if maximize else -s["mean"])
    noise = best["sem"] or 0.0
    close = [
        s
        for s in summaries
        if abs(s["mean"] - best["mean"]) <= noise and s["seconds"] <= CHEAPER * best["seconds"]
    ]
    chosen = min(close, key=lambda s: s["seconds"], default=best)
    return {**chosen, "best_mean_trial": best["trial"], "candidates": summaries}


def reevaluate(
    study: optuna.Study,
    k: int,
    seeds: int,
    base_seed: int,
    progress: Progress,
    run_queued: Callable[[Callable[[FrozenTrial], bool]], int],
) -> dict[str, Any] | None:
    """Re-run the top ``k`` plans ``seeds`` more times, store and return the choice.

    ``run_queued(wanted)`` runs the waiting trials ``wanted`` says yes to (the trial loop's
    :func:`autofreeze.search.trials.run_queued`): the re-runs only, never a recipe or a prior
    still queued when the budget ran out.
    """
    if k < 1 or seeds < 1:
        return None
    top = top_plans(study, k)
    if not top:
        return None
    enqueue_reevaluations(study, top, seeds, base_seed)
    waiting = sum(
        t.state == TrialState.WAITING and records.reevaluation_of(t) is not None
        for t in study.get_trials(deepcopy=False)
    )
    if waiting:
        progress(f"re-evaluating the top {len(top)} plans with {seeds} more seeds each")
        run_queued(lambda t: records.reevaluation_of(t) is not None)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    choice = choose(summarize(study, top), maximize)
    study.set_user_attr(records.CHOICE, choice)
    ci = f" ± {choice['ci95']:.4f}" if choice["ci95"] is not None else ""
    why = "" if choice["trial"] == choice["best_mean_trial"] else ", the cheapest within the noise"
    progress(
        f"chosen: trial {choice['trial']} ({choice['name']}), mean {choice['mean']:.4f}{ci} "
        f"over {len(choice['values'])} runs{why}"
    )
    return choice
