"""What a reviewer reads: trial rows, the best plan, the comparison with the baselines, and
the progress lines of a search (the tables they are printed as: :mod:`autofreeze.review.tables`)."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autofreeze.review.format import duration, number
from autofreeze.review.study_story import trial_kind
from autofreeze.review.tables import short_plan
from autofreeze.review.timing import epochs_run
from autofreeze.study import best_trial, records
from autofreeze.study.library import StoredStudy
from autofreeze.study.results import pareto_front
from autofreeze.study.storage import mask_url

# the columns of `autofreeze trials`, each a key of trial_row()
TRIAL_COLUMNS = (
    "number",
    "name",
    "state",
    "value",
    "boundary",
    "schedule",
    "knobs",
    "init",
    "head_lr",
    "backbone_lr_ratio",
    "layer_decay",
    "bn_mode",
    "frozen_fraction",
    "epochs_run",
    "seconds",
    "reason",
)
# the comparison `autofreeze search` prints: the recipe's name, then the trial's columns
COMPARISON_COLUMNS = ("recipe",) + tuple(
    c for c in TRIAL_COLUMNS if c not in ("number", "name", "bn_mode", "frozen_fraction", "reason")
)


# the columns of `autofreeze studies --wide`, each a key of study_row(); the default table
# leaves out the runs behind a value and shows the plan in short (short_study_row)
STUDY_COLUMNS = (
    "study",
    "task",
    "backbone",
    "metric",
    "direction",
    "trials",
    "value",
    "runs",
    "plan",
)
STUDY_SHORT = ("study", "task", "backbone", "metric", "trials", "value", "plan")
ARROWS = {"maximize": "↑", "minimize": "↓"}


def task_words(dataset: dict[str, Any]) -> str:
    """``synthetic(num_classes=3, image_size=16)``: a dataset table in a line, a path by its
    last part (``imagefolder(path=flowers)``)."""
    if not dataset:
        return "-"
    options = []
    for key, value in dataset.items():
        if key != "name":
            shown = value.rstrip("/").rsplit("/", 1)[-1] if key in ("path", "root") else value
            options.append(f"{key}={shown}")
    name = str(dataset.get("name", "?"))
    return f"{name}({', '.join(options)})" if options else name


def short_study_row(row: dict[str, Any]) -> dict[str, Any]:
    """A :func:`study_row` for the 100-column table: the metric with an arrow, the plan in
    short (the task is cut to fit by the table)."""
    arrow = ARROWS.get(row["direction"], row["direction"])
    return {**row, "metric": f"{row['metric'] or '-'} {arrow}", "plan": row["short_plan"]}


def study_row(s: StoredStudy) -> dict[str, Any]:
    """One study of a storage as ``autofreeze studies`` lists it: what it runs (dataset and
    options, backbone, metric and direction), the trials it counted, its best plan in words
    and its value (the re-evaluated mean where its plan was re-run, over ``runs`` runs)."""
    best = s.best()
    trial, value, runs = best if best is not None else (None, None, 0)
    plan = records.plan(trial) if trial is not None else {}
    return {
        "study": s.name,
        "storage": mask_url(s.url),
        "task": task_words(s.dataset),
        "dataset": s.dataset,
        "backbone": s.backbone,
        "blocks": s.n_blocks,
        "metric": s.metric,
        "direction": s.direction,
        "trials": s.counted,
        "best_trial": None if trial is None else trial.number,
        "value": value,
        "runs": runs or None,
        "plan": records.plan_words(plan, records.n_blocks(trial)) if plan else "",
        "short_plan": short_plan(plan, records.n_blocks(trial)) if plan else "",
        "best_plan": plan or None,
        "probe_boundary": (s.probe or {}).get("boundary"),
    }


def trial_row(t: FrozenTrial) -> dict[str, Any]:
    plan = records.plan(t)
    return {
        "number": t.number,
        "name": "" if records.name(t) == records.SEARCHED else records.name(t),
        "state": t.state.name,
        "value": records.metric_value(t),
        "boundary": plan.get("boundary"),
        "schedule": plan.get("schedule"),
        "knobs": ",".join(f"{k}={number(v)}" for k, v in plan.get("schedule_params", {}).items()),
        "init": plan.get("init"),
        "head_lr": plan.get("head_lr"),
        "backbone_lr_ratio": plan.get("backbone_lr_ratio"),
        "layer_decay": plan.get("layer_decay"),
        "bn_mode": plan.get("bn_mode"),
        "frozen_fraction": records.frozen_fraction(t),
        "epochs_run": epochs_run(t),
        "seconds": records.seconds(t),
        "reason": records.fail_reason(t),
        "values": t.values,  # every objective's, in order (a multi-objective study has several)
        "plan": short_plan(plan, records.n_blocks(t)),
    }


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial's row; a trial whose plan the re-evaluation ran again lists the re-runs'
    values under ``reruns`` (they are not trials of their own)."""
    again: dict[int, list[float | None]] = {}
    for r in records.reruns(study):
        again.setdefault(r["of"], []).append(r["value"])
    return [
        {**trial_row(t), "reruns": again.get(t.number, [])}
        for t in study.get_trials(deepcopy=False)
    ]


def best_summary(study: optuna.Study) -> dict[str, Any]:
    best = best_trial(study)
    if best is None:
        return {"study": study.study_name, "best": None}
    summary = {
        "study": study.study_name,
        "direction": study.directions[0].name.lower(),
        "best": {
            "number": best.number,
            "value": records.metric_value(best),
            "name": records.name(best),
            "plan": records.plan(best) or None,
            "params": best.params,
            "frozen_blocks": records.frozen_blocks(best),
            "cost": records.cost(best),
            # after re-evaluation: the mean over seeds, its 95 % half-width, the runs
            "reevaluation": records.choice(study),
        },
    }
    if len(study.directions) > 1:  # the choice is the front: best metric first, cheapest last
        summary["objectives"] = study.metric_names
        summary["directions"] = [d.name.lower() for d in study.directions]
        summary["pareto_front"] = [
            {**trial_row(t), "values": t.values} for t in pareto_front(study)
        ]
    return summary


def comparison(study: optuna.Study) -> list[dict[str, Any]]:
    """The best plan next to every baseline (what the search bought), named by what it is:
    ``BEST (trial 9): searched`` when the sampler chose it, ``BEST (trial 0): recipe
    linear_probe`` or ``BEST (trial 6): probe plan probe_k3 (prior)`` when it was enqueued."""
    trials = study.get_trials(deepcopy=False)
    rows = [  # a recipe cut short (Ctrl-C, SIGTERM, a dead worker) shows as its re-run only
        {**trial_row(t), "recipe": records.baseline(t)}
        for t in trials
        if records.baseline(t) and (t.state != TrialState.FAIL or records.counts(t))
    ]
    best = best_trial(study)
    if best is not None:
        label = f"BEST (trial {best.number}): {trial_kind(best)}"
        rows.insert(0, {**trial_row(best), "recipe": label})
    finished = sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED) and records.reevaluation_of(t) is None
        for t in trials
    )
    for row in rows:
        row["of"] = finished
    return rows


def trial_line(
    study: optuna.Study,
    last: FrozenTrial,
    n_trials: int | None,
    elapsed: float,
    timeout: float | None,
    left: str | None = None,
) -> str:
    """One progress line per finished trial: outcome, best so far, budget and the time left
    (``left``: the display's ETA in words, the one its status line shows)."""
    value = records.metric_value(last)
    best = best_trial(study)
    best_value = None if best is None else records.metric_value(best)
    done, _ = records.budget(study.get_trials(deepcopy=False))
    budget = f"{done}/{n_trials} done" if n_trials else f"{done} done"
    ahead = f", ETA {left}" if left else ""
    if timeout:
        ahead += f", timeout in {duration(max(0.0, timeout - elapsed))}"
    reason = records.fail_reason(last)
    return (
        f"#{last.number} {records.name(last)} {last.state.name.lower()}"
        f"{' (' + reason + ')' if reason else ''}"
        f" value={'-' if value is None else f'{value:.4f}'}"
        f" best={'-' if best_value is None else f'{best_value:.4f} (#{best.number})'}"
        f" | {budget}, {duration(elapsed)} elapsed{ahead}"
    )


def spent_note(study_name: str, n_trials: int, command: str = "run") -> str:
    """What a search (or a worker: ``command`` names the search) says when it finds the
    study's budget spent, before the result."""
    more = max(10, n_trials // 2)
    return (
        f"study {study_name!r} has used its budget of {n_trials} trials; {command} with "
        f"--n-trials {n_trials + more} to run {more} more"
    )
