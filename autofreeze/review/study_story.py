"""A study told in words: how the best plan differs from each textbook recipe, whether the
search was still improving, the note optuna-dashboard shows on the study's page.

Like :mod:`autofreeze.review.story`, it reads only what :mod:`autofreeze.study.records` stores.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autofreeze.review.story import md_table, plan_words, trial_title
from autofreeze.study import records


def improving(study: optuna.Study) -> str:
    """Whether the search was still finding better plans when it stopped, in words."""
    counted = [
        t
        for t in study.get_trials(deepcopy=False)
        if records.counts(t) and records.metric_value(t) is not None
    ]
    if not counted:
        return "no finished trial yet"
    sign = 1 if records.maximizes(study) else -1
    best, last_gain, gains = None, 0, 0
    for i, t in enumerate(counted):
        v = records.metric_value(t)
        if best is None or sign * (v - best) > 0:
            best, last_gain, gains = v, i + 1, gains + 1
    n = len(counted)
    since = n - last_gain
    verdict = (
        "still improving: raise the budget (--n-trials) to search on"
        if since < max(3, n // 4)
        else "it had settled: no better plan in the last trials"
    )
    return (
        f"the best single-run value was found at finished trial {last_gain} of {n} "
        f"({gains} better plan{'s' if gains != 1 else ''} in all); "
        f"{since} trials since; {verdict}"
    )


DIFF_FIELDS = (
    ("boundary", "frozen blocks"),
    ("schedule", "schedule"),
    ("head_lr", "head LR"),
    ("backbone_lr_ratio", "backbone LR ratio"),
    ("layer_decay", "layer decay"),
    ("weight_decay", "weight decay"),
    ("bn_mode", "BatchNorm"),
    ("init", "init"),
    ("augment", "augment"),
)


def plan_diff(mine: dict[str, Any], other: dict[str, Any]) -> str:
    """How plan ``mine`` differs from ``other``: ``frozen blocks 3 (vs 0); head LR 0.0031
    (vs 0.01)``; knobs are compared when the schedules agree."""

    def show(v: Any) -> str:
        return f"{v:.2g}" if isinstance(v, float) else str(v)

    out = []
    for key, label in DIFF_FIELDS:
        a, b = mine.get(key), other.get(key)
        if a is None and b is None:
            continue
        same = a == b or (isinstance(a, float) and isinstance(b, float) and abs(a - b) <= 1e-9)
        if not same:
            out.append(f"{label} {show(a)} (vs {show(b)})")
    if mine.get("schedule") == other.get("schedule"):
        for k, v in (mine.get("schedule_params") or {}).items():
            w = (other.get("schedule_params") or {}).get(k)
            if v != w:
                out.append(f"{k} {show(v)} (vs {show(w)})")
    return "; ".join(out) or "the same plan"


def recipe_header(metric: str) -> list[str]:
    return ["textbook recipe", metric, "best's lead", "the best plan differs in"]


def recipe_rows(study: optuna.Study, best: FrozenTrial) -> list[list[Any]]:
    """Each textbook recipe's run (a retry stands for the run it replaced): its value, the
    best's lead over it (positive: the best is better) and how the best plan differs."""
    out, bv, plan = [], records.metric_value(best), records.plan(best)
    sign = 1 if records.maximizes(study) else -1
    for t in study.get_trials(deepcopy=False):
        if not (records.baseline(t) and records.counts(t)):
            continue
        v = records.metric_value(t)
        lead = None if v is None or bv is None else f"{sign * (bv - v):+.4f}"
        where = (
            "(the best plan itself)"
            if t.number == best.number
            else plan_diff(plan, records.plan(t))
        )
        out.append([f"{records.baseline(t)} (trial {t.number})", v, lead, where])
    return out


def study_note(study: optuna.Study, metric: str, report_hint: str = "") -> str:
    """The Markdown note on the study's page: the best plan against every baseline, whether
    the search was still improving, and where the report is."""
    from autofreeze.study import best_trial

    trials = study.get_trials(deepcopy=False)
    done = sum(records.counts(t) for t in trials)
    lines = [f"## {study.study_name}: which freeze plan wins on {metric}", ""]
    best = best_trial(study)
    if best is None:
        return "\n".join([*lines, "No finished trial yet.", ""])
    bplan = records.plan(best)
    n = records.n_blocks(best)
    lines += [
        f"**Best: {trial_title(best)}**, {metric} {records.metric_value(best):.4f} after "
        f"{done} trials.",
        "",
        f"Plan: {plan_words(bplan, n)}.",
        "",
    ]
    choice = records.choice(study)
    if choice:
        ci = f" ± {choice['ci95']:.4f}" if choice.get("ci95") is not None else ""
        lines += [
            f"Re-run with {len(choice['values'])} seeds: mean {choice['mean']:.4f}{ci} (95 %).",
            "",
        ]
    rows = recipe_rows(study, best)
    if rows:
        lines += [
            "### Best against the textbook recipes",
            "",
            md_table(recipe_header(metric), rows),
        ]
        lines += [""]
    lines += [f"Search progress: {improving(study)}.", ""]
    if report_hint:
        lines += [report_hint, ""]
    return "\n".join(lines)
