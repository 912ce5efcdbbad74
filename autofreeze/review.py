"""What a reviewer reads: trial rows, the best plan, the comparison with the baselines."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


def trial_row(t: FrozenTrial) -> dict[str, Any]:
    plan = t.user_attrs.get("plan", {})
    return {
        "number": t.number,
        "name": t.user_attrs.get("baseline", ""),
        "state": t.state.name,
        "value": t.value,
        "boundary": plan.get("boundary"),
        "schedule": plan.get("schedule"),
        "knobs": ",".join(f"{k}={_fmt(v)}" for k, v in plan.get("schedule_params", {}).items()),
        "init": plan.get("init"),
        "head_lr": plan.get("head_lr"),
        "backbone_lr_ratio": plan.get("backbone_lr_ratio"),
        "layer_decay": plan.get("layer_decay"),
        "bn_mode": plan.get("bn_mode"),
        "frozen_fraction": t.user_attrs.get("frozen_param_fraction"),
        "epochs_run": len(t.intermediate_values),
        "seconds": t.user_attrs.get("seconds"),
        "reason": t.user_attrs.get("fail_reason", ""),
    }


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    return [trial_row(t) for t in study.get_trials(deepcopy=False)]


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def best_summary(study: optuna.Study) -> dict[str, Any]:
    best = best_trial(study)
    if best is None:
        return {"study": study.study_name, "best": None}
    return {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "best": {
            "number": best.number,
            "value": best.value,
            "name": best.user_attrs.get("baseline") or "searched",
            "plan": best.user_attrs.get("plan"),
            "params": best.params,
            "frozen_blocks": best.user_attrs.get("frozen_blocks"),
            "cost": {
                k: best.user_attrs.get(k)
                for k in (
                    "seconds",
                    "train_examples_per_second",
                    "trainable_params",
                    "peak_memory_mb",
                )
            },
        },
    }


def comparison(study: optuna.Study) -> list[dict[str, Any]]:
    """The best searched plan next to every baseline (what the search bought)."""
    rows = []
    best = best_trial(study)
    for t in study.get_trials(deepcopy=False):
        if "baseline" in t.user_attrs:
            row = trial_row(t)
            row["recipe"] = t.user_attrs["baseline"]
            rows.append(row)
    if best is not None:
        row = trial_row(best)
        row["recipe"] = f"BEST (trial {best.number})"
        rows.insert(0, row)
    finished = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]
    for row in rows:
        row["of"] = len(finished)
    return rows
