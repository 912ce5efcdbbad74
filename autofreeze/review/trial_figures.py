"""One trial's figure: its learning curves over the epochs (phase changes marked) above its
freeze map (blocks by epochs: frozen, cached, training at an LR), drawn only from what
:mod:`autofreeze.study.records` stores. :func:`trial_figure` is plotly, for the report;
:func:`trial_png` the same panels by matplotlib into a PNG, the artifact optuna-dashboard shows
(plotly cannot write a PNG offline).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from optuna.trial import FrozenTrial

from autofreeze.review import story
from autofreeze.study import records

COLOURS = {story.FROZEN: "#b8c0cc", story.CACHED: "#4c78a8", story.TRAINING: "#f58518"}
STATES = (story.FROZEN, story.CACHED, story.TRAINING)
# 450 px: the height optuna-dashboard gives a figure of the study page (its card cuts the rest)
LAYOUT = {"template": "plotly_white", "height": 450, "margin": {"t": 70, "r": 30}}


def value(t: FrozenTrial) -> float | None:
    """The trial's metric (:func:`autofreeze.study.records.metric_value`) if it is finite."""
    v = records.metric_value(t)
    return v if v is not None and math.isfinite(v) else None


def phase_changes(history: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(epoch, what changed) where an epoch's phase, trainable blocks or cache differ."""
    out = []
    for before, h in zip(history, history[1:], strict=False):
        words = [str(h.get("phase"))] if h.get("phase") != before.get("phase") else []
        a, b = before.get("trainable_from"), h.get("trainable_from")
        if a is not None and b is not None and a != b:
            words.append(f"trains from block {b}")
        if before.get("cached", 0) != h.get("cached", 0):
            words.append(f"{h.get('cached', 0)} cached")
        if words:
            out.append((h["epoch"], ", ".join(words)))
    return out


def _map_cells(fm: story.FreezeMap) -> tuple[list[list[int]], list[list[str]], list[list[str]]]:
    """The map's state codes, cell text (a training block's LR) and hover text."""
    codes, text, tips = [], [], []
    for (name, shown), cells in zip(fm.rows(), fm.cells, strict=True):
        codes.append([STATES.index(c) for c in cells])
        text.append([s if c == story.TRAINING else "" for s, c in zip(shown, cells, strict=True)])
        tips.append(
            [
                f"{name}, epoch {e}: " + (f"training at LR {s}" if c == story.TRAINING else c)
                for e, s, c in zip(fm.epochs, shown, cells, strict=True)
            ]
        )
    return codes, text, tips


def _labels(fm: story.FreezeMap) -> list[str]:
    return [f"{i} {b}" for i, b in enumerate(fm.blocks[:-1])] + [fm.blocks[-1]]  # then the head


def validated(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """The epochs that were validated and their ``key`` (``val_loss``, ``val_accuracy``)."""
    points = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
    return [e for e, _ in points], [v for _, v in points]


def trial_figure(t: FrozenTrial, metric: str) -> go.Figure:
    """Learning curves over the epochs (phase changes dashed) above the trial's freeze map."""
    from plotly.subplots import make_subplots

    history = records.history(t)
    fm = story.freeze_map(t)
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.55, 0.45],
        vertical_spacing=0.1,
        specs=[[{"secondary_y": True}], [{}]],
        subplot_titles=("learning curves", "freeze map (a number: the block trains at that LR)"),
    )
    epochs = [h["epoch"] for h in history]
    fig.add_trace(
        go.Scatter(
            x=epochs,
            y=[h.get("train_loss") for h in history],
            name="train_loss",
            line={"dash": "dot"},
        ),
        row=1,
        col=1,
    )
    # validated epochs only (an epoch not validated has None): the line joins them, marked
    x, y = validated(history, "val_loss")
    fig.add_trace(go.Scatter(x=x, y=y, name="val_loss", mode="lines+markers"), row=1, col=1)
    (epochs, acc), name = validated(history, "val_accuracy"), "val_accuracy"
    if not history:  # pruned or failed before its history was written: what it reported
        epochs, acc = list(t.intermediate_values), list(t.intermediate_values.values())
        name = f"{metric} (reported)"
    fig.add_trace(
        go.Scatter(x=epochs, y=acc, name=name, mode="lines+markers", line={"color": "#54a24b"}),
        row=1,
        col=1,
        secondary_y=True,
    )
    if fm is not None:
        codes, text, tips = _map_cells(fm)
        scale = [[i / 3 + d, COLOURS[s]] for i, s in enumerate(STATES) for d in (0, 1 / 3)]
        heat = go.Heatmap(
            x=fm.epochs,
            y=_labels(fm),
            z=codes,
            zmin=-0.5,
            zmax=2.5,
            colorscale=scale,
            showscale=False,
            text=text,
            texttemplate="%{text}",
            hovertext=tips,
            hoverinfo="text",
            xgap=1,
            ygap=1,
        )
        fig.add_trace(heat, row=2, col=1)
        for s in STATES:  # the map's colours in the legend
            mark = {"color": COLOURS[s], "symbol": "square", "size": 12}
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", marker=mark, name=s))
        fig.update_yaxes(autorange="reversed", row=2, col=1)
    for epoch, label in phase_changes(history):  # after the map: no line on an empty panel
        line = {"dash": "dash", "color": "grey", "width": 1}
        text = {"annotation_text": label, "annotation_textangle": -90, "annotation_font_size": 10}
        fig.add_vline(x=epoch - 0.5, line=line, row=1, col=1, **text)
        fig.add_vline(x=epoch - 0.5, line=line, row=2, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1, secondary_y=False)
    fig.update_yaxes(title_text=name, row=1, col=1, secondary_y=True)
    fig.update_xaxes(title_text="epoch", dtick=1, row=2, col=1)
    title = f"{story.trial_title(t)}: {story.outcome(t, metric)}"
    fig.update_layout(**{**LAYOUT, "height": 760}, title=title)
    return fig


def trial_png(t: FrozenTrial, metric: str, path: Path) -> Path:
    """The two panels of :func:`trial_figure` drawn by matplotlib into a 1000x800 PNG."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure  # no pyplot: no display, no global backend
    from matplotlib.patches import Patch

    history = records.history(t)
    fm = story.freeze_map(t)
    # a fixed layout: matplotlib's constrained layout was a third of the time per figure
    fig = Figure(figsize=(10, 8), dpi=100)
    fig.subplots_adjust(left=0.17, right=0.9, top=0.87, bottom=0.14, hspace=0.3)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 2], sharex=True)
    fig.suptitle(f"{story.trial_title(t)}\n{story.outcome(t, metric)}")
    epochs = [h["epoch"] for h in history]
    if history:
        top.plot(epochs, [h.get("train_loss") for h in history], ":o", label="train_loss")
        top.plot(*validated(history, "val_loss"), "-o", label="val_loss")
        right = top.twinx()
        right.plot(*validated(history, "val_accuracy"), "-s", color="#54a24b", label="val_accuracy")
        right.set_ylabel("val_accuracy")
        lines = top.get_lines() + right.get_lines()
        top.legend(lines, [ln.get_label() for ln in lines], loc="upper right", fontsize=9)
    else:  # a trial pruned or failed before its history was written: what it reported
        reported = sorted(t.intermediate_values.items())
        top.plot([e for e, _ in reported], [v for _, v in reported], "-o", label=metric)
        top.set_title(f"no history recorded; {metric} as reported", fontsize=11)
    top.set_ylabel("loss" if history else metric)
    if history:
        top.set_title("learning curves", fontsize=11)
    for epoch, label in phase_changes(history):
        for ax in (top, bottom):
            ax.axvline(epoch - 0.5, ls="--", color="grey", lw=1)
        top.text(
            epoch - 0.45,
            0.98,
            label,
            transform=top.get_xaxis_transform(),
            fontsize=8,
            va="top",
            rotation=90,
        )
    if fm is not None:
        codes, text, _ = _map_cells(fm)
        lo, hi = fm.epochs[0] - 0.5, fm.epochs[-1] + 0.5
        bottom.imshow(
            codes,
            cmap=ListedColormap([COLOURS[s] for s in STATES]),
            vmin=-0.5,
            vmax=2.5,
            aspect="auto",
            extent=(lo, hi, len(codes) - 0.5, -0.5),
        )
        if len(fm.epochs) <= 30:
            size = 8 if len(fm.epochs) <= 12 else 6
            for r, row in enumerate(text):
                for c, s in enumerate(row):
                    bottom.text(fm.epochs[c], r, s, ha="center", va="center", fontsize=size)
        bottom.set_yticks(range(len(fm.blocks)), _labels(fm))
        handles = [Patch(color=COLOURS[s], label=s) for s in STATES]
        bottom.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
        bn = f" (BatchNorm {fm.bn_mode} in frozen blocks)" if fm.froze else ""
        bottom.set_title(f"freeze map{bn}", fontsize=11)
        bottom.set_xlabel("epoch")
        bottom.set_xticks(fm.epochs)
    else:
        bottom.set_axis_off()
        top.tick_params(labelbottom=True)
        top.set_xlabel("epoch")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
