"""The report of a study: one self-contained HTML page (plotly.js embedded once, no URL to
fetch; the tables carry the facts without JavaScript), or the same facts as Markdown for an
issue or a pull request. Read from the study's records only (:mod:`autofreeze.review.story`,
:mod:`autofreeze.review.figures`, :mod:`autofreeze.review.summary`)."""

from __future__ import annotations

import html
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autofreeze.errors import ConfigError, StorageError
from autofreeze.review import figures, story, study_story
from autofreeze.review.format import number
from autofreeze.review.summary import TRIAL_COLUMNS, trial_row, trial_rows
from autofreeze.study import best_trial, records
from autofreeze.study.results import pareto_front

FORMATS = ("html", "md")
TOP = 5  # trials whose learning curves the report shows
TOP_COLUMNS = ("number", "name", "value", "boundary", "schedule", "head_lr", "seconds")
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1150px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.num{text-align:right}.note{color:#555}
.scroll{overflow-x:auto}details{margin:.5em 0}
""" + "".join(f"td.{s}{{background:{c}}}" for s, c in figures.COLOURS.items())


@dataclass
class Rendered:
    """A rendered report: its text, format and the titles of its sections."""

    text: str
    fmt: str
    sections: list[str] = field(default_factory=list)

    def write(self, out: Path) -> Path:
        """Write the report to ``out`` (atomically: a reader never sees half a page); an
        ``OSError`` if it cannot be written."""
        out = Path(out)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(self.text, encoding="utf-8")
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        return out


def write_report(study: optuna.Study, metric: str, out: Path, fmt: str = "html") -> Path:
    """Write the report of ``study`` to ``out`` as ``html`` or ``md``; the path written."""
    return render_report(study, metric, fmt).write(out)


def render_report(study: optuna.Study, metric: str, fmt: str = "html") -> Rendered:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format {fmt!r} (formats: {', '.join(FORMATS)})")
    if best_trial(study) is None:
        raise StorageError(f"study {study.study_name!r} has no finished trial yet; no report")
    return _html(study, metric) if fmt == "html" else _markdown(study, metric)


# -- the facts both formats show ---------------------------------------------------------------
def summary(study: optuna.Study, metric: str) -> list[tuple[str, str]]:
    """Name, metric and direction, trials by state, trial time, the best, search progress."""
    trials = study.get_trials(deepcopy=False)
    again = len(records.reruns(study))
    states = Counter(t.state.name.lower() for t in trials if records.reevaluation_of(t) is None)
    best = best_trial(study)
    direction = study.directions[0].name.lower()
    more = (
        f", then {len(study.directions) - 1} costs minimised" if len(study.directions) > 1 else ""
    )
    rows = [
        ("study", study.study_name),
        ("metric", f"{metric} ({direction}d{more})"),
        ("trials", ", ".join(f"{n} {s}" for s, n in states.most_common())),
        ("re-evaluations", f"{again} runs of the top plans with other seeds" if again else ""),
        (
            "total trial time",
            f"{sum(records.seconds(t) or 0 for t in trials):.0f} s",
        ),
    ]
    if best is not None:
        v = figures.value(best)
        shown = "-" if v is None else f"{v:.4f}"
        rows.append(("best", f"{story.trial_title(best)}: {metric} {shown}"))
    choice = records.choice(study)
    if choice:
        ci = f" ± {choice['ci95']:.4f}" if choice.get("ci95") is not None else ""
        rows.append(
            (
                "best after re-evaluation",
                f"mean {choice['mean']:.4f}{ci} (95 %) over {len(choice['values'])} runs",
            )
        )
    rows.append(("search progress", study_story.improving(study)))
    return [(k, v) for k, v in rows if v]


FRONT_WORDS = (
    "The plans no other plan beats on every objective, best metric first; "
    "`autofreeze train CONFIG --trial N` trains any of them."
)


def front_table(study: optuna.Study) -> tuple[list[str], list[list[Any]]]:
    """A multi-objective study's Pareto front: each plan's values and its plan in words."""
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    rows = [
        [f"trial {t.number} ({records.name(t)})", *t.values, _plan_line(t)]
        for t in pareto_front(study)
    ]
    return ["trial", *names, "plan"], rows


def top_trials(study: optuna.Study, k: int = TOP) -> list[FrozenTrial]:
    return sorted(figures.runs(study), key=figures.value, reverse=records.maximizes(study))[:k]


def _plan_line(t: FrozenTrial) -> str:
    return story.plan_words(records.plan(t), records.n_blocks(t))


# -- HTML ----------------------------------------------------------------------------------------
def _e(v: Any) -> str:
    return html.escape(number(v, 4, missing=""))


def _td(v: Any) -> str:
    return f'<td class="num">{_e(v)}</td>' if isinstance(v, int | float) else f"<td>{_e(v)}</td>"


def html_table(header: list[str], rows: list[list[Any]], attrs: str = "") -> str:
    body = "".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in rows)
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    return f'<div class="scroll"><table{attrs}><tr>{head}</tr>{body}</table></div>'


def label_table(rows: list[tuple[str, Any]]) -> str:
    """Facts as label and value, each label the header of its row (no column headers)."""
    body = "".join(f'<tr><th scope="row">{_e(k)}</th>{_td(v)}</tr>' for k, v in rows)
    return f'<div class="scroll"><table>{body}</table></div>'


def freeze_map_html(fm: story.FreezeMap, trial: int | None = None) -> str:
    """The freeze map as a table of coloured cells: frozen, cached, or the LR it trains at."""
    head = "<th>block</th>" + "".join(f"<th>ep {e}</th>" for e in fm.epochs)
    rows = []
    for (name, shown), cells in zip(fm.rows(), fm.cells, strict=True):
        tds = "".join(
            f'<td class="{c}" title="{c}">{_e(s)}</td>' for s, c in zip(shown, cells, strict=True)
        )
        rows.append(f"<tr><th>{_e(name)}</th>{tds}</tr>")
    key = f' data-trial="{trial}"' if trial is not None else ""
    frozen = (
        f"<b>frozen</b>: no gradient, BatchNorm <code>{_e(fm.bn_mode)}</code>; <b>cached</b>: "
        "frozen, its output read from the cache; "
        if fm.froze
        else ""
    )
    legend = f'<p class="note">{frozen}a number: the block trains at that learning rate.</p>'
    table = f'<table class="freeze-map"{key}><tr>{head}</tr>{"".join(rows)}</table>'
    return f'<div class="scroll">{table}</div>{legend}'


def _figure(fig: Any, div_id: str) -> str:
    height = fig.layout.height or 460
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        default_height=f"{height}px",
        config={"displaylogo": False, "responsive": True},
    )


def _html(study: optuna.Study, metric: str) -> Rendered:
    from plotly.offline import get_plotlyjs

    best = best_trial(study)
    assert best is not None
    figs = figures.study_figures(study, metric)
    parts: list[str] = []
    sections: list[str] = []

    def section(title: str, *body: str) -> None:
        sections.append(title)
        anchor = f"s{len(sections)}"
        parts.append(
            f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{"".join(body)}</section>'
        )

    def fig(key: str) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")
        return _figure(figs[key], f"fig-{slug}") if key in figs else ""

    section("Summary", label_table(summary(study, metric)))
    if len(study.directions) > 1:
        header, rows = front_table(study)
        section("Pareto front", f"<p>{FRONT_WORDS}</p>", html_table(header, rows, ' id="front"'))
    probe = records.probe(study)
    if probe:
        rows = [[b["index"], b["name"], b["val_accuracy"]] for b in probe.get("blocks", [])]
        section(
            "Transferability probe",
            f"<p>{html.escape(probe.get('recommendation', ''))} (boundary "
            f"{_e(probe.get('boundary'))}; chance {_e(probe.get('chance'))}).</p>",
            fig(figures.PROBE_FIGURE),
            html_table(["block", "name", "linear-probe val_accuracy"], rows),
        )
    fm = story.freeze_map(best)
    section(
        f"Best plan: {story.trial_title(best)}",
        f"<p><b>{html.escape(story.outcome(best, metric))}</b></p>",
        f"<p>Plan: {html.escape(_plan_line(best))}.</p>",
        "<h3>Freeze map</h3>" + freeze_map_html(fm, best.number) if fm else "",
        "<h3>Cost</h3>" + html_table(["", "value"], story.cost_rows(best)),
    )
    recipes = study_story.recipe_rows(study, best)
    section(
        "Best against the textbook recipes",
        html_table(study_story.recipe_header(metric), recipes, ' id="baselines"')
        if recipes
        else "<p>No textbook recipe ran in this study.</p>",
        fig(figures.BASELINES_FIGURE),
    )
    for key, title in (
        (figures.BOUNDARY_FIGURE, f"{metric} by frozen blocks"),
        (figures.SECONDS_FIGURE, f"{metric} against wall time"),
        (figures.PARAMS_FIGURE, f"{metric} against trainable parameters"),
        (figures.IMPORTANCE_FIGURE, "Parameter importance"),
    ):
        if key in figs:
            section(title, fig(key))
    section(
        "Search history",
        f"<p>{html.escape(study_story.improving(study))}.</p>",
        fig(figures.HISTORY_FIGURE),
    )
    curves = []
    for t in top_trials(study):
        tm = story.freeze_map(t)
        curves.append(
            f"<h3>{html.escape(story.trial_title(t))}</h3><p>{html.escape(_plan_line(t))}.</p>"
            + _figure(figures.trial_figure(t, metric), f"fig-trial-{t.number}")
            + (
                f"<details><summary>freeze map</summary>{freeze_map_html(tm, t.number)}</details>"
                if tm
                else ""
            )
        )
    section(f"Learning curves of the top {len(curves)} trials", *curves)
    rows = [[r.get(c) for c in TRIAL_COLUMNS] for r in trial_rows(study)]
    header = [metric if c == "value" else c for c in TRIAL_COLUMNS]
    section("Every trial", html_table(header, rows, ' id="trials"'))
    title = html.escape(f"autofreeze report: {study.study_name}")
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body><h1>{title}</h1>{''.join(parts)}</body></html>\n"
    )
    return Rendered(page, "html", sections)


# -- Markdown ------------------------------------------------------------------------------------
def _markdown(study: optuna.Study, metric: str) -> Rendered:
    best = best_trial(study)
    assert best is not None
    sections = ["Summary", "Best plan", "Best against the textbook recipes", "Top trials"]
    lines = [f"# autofreeze report: {study.study_name}", ""]
    lines += [f"- **{k}**: {v}" for k, v in summary(study, metric)] + [""]
    if len(study.directions) > 1:
        sections.insert(1, "Pareto front")
        lines += ["## Pareto front", "", FRONT_WORDS, "", story.md_table(*front_table(study)), ""]
    lines += [f"## Best plan: {story.trial_title(best)}", "", f"**{story.outcome(best, metric)}**"]
    lines += ["", f"Plan: {_plan_line(best)}.", ""]
    fm = story.freeze_map(best)
    if fm is not None:
        lines += ["### Freeze map", "", story.freeze_map_markdown(fm), ""]
    rows = study_story.recipe_rows(study, best)
    lines += ["## Best against the textbook recipes", ""]
    none = "No textbook recipe ran in this study."
    lines += [story.md_table(study_story.recipe_header(metric), rows) if rows else none, ""]
    ranked = [trial_row(t) for t in top_trials(study)]
    header = [metric if c == "value" else c for c in TOP_COLUMNS]
    lines += [f"## Top {len(ranked)} trials", ""]
    lines += [story.md_table(header, [[r.get(c) for c in TOP_COLUMNS] for r in ranked])]
    return Rendered("\n".join(lines) + "\n", "md", sections)
