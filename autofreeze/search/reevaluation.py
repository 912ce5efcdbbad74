"""A robust final choice: before one plan is named best, the top plans run again with other
seeds, and the choice goes by their mean.

With about a hundred validation images one image is one point of accuracy, so the best single
run is often a lucky seed. After the search's trials, the ``[study] reevaluate`` best distinct
plans run up to ``reevaluate_seeds`` more times (other training seeds: head initialisation and
batch order), inside the study's budget (:mod:`autofreeze.study.allowance`), round by round,
stopping once one plan leads clearly. The plan with the best mean is chosen; among the plans
whose mean lies within one standard error of it, the one with the least mean wall time if it
takes at most 80 % of the best one's (the one-standard-error rule of Hastie, Tibshirani &
Friedman, *The Elements of Statistical Learning*, 2009, section 7.10: with three runs a 95 %
interval is 2.5 standard errors wide and would hand the choice to the cheapest of nearly any
top three). The 95 %
interval (Student's t) is what ``best`` shows. Re-runs are recorded on the study
(:func:`autofreeze.study.records.reruns`), not as trials: Optuna's own ``best_trial``, history
and parameter importance see the search's trials only.
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
from autofreeze.study import budget, records
from autofreeze.study.allowance import Allowance

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


def summarize(study: optuna.Study, top: list[FrozenTrial]) -> list[dict[str, Any]]:
    """Per plan: its runs' values (the trial's, then its re-runs'), mean, 95 % half-width and
    mean wall time."""
    again = records.reruns(study)
    out = []
    for t in top:
        mine = [r for r in again if r["of"] == t.number and r["value"] is not None]
        values = [float(t.value)] + [float(r["value"]) for r in mine]  # type: ignore[arg-type]
        n = len(values)
        sem = statistics.stdev(values) / math.sqrt(n) if n > 1 else None
        half = _T95.get(n - 1, 1.96) * sem if sem is not None else None
        seconds = [records.seconds(t, 0.0) or 0.0] + [r["seconds"] for r in mine]
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


def clear_lead(summaries: list[dict[str, Any]], maximize: bool) -> list[dict[str, Any]]:
    """The plans still in contention: the leader and every plan whose mean a two-sample t-test
    (pooled variance, 95 %) cannot tell from the leader's. With no spread measured yet, all."""
    sign = 1 if maximize else -1
    leader = max(summaries, key=lambda s: sign * s["mean"])
    dev = [(v - s["mean"]) ** 2 for s in summaries for v in s["values"]]
    df = sum(len(s["values"]) - 1 for s in summaries)
    if df < 1:
        return summaries
    sd = math.sqrt(sum(dev) / df)
    t95 = _T95.get(df, 1.96)
    keep = []
    for s in summaries:
        gap = sign * (leader["mean"] - s["mean"])
        width = t95 * sd * math.sqrt(1 / len(leader["values"]) + 1 / len(s["values"]))
        if s is leader or gap <= width:
            keep.append(s)
    return keep


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
    allowance: Allowance,
    base_seed: int,
    progress: Progress,
    run_plan: Callable[[FrozenTrial, int], float | None],
    seconds_left: Callable[[], float],
) -> dict[str, Any] | None:
    """Re-run the top plans with other seeds, round by round, within the budget; store and
    return the choice.

    ``run_plan(trial, seed)`` trains trial's plan with ``seed`` and returns its value (None if
    it failed); it records the run (:func:`autofreeze.study.records.add_rerun`). A round runs
    one more seed of each plan still in contention (:func:`clear_lead`); a resumed search skips
    the runs it has. The re-runs stop when one plan leads clearly, when the seeds are done, or
    when the time budget has no room for the next one (``seconds_left()``).
    """
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    top = top_plans(study, max(1, allowance.top))
    if not top:
        return None
    if allowance.reruns:
        _rerun(study, top, allowance, base_seed, progress, run_plan, seconds_left)
    summaries = summarize(study, top)
    choice = choose(summaries, maximize)
    records.write_choice(study, choice)
    progress(_chosen_line(choice, allowance))
    return choice


def _rerun(
    study: optuna.Study,
    top: list[FrozenTrial],
    allowance: Allowance,
    base_seed: int,
    progress: Progress,
    run_plan: Callable[[FrozenTrial, int], float | None],
    seconds_left: Callable[[], float],
) -> None:
    """The rounds of re-runs (see :func:`reevaluate`)."""
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    contending, seeds = top, allowance.seeds
    said = False
    for s in range(1, seeds + 1):
        done = {(r["of"], r["seed"]) for r in records.reruns(study)}
        for t in contending:
            if (t.number, base_seed + s) in done:
                continue
            if seconds_left() < (records.seconds(t, 0.0) or 0.0):
                progress("the time budget has no room for more re-runs")
                return
            if allowance.total is not None and _trainings(study) >= allowance.total:
                return  # a raised budget's new top plan: no more than n_trials in all
            if not said:
                progress(f"re-evaluating the top {len(top)} plans with up to {seeds} more seeds")
                said = True
            run_plan(t, base_seed + s)
        kept = clear_lead(summarize(study, contending), maximize)
        if len(kept) == 1 and len(contending) > 1 and s < seeds:
            progress(f"trial {kept[0]['trial']} leads clearly: no more re-runs")
            return
        contending = [t for t in contending if t.number in {k["trial"] for k in kept}]


def _trainings(study: optuna.Study) -> int:
    """Every training the study holds: its counted trials and its re-runs."""
    return budget(study)[0] + len(records.reruns(study))


def _chosen_line(choice: dict[str, Any], allowance: Allowance) -> str:
    n = len(choice["values"])
    if n == 1:
        why = (
            "the best single run (the budget leaves no room to re-run the top plans)"
            if not allowance.reruns
            else "the best single run"
        )
        return f"chosen: trial {choice['trial']} ({choice['name']}), {choice['mean']:.4f}, {why}"
    ci = f" ± {choice['ci95']:.4f}" if choice["ci95"] is not None else ""
    why = "" if choice["trial"] == choice["best_mean_trial"] else ", the cheapest within the noise"
    return (
        f"chosen: trial {choice['trial']} ({choice['name']}), mean {choice['mean']:.4f}{ci} "
        f"over {n} runs{why}"
    )
