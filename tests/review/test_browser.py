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
from autofreeze.review.dashboard import Publisher
from autofreeze.review.figures import COLOURS
from autofreeze.search.run import run_search
from tests.browser import CHROMIUM, dashboard, hex_rgb, render, screenshot_colours, visible_text
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
    config = write_study(
        folder, "shown", n_trials=9, epochs=2, dashboard=True
    )  # the six recipes, three searched (a third of a budget is the sampler's)
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
        yield Site(base, summary["study_id"], detail, report, screenshot_folder(), folder, log)


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


def test_the_study_page_names_the_metric_and_draws_the_autofreeze_figures(site, keep):
    titles = [
        json.loads(g["graph_object"])["layout"]["title"]["text"]
        for g in site.detail["plotly_graph_objects"]
    ]
    assert len(titles) >= 3
    size = (1400, 3000)
    dom = site.open(study_url(site), "dashboard-study.png", size, ready=titles[-1])
    keep(
        "dashboard-study.png",
        "optuna-dashboard's study page: history by val_accuracy, its importance and timeline, "
        "then autofreeze's figures (best vs the textbook recipes, Pareto fronts, metric vs "
        "frozen blocks, search history, parameter importance), the best trial",
    )
    text = visible_text(dom)
    assert METRIC in text and "Objective 0" not in text
    for title in titles:  # plotly drew each figure autofreeze saved for the dashboard
        assert title in text, title
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
