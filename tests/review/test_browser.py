"""What a reviewer sees, in a real browser: a tiny real study is served by a real ``autofreeze
dashboard`` and written as ``report.html``, and headless Chromium opens the dashboard's study
page, its study note, a baseline trial's page and the report file; each page's rendered DOM
(after its JavaScript ran) is read and its screenshot kept.

How Chromium is driven (command line, ``--virtual-time-budget`` to wait for the SPA's data, one
process group per page, killed after it) is in :mod:`tests.browser`.

The screenshots are kept in ``$AUTOFREEZE_SCREENSHOTS``, else ``.ci/artifacts/screenshots/``,
and each test prints its file and what it shows through ``capsys.disabled()`` (so the lines
appear in pytest's output even though output is captured) and records it as the ``screenshot``
property (in a JUnit XML report). Without Chromium (``make test`` installs it with apt-get)
the tests are skipped."""

from __future__ import annotations

import html
import json
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from autofreeze.cli import cli
from autofreeze.config import load_config
from autofreeze.progress import quiet
from autofreeze.recipes import BASELINE_NAMES
from autofreeze.review.dashboard import Publisher, figure_order
from autofreeze.review.figures import COLOURS
from autofreeze.search.run import run_search
from tests.browser import (
    CHROMIUM,
    dashboard,
    hex_rgb,
    inside,
    measured,
    measuring_page,
    overlap,
    render,
    screenshot_colours,
    visible_text,
)
from tests.studies import write_study

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium is not installed (make test installs it: apt-get install -y chromium)",
    ),
]

REPO = Path(__file__).resolve().parents[2]
METRIC = "val_accuracy"
IMAGE = re.compile(r"!\[[^\]]*\]\((/artifacts/[^)\s]+)\)")
FIGURES = '[id^="user-defined-plot:"]'  # autofreeze's figures on optuna-dashboard's study page
CARD_WINDOW = (1280, 3600)  # a laptop's window: the figures' half-width cards are ~560 px


def screenshot_folder() -> Path:
    folder = Path(os.environ.get("AUTOFREEZE_SCREENSHOTS") or REPO / ".ci/artifacts/screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Site:
    base: str  # the dashboard's URL
    study_id: int
    detail: dict  # the dashboard API's study
    report: Path
    shots: Path
    work: Path  # Chromium's profiles and logs
    server_log: Path
    config: Path

    def open(self, url: str, name: str, size: tuple[int, int], ready: str, **kw) -> str:
        return render(
            url,
            self.shots / name,
            size=size,
            ready=ready,
            profile=self.work / f"profile-{name}",
            log=self.work / "chromium.log",
            **kw,
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    # 12 trainings: 10 trials (the six recipes among them), then 2 re-runs of the top plans;
    # ten classes in 8 pixels, four images each: plans differ and re-runs disagree (intervals)
    config = write_study(
        folder, "shown", n_trials=12, epochs=2, reevaluate=2, dashboard=True, size=8, per_class=4
    )
    config.write_text(config.read_text().replace("num_classes = 3", "num_classes = 10"))
    run_search(load_config(config), progress=quiet, observers=[Publisher(quiet)])
    report = folder / "report.html"
    result = CliRunner().invoke(cli, ["report", str(config), "--out", str(report)])
    assert result.exit_code == 0, result.output
    log = folder / "dashboard.log"
    with dashboard(config, log) as base:
        with urllib.request.urlopen(f"{base}/api/studies", timeout=10) as r:
            studies = json.loads(r.read())["study_summaries"]
        (summary,) = [s for s in studies if s["study_name"] == "shown"]
        with urllib.request.urlopen(f"{base}/api/studies/{summary['study_id']}", timeout=10) as r:
            detail = json.loads(r.read())
        shots = screenshot_folder()
        yield Site(base, summary["study_id"], detail, report, shots, folder, log, config)


@pytest.fixture
def keep(capsys, record_property, site):
    """Print (past pytest's capture) and record where a screenshot is and what it shows."""

    def keep(name: str, what: str) -> None:
        path = site.shots / name
        record_property("screenshot", f"{path}: {what}")
        with capsys.disabled():
            print(f"\n  screenshot {path}\n    {what}", flush=True)

    return keep


def study_url(site: Site, page: str = "") -> str:
    return f"{site.base}/dashboard/studies/{site.study_id}{page}"


def title_lines(graph: dict) -> list[str]:
    """A saved figure's title as the reader sees it: its lines, markup dropped."""
    text = json.loads(graph["graph_object"])["layout"]["title"]["text"]
    return [html.unescape(re.sub(r"<[^>]+>", "", line)) for line in text.split("<br>")]


def test_the_study_page_names_the_metric_and_draws_the_autofreeze_figures(site, keep):
    titles = [title_lines(g) for g in site.detail["plotly_graph_objects"]]
    assert len(titles) >= 3
    size = (1400, 3000)
    dom = site.open(study_url(site), "dashboard-study.png", size, ready=titles[-1][0])
    keep(
        "dashboard-study.png",
        "optuna-dashboard's study page: history by val_accuracy, its importance and timeline, "
        "then autofreeze's figures (best vs the textbook recipes, Pareto fronts, metric vs "
        "frozen blocks, search history, parameter importance), the best trial",
    )
    text = visible_text(dom)
    assert METRIC in text and "Objective 0" not in text
    for lines in titles:  # plotly drew each figure autofreeze saved for the dashboard
        assert all(line in text for line in lines), lines
    assert dom.count('class="main-svg"') >= len(titles)
    for recipe in BASELINE_NAMES:  # the bar chart of the best against the recipes
        assert f"{recipe} (#" in text, recipe
    colours = screenshot_colours(site.shots / "dashboard-study.png", size)
    assert colours[hex_rgb("#54a24b")] > 500  # the baselines' green of autofreeze's figures


def test_the_study_note_compares_the_best_with_every_recipe_in_a_table(site, keep):
    size = (1400, 1000)
    dom = site.open(
        study_url(site, "/note"), "dashboard-study-note.png", size, ready="textbook recipe"
    )
    keep(
        "dashboard-study-note.png",
        "the study note: the best plan, the table of the best against each textbook recipe, "
        "search progress and the link to report.html",
    )
    text = visible_text(dom)
    assert f"which freeze plan wins on {METRIC}" in text
    assert "Best against the textbook recipes" in text and "Search progress:" in text
    assert f"<th>{METRIC}</th>" in dom  # the Markdown table became a table
    for recipe in BASELINE_NAMES:
        assert re.search(rf"<td>{recipe} \(trial \d+\)</td>", dom), recipe
    assert re.search(r'<a href="/artifacts/\d+/[^"]+">report.html</a>', dom)
    screenshot_colours(site.shots / "dashboard-study-note.png", size)


def test_a_baseline_trial_page_shows_its_note_freeze_map_and_figure(site, keep):
    (probe,) = [
        t
        for t in site.detail["trials"]
        if t["note"]["body"].startswith(f"## trial {t['number']} · baseline linear_probe")
    ]
    (image,) = IMAGE.findall(probe["note"]["body"])
    size = (1400, 2000)
    dom = site.open(
        study_url(site, f"/trials?numbers={probe['number']}"),
        "dashboard-trial-linear_probe.png",
        size,
        ready="Freeze map",
    )
    keep(
        "dashboard-trial-linear_probe.png",
        f"trial {probe['number']} (baseline linear_probe): its note (plan, freeze map and "
        "learning-curve tables, cost) and the PNG of its learning curves and freeze map",
    )
    text = visible_text(dom)
    assert f"trial {probe['number']} · baseline linear_probe" in text
    assert f"complete: {METRIC}" in text
    assert "Freeze map" in text and "Learning curve" in text and "Cost" in text
    assert re.search(r"<td>head</td>(<td>[0-9.e-]+</td>)+</tr>", dom)  # the map's last row
    assert re.search(rf'<img alt="learning curves and freeze map"[^>]* src="{image}"', dom)
    assert f'"GET {image} HTTP/1.1" 200' in site.server_log.read_text()  # the browser got it
    colours = screenshot_colours(site.shots / "dashboard-trial-linear_probe.png", size)
    for state in ("cached", "training"):  # the figure's freeze map is on screen
        assert colours[hex_rgb(COLOURS[state])] > 2000, state


def test_the_report_file_renders_its_tables_and_figures_offline(site, keep):
    size = (1400, 3000)
    dom = site.open(site.report.as_uri(), "report.png", size, ready="js-plotly-plot", offline=True)
    keep(
        "report.png",
        "report.html opened as a file:// URL with no network: summary, best plan with its "
        "coloured freeze map, cost, the table and bar chart against the textbook recipes",
    )
    text = visible_text(dom)
    assert f"{METRIC} (maximized)" in text and "Objective 0" not in text
    assert "Freeze map" in text and re.search(r"<th>head</th>(<td[^>]*>[0-9.e-]+</td>)+", dom)
    for recipe in BASELINE_NAMES:
        assert f"{recipe} (trial " in text, recipe
    figures = re.findall(r'<div id="([^"]+)" class="plotly-graph-div([^"]*)"', dom)
    assert len(figures) >= 4
    undrawn = [name for name, cls in figures if "js-plotly-plot" not in cls]
    assert not undrawn, f"plotly.js did not draw {undrawn}"
    assert dom.count('class="main-svg"') >= len(figures)
    colours = screenshot_colours(site.shots / "report.png", size)
    assert colours[hex_rgb(COLOURS["cached"])] > 2000  # the freeze map table's cells


@pytest.fixture(scope="module")
def drawn(site):
    """What Chromium drew of autofreeze's figures on the study page in a 1280-pixel window:
    measured by a page of the dashboard's own origin (an artifact of a study of the same
    storage) that opens the study page in a frame (see :func:`tests.browser.measuring_page`)."""
    import optuna
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    cfg = load_config(site.config)
    holder = optuna.create_study(study_name="measuring", storage=cfg.storage_url)
    page = site.work / "measure.html"
    expected = len(site.detail["plotly_graph_objects"])
    width, height = CARD_WINDOW
    page.write_text(measuring_page(study_url(site), FIGURES, expected, width, height))
    store = FileSystemArtifactStore(str(cfg.artifact_dir))
    artifact = upload_artifact(artifact_store=store, file_path=str(page), study_or_trial=holder)
    with urllib.request.urlopen(f"{site.base}/api/studies", timeout=10) as r:
        (held,) = [
            s for s in json.loads(r.read())["study_summaries"] if s["study_name"] == "measuring"
        ]
    url = f"{site.base}/artifacts/{held['study_id']}/{artifact}"
    size = (width + 20, 1200)
    dom = site.open(
        url, "dashboard-figures-measured.png", size, 'id="measured">[', budget_ms=30_000
    )
    return measured(dom)


def test_every_figure_title_and_table_header_renders_whole_in_its_card(site, drawn):
    """Each of autofreeze's figures in its half-width card: the title as saved, every line of
    it, clear of the modebar and inside the card; axis titles, ticks, legends and annotations
    inside the card; each table header whole in its cell (plotly cuts a word wider than it)."""
    saved = {f"user-defined-plot:{g['id']}": g for g in site.detail["plotly_graph_objects"]}
    assert len(drawn) == len(saved) >= 6
    for figure in drawn:
        name, card = figure["id"], figure["card"]
        assert card[2] - card[0] < CARD_WINDOW[0] / 2, name  # a half-width card
        assert inside(figure["svg"], card), name  # the figure's height is the card's
        lines = title_lines(saved[name])
        assert figure["title"]["text"] == "".join(lines), name
        assert figure["title"]["lines"] in (lines, []), name  # one tspan per line (or one line)
        title = figure["title"]["box"]
        assert inside(title, card) and inside(title, figure["svg"]), name
        assert not overlap(title, figure["area"]), name  # above the plot (or the table)
        if figure["modebar"] and figure["modebar"][2] > figure["modebar"][0]:
            assert not overlap(title, figure["modebar"]), name
        for kind in ("axes", "ticks", "legend", "annotations"):
            for shown in figure[kind]:
                assert inside(shown["box"], card), (name, kind, shown["text"])
        for header in figure["headers"]:
            assert header["box"][0] >= header["cell"][0], (name, header["text"])
            assert header["box"][2] <= header["cell"][2], (name, header["text"])  # not cut
    (table,) = [f for f in drawn if f["headers"]]
    assert [h["text"] for h in table["headers"]] == [
        "textbook recipe",
        METRIC,
        "best's lead",
        "the best plan differs in",
    ]


def test_bar_values_clear_their_error_bars_and_recipe_labels_stand_apart(drawn):
    (bars,) = [f for f in drawn if f["id"].endswith("best-plan-vs-the-textbook-recipes")]
    wide = [e for e in bars["errorbars"] if e[2] - e[0] > 20]  # the re-run plans' intervals
    assert wide, "no re-run interval drawn: nothing could cover a value"
    values = [t for t in bars["ticks"] if re.search(r"\(#\d+\)  [01]\.\d{4}$", t["text"])]
    assert len(values) >= 7  # every bar names its value
    for shown in [*values, *bars["bars"]]:  # (and any value drawn on a bar)
        for error in bars["errorbars"]:
            assert not overlap(shown["box"], error), shown["text"]
    (boundary,) = [f for f in drawn if f["id"].endswith("metric-vs-frozen-blocks")]
    labels = [a for a in boundary["annotations"] if a["text"] in BASELINE_NAMES]
    assert sorted(a["text"] for a in labels) == sorted(BASELINE_NAMES)
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            assert not overlap(a["box"], b["box"]), (a["text"], b["text"])


def test_the_figures_come_in_reading_order(site, drawn):
    ids = [g["id"] for g in site.detail["plotly_graph_objects"]]
    assert ids == [i for i in figure_order() if i in ids]  # what the server lists
    assert [f["id"].removeprefix("user-defined-plot:") for f in drawn] == ids  # and shows
