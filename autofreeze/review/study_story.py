"""A study told in words: how the best plan differs from each textbook recipe, whether the
search was still improving, the note optuna-dashboard shows on the study's page.

Like :mod:`autofreeze.review.story`, it reads only what :mod:`autofreeze.study.records` stores.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autofreeze.review.story import freezes_blocks, md_table, plan_words, trial_title
from autofreeze.study import records


def searched(t: FrozenTrial) -> bool:
    """Whether the sampler chose the trial: not a textbook recipe, not one of the probe's
    plans (both enqueued), not a re-run."""
    return records.name(t) == records.SEARCHED


def trial_kind(t: FrozenTrial) -> str:
    """What a trial is, for a label: ``searched`` (the sampler chose it), ``recipe lp_ft`` (a
    textbook recipe), ``warm start other#12`` (an earlier study's plan), ``portfolio plan
    deep_ft``, ``probe plan probe_k3 (prior)`` or ``re-run of trial 4`` (no quote marks: the
    report escapes them)."""
    again = records.reevaluation_of(t)
    if again is not None:
        return f"re-run of trial {again}"
    kind = records.kind(t)
    if kind == "recipe":
        return f"recipe {records.baseline(t)}"
    if kind == records.WARM:
        return f"warm start {records.name(t)}"
    if kind == records.PORTFOLIO:
        return f"portfolio plan {records.name(t)}"
    return "searched" if searched(t) else f"probe plan {records.name(t)} (prior)"


# "settled" needs this many searched trials in all, and a quarter of them (at least 3) after
# the last better plan: the enqueued recipes and priors are the same in every study and say
# nothing about whether the sampler still finds better plans
SETTLED_MIN_SEARCHED = 5


def settled_after(n_searched: int) -> int:
    """How many searched trials without a better plan say the search had settled."""
    return max(3, n_searched // 4)


def improving(study: optuna.Study) -> str:
    """Whether the search was still finding better plans when it stopped, in words.

    Only trials the sampler chose count as searching; "settled" is said when at least
    :data:`SETTLED_MIN_SEARCHED` of them ran and :func:`settled_after` of them ran after the
    last better plan, and a search too short to tell says so.
    """
    finished = [
        t
        for t in study.get_trials(deepcopy=False)
        if records.counts(t) and records.metric_value(t) is not None
    ]
    if not finished:
        return "no finished trial yet"
    sign = 1 if records.maximizes(study) else -1
    best, last_gain, gains = None, 0, 0
    for i, t in enumerate(finished):
        v = records.metric_value(t)
        # a pruned trial's value is where it stopped: never the best single run
        if t.state == TrialState.COMPLETE and (best is None or sign * (v - best) > 0):
            best, last_gain, gains = v, i + 1, gains + 1
    if not gains:
        return "no trial has run to the end yet"
    n = len(finished)
    found = trial_kind(finished[last_gain - 1])
    n_searched = sum(searched(t) for t in finished)
    since = sum(searched(t) for t in finished[last_gain:])
    return (
        f"the best single-run value was found at finished trial {last_gain} of {n} ({found}; "
        f"{gains} better plan{'s' if gains != 1 else ''} in all); {since} searched "
        f"trial{'s' if since != 1 else ''} since; {verdict(n, n_searched, since)}"
    )


def verdict(n: int, n_searched: int, since: int) -> str:
    """Settled, still improving, or too short to tell, from the searched trials' counts."""
    if n_searched < SETTLED_MIN_SEARCHED:
        return (
            f"only {n_searched} trial{'s' if n_searched != 1 else ''} of {n} "
            f"{'was' if n_searched == 1 else 'were'} searched (the others ran enqueued plans: "
            "textbook recipes and the plans of the probe): too few to tell whether the search "
            "had settled; raise n_trials (--n-trials)"
        )
    if since < settled_after(n_searched):
        return "still improving: raise the budget (--n-trials) to search on"
    return f"it had settled: no better plan in the last {since} searched trials"


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
        if key == "bn_mode" and not (freezes_blocks(mine) or freezes_blocks(other)):
            continue  # it acts in frozen blocks only, and neither plan has one
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
