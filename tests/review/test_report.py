"""The report and its figures on a real study: one HTML file that opens offline, tables that
agree with the trials' records, axes that name the metric, Markdown with the same facts, and
the CLI's one-line errors."""

from __future__ import annotations

import html.parser
import json
import re

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from plotly.offline import get_plotlyjs

from autofreeze.config import load_config
from autofreeze.progress import quiet
from autofreeze.review import figures, story, study_story
from autofreeze.review.dashboard import Publisher
from autofreeze.review.report import freeze_map_html, render_report, write_report
from autofreeze.review.trial_figures import phase_changes
from autofreeze.search.run import run_search
from autofreeze.study import best_trial, records
from autofreeze.study.storage import load_existing_study
from tests.commands import invoke
from tests.studies import write_study

METRIC = "val_accuracy"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A 16-training study with the probe and one re-evaluated plan (14 trials, 2 re-runs:
    room for every recipe and the probe's plans), and its HTML report written by the CLI
    (with its JSON)."""
    folder = tmp_path_factory.mktemp("report")
    config = write_study(folder, n_trials=16, epochs=3, probe=True, reevaluate=1)
    run_search(load_config(config), progress=quiet, observers=[Publisher(quiet)])
    study = load_existing_study(f"sqlite:///{folder / 'tiny.db'}", "tiny")
    out = folder / "out" / "report.html"
    result = invoke("report", str(config), "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    return config, study, out, json.loads(result.stdout)


@pytest.fixture(scope="module")
def page(built):
    return built[2].read_text(encoding="utf-8")


def outside_plotly_js(page: str) -> str:
    js = get_plotlyjs()
    assert page.count(js) == 1  # the bundle, once
    return page.replace(js, "")


class Tables(html.parser.HTMLParser):
    """Every table as rows of (tag, class, text) cells; checks that tags nest."""

    VOID = {"meta", "br", "img", "hr", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.tables: list[tuple[dict, list[list[tuple[str, str, str]]]]] = []
        self.cell: list | None = None

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.open.append(tag)
        a = dict(attrs)
        if tag == "table":
            self.tables.append((a, []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self.cell = [tag, a.get("class", ""), ""]

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[2] += data

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, (tag, self.open[-3:])
        self.open.pop()
        if tag in ("td", "th"):
            self.tables[-1][1][-1].append(tuple(self.cell))
            self.cell = None


def tables(page: str) -> Tables:
    parser = Tables()
    parser.feed(page)
    assert parser.open == []
    return parser


def expected_map(t) -> list[list[tuple[str, str]]]:
    """(class, text) of each freeze-map cell, straight from the trial's history."""
    history, blocks = records.history(t), records.blocks(t)
    rows = []
    for i in range(len(blocks) + 1):
        row = []
        for h in history:
            key = "head" if i == len(blocks) else f"block{i}"
            if i < len(blocks) and i < h["cached"]:
                row.append(("cached", "cached"))
            elif i < len(blocks) and i < h["trainable_from"]:
                row.append(("frozen", "frozen"))
            else:
                row.append(("training", f"{h['lrs'][key]:.2g}"))
        rows.append(row)
    return rows


# -- HTML ----------------------------------------------------------------------------------------
def test_the_page_opens_offline_and_draws_every_figure(built, page):
    _, study, out, info = built
    rest = outside_plotly_js(page)
    for ref in ('src="http', "src='http", 'href="http', "href='http", "//cdn", "<link", "@import"):
        assert ref not in rest, ref
    assert "<script src" not in rest
    assert info == {"path": str(out), "bytes": out.stat().st_size, "sections": info["sections"]}
    assert 4_000_000 < info["bytes"] < 8_000_000  # plotly.js is ~4.8 MB of it
    drawn = figures.study_figures(study, METRIC)
    top = min(5, len(figures.runs(study)))
    assert {figures.PROBE_FIGURE, figures.BASELINES_FIGURE, figures.HISTORY_FIGURE} <= set(drawn)
    assert rest.count('class="plotly-graph-div"') == len(drawn) + top
    assert info["sections"][:2] == ["Summary", "Transferability probe"]
    assert info["sections"][2].startswith("Best plan: trial ")
    assert f"Learning curves of the top {top} trials" in info["sections"]
    tables(page)  # every tag closed in order


def test_the_page_names_every_recipe_and_the_best_plan(built, page):
    _, study, _, _ = built
    best = best_trial(study)
    recipes = {records.baseline(t) for t in study.trials if records.baseline(t)}
    assert len(recipes) == 6
    (table,) = [rows for attrs, rows in tables(page).tables if attrs.get("id") == "baselines"]
    assert [c[2] for c in table[0]] == [
        "textbook recipe",
        METRIC,
        "best's lead",
        "the best plan differs in",
    ]
    named = {row[0][2].split(" (trial")[0] for row in table[1:]}
    assert named == recipes
    for row in table[1:]:
        number = int(re.search(r"trial (\d+)", row[0][2]).group(1))
        other = study.trials[number]
        assert float(row[1][2]) == pytest.approx(other.value, abs=1e-4)
        if number != best.number:
            assert row[3][2] == study_story.plan_diff(records.plan(best), records.plan(other))
    words = story.plan_words(records.plan(best), records.n_blocks(best))
    assert f"Plan: {words}." in page.replace("&#x27;", "'")
    choice = records.choice(study)
    assert f"mean {choice['mean']:.4f}" in page
    assert study_story.improving(study) in page


def test_no_table_has_an_empty_header_row_and_the_summary_labels_its_rows(built, page):
    _, study, _, _ = built
    found = tables(page).tables
    for _, rows in found:
        for row in rows:
            assert any(text.strip() for _, _, text in row), rows[:2]
    summary = found[0][1]  # the first section's table
    assert [(c[0], c[2]) for c in summary[0]] == [("th", "study"), ("td", "tiny")]
    assert all(row[0][0] == "th" and row[1][0] == "td" for row in summary)


def test_a_trial_that_froze_nothing_shows_no_batchnorm_words(built, page):
    _, study, _, _ = built
    full = next(t for t in study.trials if records.baseline(t) == "full_finetune_low_lr")
    assert "BatchNorm" not in story.plan_words(records.plan(full), 5)
    assert "BatchNorm" not in freeze_map_html(story.freeze_map(full), full.number)
    # the best trial's plan line is on the page with the words it should have
    best = best_trial(study)
    words = story.plan_words(records.plan(best), 5)
    assert ("BatchNorm" in words) == story.freezes_blocks(records.plan(best))


def test_every_freeze_map_table_agrees_with_its_trials_history(built, page):
    _, study, _, _ = built
    maps = [(a, rows) for a, rows in tables(page).tables if a.get("class") == "freeze-map"]
    shown = {int(a["data-trial"]) for a, _ in maps}
    assert best_trial(study).number in shown and len(shown) >= 3
    for attrs, rows in maps:
        t = study.trials[int(attrs["data-trial"])]
        assert [c[2] for c in rows[0]] == [
            "block",
            *(f"ep {h['epoch']}" for h in records.history(t)),
        ]
        assert [r[0][2] for r in rows[1:]] == [*records.blocks(t), "head"]
        assert [[(c[1], c[2]) for c in r[1:]] for r in rows[1:]] == expected_map(t)
    # the linear probe: every block frozen or cached in every epoch, the head trains
    probe = next(t for t in study.trials if records.baseline(t) == "linear_probe")
    parsed = tables(freeze_map_html(story.freeze_map(probe), probe.number)).tables
    (_, rows), n = parsed[0], records.n_blocks(probe)
    assert all(c[1] in ("frozen", "cached") for r in rows[1 : n + 1] for c in r[1:])
    assert [c[1] for c in rows[n + 1][1:]] == ["training"] * len(records.history(probe))


def test_the_axes_name_the_metric(built, page):
    _, study, _, _ = built
    rest = outside_plotly_js(page)
    plots = [call.split("</script>")[0] for call in rest.split("Plotly.newPlot(")[1:]]
    assert len(plots) == rest.count('class="plotly-graph-div"')
    assert all("val_accuracy" in plot for plot in plots)  # each figure's JSON names it
    assert "Objective 0" not in page and "Objective Value" not in page
    boundary = figures.value_vs_boundary(study, METRIC)
    assert boundary.layout.yaxis.title.text == METRIC
    assert "frozen blocks" in boundary.layout.xaxis.title.text
    bars = figures.baselines_vs_best(study, METRIC)
    assert bars.layout.xaxis.title.text.startswith(METRIC)
    # the re-evaluated plan's bar is its mean over the seeds, with the 95 % interval
    choice = records.choice(study)
    i = next(i for i, y in enumerate(bars.data[0].y) if f"(#{choice['trial']})" in y)
    assert bars.data[0].x[i] == pytest.approx(choice["mean"])
    assert bars.data[0].error_x.array[i] == pytest.approx(choice["ci95"] or 0.0)
    cost = figures.value_vs_cost(study, METRIC, "trainable_params")
    assert cost.layout.yaxis.title.text == METRIC and cost.data[-1].name == "Pareto front"


# -- Markdown and the command --------------------------------------------------------------------
def test_markdown_holds_the_freeze_map_and_the_recipes(built, tmp_path):
    config, study, _, _ = built
    result = invoke("report", str(config), "--out", str(tmp_path / "r.md"))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    best = best_trial(study)
    assert story.freeze_map_markdown(story.freeze_map(best)) in text
    assert "| textbook recipe | val_accuracy | best's lead | the best plan differs in |" in text
    for t in figures.baselines(study):
        assert f"| {records.baseline(t)} (trial {t.number}) |" in text
    assert "<script" not in text and "## Top 5 trials" in text


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_an_unknown_or_empty_study_or_a_bad_path_is_one_error_line(built, tmp_path):
    config, _, _, _ = built
    url = f"sqlite:///{config.parent / 'tiny.db'}"
    line = one_error_line(invoke("report", "--storage", url, "--study-name", "nope", "--out", "x"))
    assert "no study 'nope'" in line and "tiny" in line
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(study_name="empty", storage=empty)
    line = one_error_line(
        invoke("report", "--storage", empty, "--study-name", "empty", "--out", "x")
    )
    assert "no finished trial" in line
    assert not (tmp_path / "x").exists()
    (tmp_path / "file").write_text("")
    line = one_error_line(invoke("report", str(config), "--out", str(tmp_path / "file" / "r.md")))
    assert line.startswith(f"Error: cannot write the report to {tmp_path / 'file' / 'r.md'}")


# -- figures on small and unusual studies --------------------------------------------------------
def copy_study(trials, directions=("maximize",)) -> optuna.Study:
    study = optuna.create_study(directions=list(directions))
    for t in trials:
        study.add_trial(t)
    return study


def test_a_single_trial_draws_no_study_figure_but_a_report(built, tmp_path):
    _, study, _, _ = built
    one = copy_study([study.trials[0]])
    for make in (figures.value_vs_boundary, figures.baselines_vs_best, figures.history):
        assert make(one, METRIC) is None
    assert figures.value_vs_cost(one, METRIC) is None
    assert figures.param_importance(one) is None and figures.probe_curve(one) is None
    assert figures.study_figures(one, METRIC) == {}
    text = render_report(one, METRIC, "md").text
    assert "linear_probe" in text and "| head |" in text
    assert write_report(one, METRIC, tmp_path / "one.html").stat().st_size > 4_000_000


def test_importance_and_a_multi_objective_study(built):
    _, study, _, _ = built
    dist = {"boundary": IntDistribution(0, 5), "head_lr": FloatDistribution(1e-4, 1e-1, log=True)}
    varied = optuna.create_study(direction="maximize")
    lrs = [3e-2, 1e-3, 2e-4, 5e-2, 4e-4, 8e-3, 1e-2, 3e-4, 2e-3, 6e-2]  # not tied to the value
    for i, lr in enumerate(lrs):
        params = {"boundary": i % 6, "head_lr": lr}
        varied.add_trial(
            create_trial(value=0.5 + 0.06 * (i % 6), params=params, distributions=dist)
        )
    bars = figures.param_importance(varied, METRIC)
    assert set(bars.data[0].y) == {"boundary", "head_lr"}
    assert bars.data[0].y[-1] == "boundary"  # the most important on top
    # two objectives: the metric is the first value; nothing asks study.direction
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    two = copy_study(
        [
            create_trial(
                values=[t.value, t.user_attrs["seconds"]],
                params=t.params,
                distributions=t.distributions,
                user_attrs=t.user_attrs,
                system_attrs=t.system_attrs,
            )
            for t in done
        ],
        ("maximize", "minimize"),
    )
    drawn = figures.study_figures(two, METRIC)
    assert figures.BOUNDARY_FIGURE in drawn and figures.HISTORY_FIGURE in drawn
    assert figures.value(best_trial(two)) == max(t.value for t in done)


def test_pareto_front_keeps_the_best_value_for_its_cost():
    points = [(3.0, 0.9), (1.0, 0.5), (2.0, 0.5), (2.0, 0.7), (5.0, 0.8), (4.0, 0.95)]
    assert figures.pareto(points, True) == [(1.0, 0.5), (2.0, 0.7), (3.0, 0.9), (4.0, 0.95)]
    assert figures.pareto(points, False) == [(1.0, 0.5)]


def test_trial_png_writes_a_readable_picture(built, tmp_path):
    _, study, _, _ = built
    gradual = next(t for t in study.trials if records.baseline(t) == "gradual_unfreezing")
    path = figures.trial_png(gradual, METRIC, tmp_path / "png" / "t.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1000, 800)
    assert phase_changes(records.history(gradual))[0][1].endswith("from block 4")
    bare = create_trial(state=TrialState.PRUNED, value=0.4, intermediate_values={1: 0.4})
    assert figures.trial_png(bare, METRIC, tmp_path / "bare.png").stat().st_size > 10_000
