"""The figures of a study, drawn only from what :mod:`autofreeze.study.records` stores (read through
:mod:`autofreeze.review.story`): the probe's curve, the best plan against the textbook recipes, the
metric by boundary and against cost (with the Pareto front), parameter importance and the
search history; and each trial's figure (:mod:`autofreeze.review.trial_figures`, plotly and PNG).

A study-level figure is None where it cannot say anything (too few trials, no probe). The
metric is a trial's first value, so a multi-objective study draws its metric the same way.
"""

from __future__ import annotations

import textwrap
import warnings

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from autofreeze.review import story, study_story

# a trial's figures, re-exported: figures.trial_figure, figures.trial_png
from autofreeze.review.trial_figures import COLOURS as COLOURS
from autofreeze.review.trial_figures import LAYOUT, value
from autofreeze.review.trial_figures import STATES as STATES
from autofreeze.review.trial_figures import trial_figure as trial_figure
from autofreeze.review.trial_figures import trial_png as trial_png
from autofreeze.study import best_trial, records

KIND_COLOURS = {"baseline": "#54a24b", "searched": "#4c78a8", "best": "#e45756"}
COST_WORDS = {
    records.SECONDS: "wall time (s)",
    records.TRAINABLE_PARAMS: "trainable parameters (most at once)",
    records.PEAK_MEMORY_MB: "peak memory (MB)",
}
# the keys of study_figures(), in reading order
PROBE_FIGURE = "Transferability probe"
BASELINES_FIGURE = "Best plan vs the textbook recipes"
BOUNDARY_FIGURE = "Metric vs frozen blocks"
SECONDS_FIGURE = "Metric vs wall time (Pareto front)"
PARAMS_FIGURE = "Metric vs trainable parameters (Pareto front)"
IMPORTANCE_FIGURE = "Parameter importance"
HISTORY_FIGURE = "Search history"


# -- what the figures read -----------------------------------------------------------------------
def runs(study: optuna.Study, states: tuple[TrialState, ...] = (TrialState.COMPLETE,)) -> list:
    """Trials in ``states`` with a metric, re-evaluations left out (a re-run is no new plan)."""
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in states and value(t) is not None and records.reevaluation_of(t) is None
    ]


def baselines(study: optuna.Study) -> list[FrozenTrial]:
    """The trial of each textbook recipe that counts (a retry stands for the run it replaced)."""
    return [
        t for t in study.get_trials(deepcopy=False) if records.baseline(t) and records.counts(t)
    ]


def hover(t: FrozenTrial, metric: str) -> str:
    v = value(t)
    words = textwrap.wrap(story.plan_words(records.plan(t), records.n_blocks(t)), 70)
    shown = "-" if v is None else f"{v:.4f}"
    return "<br>".join([f"<b>{story.trial_title(t)}</b>", f"{metric} {shown}", *words])


def _jitter(t: FrozenTrial) -> float:
    return ((t.number * 0.6180339) % 1.0 - 0.5) * 0.3  # fixed per trial: equal plans apart


def _kind(t: FrozenTrial) -> str:
    return "baseline" if records.baseline(t) else "searched"


# -- the study -----------------------------------------------------------------------------------
def value_vs_boundary(study: optuna.Study, metric: str) -> go.Figure | None:
    """The metric against the frozen blocks at the start, one colour per schedule."""
    done = runs(study)
    if len(done) < 2:
        return None
    fig = go.Figure()
    for schedule in sorted({records.plan(t).get("schedule", "?") for t in done}):
        ts = [t for t in done if records.plan(t).get("schedule", "?") == schedule]
        fig.add_trace(
            go.Scatter(
                x=[records.plan(t).get("boundary", 0) + _jitter(t) for t in ts],
                y=[value(t) for t in ts],
                mode="markers",
                name=schedule,
                marker={
                    "size": [13 if records.baseline(t) else 9 for t in ts],
                    "symbol": ["diamond" if records.baseline(t) else "circle" for t in ts],
                },
                hovertext=[hover(t, metric) for t in ts],
                hoverinfo="text",
            )
        )
    stacked: dict[int, int] = {}  # recipes at one boundary: their labels stand in a column
    for t in (t for t in done if records.baseline(t)):
        k = records.plan(t).get("boundary", 0)
        stacked[k] = stacked.get(k, 0) + 1
        fig.add_annotation(
            x=k + _jitter(t),
            y=value(t),
            text=records.baseline(t),
            showarrow=True,
            arrowhead=0,
            arrowcolor="#999",
            ax=0,
            ay=-18 * stacked[k],
            font={"size": 10},
        )
    fig.update_layout(
        **LAYOUT,
        title=f"{metric} by the plan's boundary (diamonds: the textbook recipes)",
        xaxis={
            "title": "frozen blocks: the boundary (the blocks below it never train)",
            "dtick": 1,
            "range": [-0.7, max(records.plan(t).get("boundary", 0) for t in done) + 0.7],
        },
        yaxis_title=metric,
        legend_title="schedule",
    )
    return fig


def baselines_vs_best(study: optuna.Study, metric: str) -> go.Figure | None:
    """A bar per textbook recipe, for the best searched plan (the sampler's best trial) and for
    the probe's best plan, each named by what it is, the chosen plan in red; re-evaluated plans
    show the mean over their seeds with its 95 % interval."""
    top = best_trial(study)
    pick = max if records.maximizes(study) else min
    done = runs(study)
    sampled = [t for t in done if study_story.searched(t)]
    priors = [t for t in done if not records.baseline(t) and not study_story.searched(t)]
    bests = [pick(ts, key=value) for ts in (sampled, priors) if ts]
    bars = {t.number: t for t in [*baselines(study), *bests, *([top] if top else [])]}
    bars = {n: t for n, t in bars.items() if value(t) is not None}  # the chosen plan among them
    if top is None or len(bars) < 2:
        return None
    choice = records.choice(study) or {}
    means = {c["trial"]: c for c in choice.get("candidates", [])}
    rows = []
    for t in bars.values():
        mean = means.get(t.number)
        enqueued = "searched" if study_story.searched(t) else "baseline"  # the probe's: green
        kind = "best" if t.number == top.number else enqueued
        name = records.baseline(t) or (
            "best searched" if study_story.searched(t) else study_story.trial_kind(t)
        )
        label = f"{'chosen plan: ' if t.number == top.number else ''}{name} (#{t.number})"
        x = mean["mean"] if mean else value(t)
        runs_word = f" (mean of {len(mean['values'])} runs)" if mean else ""
        rows.append((x, label, kind, (mean or {}).get("ci95") or 0.0, hover(t, metric) + runs_word))
    rows.sort(key=lambda r: r[0], reverse=not records.maximizes(study))  # the best at the top
    fig = go.Figure(
        go.Bar(
            orientation="h",
            x=[r[0] for r in rows],
            y=[r[1] for r in rows],
            marker_color=[KIND_COLOURS[r[2]] for r in rows],
            error_x={"type": "data", "array": [r[3] for r in rows], "visible": True},
            text=[f"{r[0]:.4f}" for r in rows],
            textposition="inside",
            hovertext=[r[4] for r in rows],
            hoverinfo="text",
        )
    )
    shown = ["each textbook recipe"] + ["the best searched plan"] * bool(sampled)
    shown += ["the probe's best plan (prior)"] * bool(priors)
    named = f"; red: the chosen plan, trial {top.number} ({study_story.trial_kind(top)})"
    fig.update_layout(
        **{**LAYOUT, "height": max(300, 60 + 45 * len(rows))},
        title=f"{metric} of {', '.join(shown)}{named}",
        xaxis_title=metric + (" (mean over seeds with 95 % interval where re-run)" * bool(means)),
    )
    return fig


def pareto(points: list[tuple[float, float]], maximise: bool) -> list[tuple[float, float]]:
    """The (cost, value) points no cheaper-or-equal point beats, by cost."""
    front: list[tuple[float, float]] = []
    sign = 1 if maximise else -1
    for cost, v in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if not front or sign * (v - front[-1][1]) > 0:
            front.append((cost, v))
    return front


def value_vs_cost(
    study: optuna.Study, metric: str, cost: str = records.SECONDS
) -> go.Figure | None:
    """The metric against a cost user attr (seconds, trainable_params, peak_memory_mb), with
    the Pareto front of the best metric for the least cost as a step line."""
    done = [t for t in runs(study) if isinstance(records.cost_value(t, cost), int | float)]
    done = [t for t in done if records.cost_value(t, cost) > 0]
    if len(done) < 2:
        return None
    fig = go.Figure()
    for kind in ("baseline", "searched"):
        ts = [t for t in done if _kind(t) == kind]
        fig.add_trace(
            go.Scatter(
                x=[records.cost_value(t, cost) for t in ts],
                y=[value(t) for t in ts],
                mode="markers",
                name=kind,
                marker={"color": KIND_COLOURS[kind], "size": 10},
                hovertext=[hover(t, metric) for t in ts],
                hoverinfo="text",
            )
        )
    points = [(records.cost_value(t, cost), value(t)) for t in done]
    front = pareto(points, records.maximizes(study))
    fig.add_trace(
        go.Scatter(
            x=[p[0] for p in front],
            y=[p[1] for p in front],
            mode="lines",
            line={"shape": "hv", "color": KIND_COLOURS["best"]},
            name="Pareto front",
        )
    )
    costs = [records.cost_value(t, cost) for t in done]
    log = max(costs) / min(costs) > 30
    fig.update_layout(
        **LAYOUT,
        title=f"{metric} against {COST_WORDS.get(cost, cost)}: the front is the best for its cost",
        xaxis={"title": COST_WORDS.get(cost, cost), "type": "log" if log else "linear"},
        yaxis_title=metric,
    )
    return fig


def param_importance(study: optuna.Study, metric: str = "value") -> go.Figure | None:
    """fANOVA importance of each searched parameter for the metric; None with fewer than 5
    complete trials or when optuna cannot compute it."""
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 5:
        return None
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(
                study, evaluator=evaluator, target=lambda t: t.values[0]
            )
    except Exception:  # noqa: BLE001 (e.g. no parameter varies across the trials)
        return None
    if not found:
        return None
    names = list(found)[::-1]  # the most important at the top
    fig = go.Figure(go.Bar(orientation="h", x=[found[n] for n in names], y=names))
    fig.update_layout(
        **{**LAYOUT, "height": max(300, 60 + 30 * len(names))},
        title=f"which searched parameters moved {metric} (fANOVA over the complete trials)",
        xaxis_title=f"importance for {metric} (share of its variance)",
    )
    return fig


def history(study: optuna.Study, metric: str) -> go.Figure | None:
    """Each finished trial's metric by trial number and the best so far: was it improving?"""
    counted = [
        t for t in study.get_trials(deepcopy=False) if records.counts(t) and value(t) is not None
    ]
    if len(counted) < 2:
        return None
    fig = go.Figure()
    groups = (
        ("baseline", lambda t: records.baseline(t) and t.state == TrialState.COMPLETE),
        ("searched", lambda t: not records.baseline(t) and t.state == TrialState.COMPLETE),
        ("pruned (value when stopped)", lambda t: t.state == TrialState.PRUNED),
    )
    for name, pick in groups:
        ts = [t for t in counted if pick(t)]
        colour = KIND_COLOURS.get(name, "#bab0ac")
        symbol = "diamond" if name == "baseline" else "x" if name.startswith("pruned") else "circle"
        fig.add_trace(
            go.Scatter(
                x=[t.number for t in ts],
                y=[value(t) for t in ts],
                mode="markers",
                name=name,
                marker={"color": colour, "symbol": symbol, "size": 10},
                hovertext=[hover(t, metric) for t in ts],
                hoverinfo="text",
            )
        )
    xs, ys, pick = [], [], max if records.maximizes(study) else min
    for t in counted:
        if t.state == TrialState.COMPLETE:
            xs.append(t.number)
            ys.append(value(t) if not ys else pick(ys[-1], value(t)))
    line = {"shape": "hv", "color": KIND_COLOURS["best"]}
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=line, name="best so far"))
    fig.update_layout(
        **LAYOUT,
        title=f"{metric} by trial and the best so far: "
        f"{sum(study_story.searched(t) for t in counted)} of {len(counted)} trials searched, "
        "the others enqueued (textbook recipes, the probe's plans)",
        xaxis_title="trial number",
        yaxis_title=metric,
    )
    return fig


def probe_curve(study: optuna.Study) -> go.Figure | None:
    """The probe's linear-probe accuracy on each block's features, its boundary marked."""
    probe = records.probe(study) or {}
    blocks = probe.get("blocks") or []
    if not blocks:
        return None
    x = [b["index"] for b in blocks]
    fig = go.Figure(
        go.Scatter(x=x, y=[b["val_accuracy"] for b in blocks], mode="lines+markers", name="probe")
    )
    if probe.get("chance") is not None:
        fig.add_hline(y=probe["chance"], line_dash="dot", annotation_text="chance")
    k = probe.get("boundary", 0)
    frozen = f"blocks 0-{k - 1} frozen" if k else "nothing frozen"
    fig.add_vline(x=k - 0.5, line_dash="dash", annotation_text=f"boundary {k}: {frozen}")
    fig.update_layout(
        **LAYOUT,
        title=f"linear probe on each block's features: {probe.get('recommendation', '')}",
        xaxis={
            "title": "block",
            "tickvals": x,
            "ticktext": [f"{b['index']} {b['name']}" for b in blocks],
        },
        yaxis_title="linear-probe val_accuracy",
    )
    return fig


def study_figures(study: optuna.Study, metric: str) -> dict[str, go.Figure]:
    """The study-level figures that can be drawn, in reading order, keyed by their titles."""
    makers = (
        (PROBE_FIGURE, lambda: probe_curve(study)),
        (BASELINES_FIGURE, lambda: baselines_vs_best(study, metric)),
        (BOUNDARY_FIGURE, lambda: value_vs_boundary(study, metric)),
        (SECONDS_FIGURE, lambda: value_vs_cost(study, metric, records.SECONDS)),
        (PARAMS_FIGURE, lambda: value_vs_cost(study, metric, records.TRAINABLE_PARAMS)),
        (IMPORTANCE_FIGURE, lambda: param_importance(study, metric)),
        (HISTORY_FIGURE, lambda: history(study, metric)),
    )
    return {key: fig for key, make in makers if (fig := make()) is not None}
