"""The figures of a study, drawn only from what :mod:`autofreeze.study.records` stores (read through
:mod:`autofreeze.review.story`): the probe's curve, the best plan against the textbook recipes, the
metric by boundary and against cost (with the Pareto front), parameter importance and the
search history; and each trial's figure (:mod:`autofreeze.review.trial_figures`, plotly and PNG).

A study-level figure is None where it cannot say anything (too few trials, no probe). The
metric is a trial's first value, so a multi-objective study draws its metric the same way.

Every figure is read in a half-width card of optuna-dashboard (about 560 pixels wide in a 1280
pixel window): a short title, its details wrapped below it in smaller type (:func:`titled`),
axis titles of a few words, long category labels given their margin, bar values clear of the
error bars and recipe labels that do not overlap. tests/review/test_browser.py measures what the
browser draws.
"""

from __future__ import annotations

import html
import textwrap
import warnings
from dataclasses import dataclass
from typing import Any

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
TITLE_CHARS = 50  # a title line at 16 px that a half-width dashboard card shows whole
DETAIL_CHARS = 76  # a detail line under it, at 12 px
LABEL_GAP = 15  # pixels between two recipe labels of the boundary chart (10 px type)
MODEBAR = 30  # pixels of plotly's modebar at the top of a figure: the title starts below
NARROW_PLOT = 280  # pixels: the narrowest plot area the recipe labels are laid out for
LABEL_CHAR = 6.5  # pixels a character of a 10 px label takes (at most)
ARROW = 24  # pixels from a recipe's point to its label
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


def titled(title: str, detail: str = "", bottom: int = 60) -> dict[str, Any]:
    """Layout keywords for a title that fits a half-width card: ``title`` in 16 px type (lines
    of :data:`TITLE_CHARS`), ``detail`` in 12 px type below it (lines of
    :data:`DETAIL_CHARS`), both below the card's modebar (its buttons, top right), and the top
    margin they take (``bottom``: the bottom margin)."""
    heads = textwrap.wrap(html.escape(title, quote=False), TITLE_CHARS) or [""]
    lines = textwrap.wrap(html.escape(detail, quote=False), DETAIL_CHARS)
    big = [f"<span style='font-size:16px'>{line}</span>" for line in heads]
    return {
        "title": {
            "text": "<br>".join([*big, *lines]),
            "x": 0.02,
            "xanchor": "left",
            "yref": "container",
            "y": 1,
            "yanchor": "top",
            # plotly.js 2.35 (optuna-dashboard's) sets the text's top 14 px above this pad
            "pad": {"t": MODEBAR + 14},
            "font": {"size": 12},  # plotly spaces the lines by it: 16 px apart
        },
        "margin": {
            **LAYOUT["margin"],
            "t": MODEBAR + 14 + 16 * (len(heads) + len(lines)),
            "b": bottom,
        },
    }


# -- the study -----------------------------------------------------------------------------------
@dataclass
class _Label:
    """A recipe's label on the boundary chart: its point, the side it stands on and the span
    of x (in data units) it may cover."""

    t: FrozenTrial
    x: float
    wanted: float  # pixels from the plot's top: the point's height
    left: bool
    span: tuple[float, float]
    y: float = 0.0  # where it stands, pixels from the plot's top


def _recipe_labels(fig: go.Figure, done: list[FrozenTrial], top: int, bottom: int) -> None:
    """Name each recipe's point on the boundary chart, an arrow from the label to the point:
    right of it (left at the last boundary), as near its height as it can stand without
    overlapping another label. Heights are in pixels (the figure's height is fixed); widths
    depend on the card, so two labels count as side by side wherever they could meet in a plot
    area as narrow as :data:`NARROW_PLOT`."""
    lo, hi = fig.layout.yaxis.range
    x_lo, x_hi = fig.layout.xaxis.range
    inside = fig.layout.height - top - bottom  # the plot area's height in pixels
    per_pixel, per_x = (hi - lo) / inside, (x_hi - x_lo) / NARROW_PLOT
    last = max(records.plan(t).get("boundary", 0) for t in done)
    labels = []
    for t in sorted((t for t in done if records.baseline(t)), key=lambda t: (-value(t), t.number)):
        k = records.plan(t).get("boundary", 0)
        x, left = k + _jitter(t), k == last and k > 0
        width = (ARROW + LABEL_CHAR * len(records.baseline(t)) + 8) * per_x
        span = (x - width, x) if left else (x, x + width)
        labels.append(_Label(t, x, (hi - value(t)) / per_pixel, left, span))
    placed: list[_Label] = []
    for label in labels:
        label.y = _free_height(label, placed, inside)
        placed.append(label)
        fig.add_annotation(
            x=label.x,
            y=value(label.t),
            text=records.baseline(label.t),
            showarrow=True,
            arrowhead=0,
            arrowcolor="#999",
            ax=-ARROW if label.left else ARROW,
            ay=label.y - label.wanted,
            xanchor="right" if label.left else "left",
            font={"size": 10},
            bgcolor="rgba(255,255,255,0.85)",
        )


def _free_height(label: _Label, placed: list[_Label], inside: float) -> float:
    """The height nearest the label's point where it keeps :data:`LABEL_GAP` from every placed
    label beside it, within the plot area."""
    beside = [p.y for p in placed if p.span[0] < label.span[1] and label.span[0] < p.span[1]]
    steps = (label.wanted + d * s * LABEL_GAP / 3 for s in range(200) for d in (1, -1))
    for y in steps:
        if LABEL_GAP / 2 <= y <= inside - LABEL_GAP / 2 and all(
            abs(y - other) >= LABEL_GAP for other in beside
        ):
            return y
    return label.wanted  # no room left: at its point


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
    values = [value(t) for t in done]
    pad = max(max(values) - min(values), 0.05) * 0.08
    head = titled(
        f"{metric} by frozen blocks",
        "Each point a trial at its boundary (the blocks below it never train), coloured by "
        "schedule; diamonds: the textbook recipes.",
    )
    fig.update_layout(
        **{**LAYOUT, **head},
        xaxis={
            "title": "frozen blocks (the boundary)",
            "dtick": 1,
            "range": [-0.7, max(records.plan(t).get("boundary", 0) for t in done) + 0.7],
        },
        yaxis={"title": metric, "range": [min(values) - pad, max(values) + pad]},
        legend_title="schedule",
    )
    _recipe_labels(fig, done, head["margin"]["t"], head["margin"]["b"])
    return fig


def baselines_vs_best(study: optuna.Study, metric: str) -> go.Figure | None:
    """A bar per textbook recipe, for the best searched plan (the sampler's best trial), the
    probe's, the warm start's and the portfolio's best plans, each named by what it is, the
    chosen plan in red; re-evaluated plans show the mean over their seeds with its 95 %
    interval."""
    top = best_trial(study)
    pick = max if records.maximizes(study) else min
    done = runs(study)
    sampled = [t for t in done if study_story.searched(t)]
    priors = [t for t in done if records.kind(t) == records.PRIOR]
    warm = [t for t in done if records.kind(t) == records.WARM]
    portfolio = [t for t in done if records.kind(t) == records.PORTFOLIO]
    bests = [pick(ts, key=value) for ts in (sampled, priors, warm, portfolio) if ts]
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
            hovertext=[r[4] for r in rows],
            hoverinfo="text",
        )
    )
    shown = ["each textbook recipe"] + ["the best searched plan"] * bool(sampled)
    shown += ["the probe's best plan (prior)"] * bool(priors)
    shown += ["the best plan from an earlier study (warm start)"] * bool(warm)
    shown += ["the portfolio's best plan"] * bool(portfolio)
    named = f"Red: the chosen plan, trial {top.number} ({study_story.trial_kind(top)})."
    again = " A re-run plan shows its mean over seeds with the 95 % interval." * bool(means)
    head = titled(
        f"{metric}: best plan vs the recipes", f"Bars: {', '.join(shown)}. {named}{again}"
    )
    fig.update_layout(
        **{**LAYOUT, **head},
        xaxis_title=metric + (" (mean of re-runs, 95 % interval)" * bool(means)),
        # each bar's value beside its name, where no error bar can cover it; never cut
        yaxis={
            "automargin": True,
            "tickmode": "array",
            "tickvals": [r[1] for r in rows],
            "ticktext": [f"{r[1]}  {r[0]:.4f}" for r in rows],
        },
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
    words = COST_WORDS.get(cost, cost)
    head = titled(
        f"{metric} against {words.split(' (')[0]}",
        "Each point a trial; the line is the Pareto front: the best value for its cost.",
    )
    fig.update_layout(
        **{**LAYOUT, **head},
        xaxis={"title": words, "type": "log" if log else "linear"},
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
    head = titled(f"what moved {metric}", "fANOVA importance over the complete trials.")
    fig.update_layout(
        **{**LAYOUT, **head},
        xaxis_title=f"importance for {metric} (share of its variance)",
        yaxis={"automargin": True},
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
    head = titled(
        f"{metric} by trial, and the best so far",
        f"{sum(study_story.searched(t) for t in counted)} of {len(counted)} trials searched, "
        "the others enqueued (the textbook recipes, the probe's plans).",
    )
    fig.update_layout(**{**LAYOUT, **head}, xaxis_title="trial number", yaxis_title=metric)
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
    recommended = probe.get("recommendation", "")
    fig.update_layout(
        **{**LAYOUT, **titled("linear probe on each block's features", recommended)},
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
