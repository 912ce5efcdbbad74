"""What a reviewer reads: trial rows, the best plan, the comparison with the baselines, and
the terminal tables and progress lines they are printed as."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autofreeze import records
from autofreeze.study import best_trial

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


def trial_row(t: FrozenTrial) -> dict[str, Any]:
    plan = records.plan(t)
    return {
        "number": t.number,
        "name": "" if records.name(t) == records.SEARCHED else records.name(t),
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
        "frozen_fraction": t.user_attrs.get(records.FROZEN_PARAM_FRACTION),
        "epochs_run": len(t.intermediate_values),
        "seconds": t.user_attrs.get(records.SECONDS),
        "reason": records.fail_reason(t),
    }


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    return [trial_row(t) for t in study.get_trials(deepcopy=False)]


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
            "name": records.name(best),
            "plan": best.user_attrs.get(records.PLAN),
            "params": best.params,
            "frozen_blocks": best.user_attrs.get(records.FROZEN_BLOCKS),
            "cost": {k: best.user_attrs.get(k) for k in records.COST},
            # after re-evaluation: the mean over seeds, its 95 % half-width, the runs
            "reevaluation": study.user_attrs.get(records.CHOICE),
        },
    }


def comparison(study: optuna.Study) -> list[dict[str, Any]]:
    """The best searched plan next to every baseline (what the search bought)."""
    trials = study.get_trials(deepcopy=False)
    rows = [{**trial_row(t), "recipe": records.baseline(t)} for t in trials if records.baseline(t)]
    best = best_trial(study)
    if best is not None:
        rows.insert(0, {**trial_row(best), "recipe": f"BEST (trial {best.number})"})
    finished = sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED) and records.reevaluation_of(t) is None
        for t in trials
    )
    for row in rows:
        row["of"] = finished
    return rows


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Left-aligned text columns; floats with 4 significant digits."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def trial_line(
    study: optuna.Study,
    last: FrozenTrial,
    ran: int,
    n_trials: int | None,
    t0: float,
    timeout: float | None,
) -> str:
    """One progress line per finished trial: outcome, best so far, budget and time left."""
    value = "-" if last.value is None else f"{last.value:.4f}"
    best = best_trial(study)
    elapsed = time.perf_counter() - t0
    done, _ = records.budget(study.get_trials(deepcopy=False))
    budget = f"{done}/{n_trials} done" if n_trials else f"{done} done"
    left = ""
    if n_trials:
        left = f", ~{max(0.0, elapsed / max(1, ran) * (n_trials - done)):.0f}s left"
    if timeout:
        left += f", timeout in {max(0.0, timeout - elapsed):.0f}s"
    reason = records.fail_reason(last)
    return (
        f"#{last.number} {records.name(last)} {last.state.name.lower()}"
        f"{' (' + reason + ')' if reason else ''}"
        f" value={value} best={'-' if best is None else f'{best.value:.4f} (#{best.number})'}"
        f" | {budget}, {elapsed:.0f}s elapsed{left}"
    )


def probe_lines(result: Any) -> list[str]:
    """The probe's curve as a bar chart, then the quadrant and the recommendation."""
    blocks = result.blocks
    width = max(len(b["name"]) for b in blocks)
    lines = [
        "transferability probe: a linear probe on each block's features "
        f"(validation accuracy; chance {result.chance:.2f})"
    ]
    for b in blocks:
        bar = "#" * round(b["val_accuracy"] * 30)
        lines.append(f"  {b['index']:>3} {b['name']:<{width}} {b['val_accuracy']:.3f} {bar}")
    lines.append(
        f"  {result.size} target ({result.per_class:g} images per class), "
        f"{result.similarity} to the source: {result.recommendation} (boundary {result.boundary})"
    )
    return lines
