"""`autofreeze dashboard` serves the study: what autofreeze wrote for it (metric names, notes,
figures, artifacts) is read back through the real server's HTTP API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from types import SimpleNamespace

import optuna
import pytest
from plotly.offline import get_plotlyjs

from autofreeze.config import load_config
from autofreeze.progress import quiet
from autofreeze.recipes import BASELINE_NAMES
from autofreeze.review.dashboard import Publisher, figure_order
from autofreeze.search.run import run_search
from tests.studies import write_study


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_dashboard_serves_the_study_with_plans_as_user_attrs(tmp_path):
    url = f"sqlite:///{tmp_path}/dash.db"
    study = optuna.create_study(study_name="dash", storage=url, direction="maximize")
    for i in range(3):
        trial = study.ask()
        trial.set_user_attr("plan", {"boundary": i, "schedule": "static"})
        study.tell(trial, 0.5 + i / 10)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "autofreeze", "dashboard", "--storage", url, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        studies = None
        while time.monotonic() < deadline:
            try:
                studies = get(f"http://127.0.0.1:{port}/api/studies")
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.3)
        assert studies is not None, "dashboard did not answer within 60 s"
        (summary,) = [s for s in studies["study_summaries"] if s["study_name"] == "dash"]
        detail = get(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}")
        assert len(detail["trials"]) == 3
        values = sorted(t["values"][0] for t in detail["trials"])
        assert values == [0.5, 0.6, 0.7]
        attrs = detail["trials"][2]["user_attrs"]
        assert any(a["key"] == "plan" and "boundary" in a["value"] for a in attrs)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # SIGTERM during a request: wsgiref logs it, serves on
            proc.kill()
            proc.wait()


@pytest.mark.slow  # several seconds: the full suite, not `make check`
def test_sigterm_stops_the_dashboard_also_in_the_middle_of_requests_and_a_taken_port_is_one_line(
    tmp_path,
):
    url = f"sqlite:///{tmp_path}/dash.db"
    study = optuna.create_study(study_name="dash", storage=url, direction="maximize")
    for i in range(20):
        study.add_trial(optuna.trial.create_trial(value=i / 20, params={}, distributions={}))
    port = free_port()
    command = [sys.executable, "-m", "autofreeze", "dashboard", "--storage", url]
    proc = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                sid = get(f"{base}/api/studies")["study_summaries"][0]["study_id"]
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "dashboard did not answer within 60 s"
                time.sleep(0.3)
        # a second dashboard on the same port: one line, not a traceback
        taken = subprocess.run(
            [*command, "--port", str(port)], capture_output=True, text=True, timeout=60
        )
        assert taken.returncode == 1, taken.stderr
        assert f"cannot serve on 127.0.0.1:{port}" in taken.stderr
        assert "Traceback" not in taken.stderr
        # requests without a pause while SIGTERM arrives: optuna-dashboard's own server, which
        # served them in the main thread, caught the signal inside a request and served on
        stop = threading.Event()

        def ask() -> None:
            while not stop.is_set():
                try:
                    get(f"{base}/api/studies/{sid}")
                except OSError:
                    return

        askers = [threading.Thread(target=ask) for _ in range(3)]
        for t in askers:
            t.start()
        time.sleep(1.0)
        proc.terminate()
        code = proc.wait(timeout=10)
        stop.set()
        for t in askers:
            t.join(timeout=10)
        assert code == 143, proc.stderr.read().decode()
        last = proc.stderr.read().decode().strip().splitlines()[-1]
        assert last == "stopped by SIGTERM"  # no word about trials: a dashboard runs none
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- what autofreeze writes for the dashboard, read back through a real server -----------------
PNG = b"\x89PNG\r\n\x1a\n"


@contextmanager
def dashboard(*args: str, env: dict[str, str] | None = None):
    """``autofreeze dashboard ARGS`` on a free port (``env``: more environment variables);
    yields its base URL once it answers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "autofreeze", "dashboard", *args, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(f"{base}/api/studies")
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "dashboard did not answer within 60 s"
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # SIGTERM during a request: wsgiref logs it, serves on
            proc.kill()
            proc.wait()


def raw(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    folder = tmp_path_factory.mktemp("published")
    # 12 trainings: 10 trials (every recipe among them), then 2 re-runs
    path = write_study(folder, "shown", n_trials=12, epochs=3, reevaluate=2, dashboard=True)
    run_search(load_config(path), progress=quiet, observers=[Publisher(quiet)])
    with dashboard(str(path)) as base:
        studies = get(f"{base}/api/studies")["study_summaries"]
        (summary,) = [s for s in studies if s["study_name"] == "shown"]
        detail = get(f"{base}/api/studies/{summary['study_id']}")
        yield path, base, summary["study_id"], detail


def test_the_dashboard_names_the_metric_not_objective_0(published):
    _, _, _, detail = published
    assert detail["objective_names"] == ["val_accuracy"]
    for graph in detail["plotly_graph_objects"]:
        assert "Objective 0" not in graph["graph_object"]


def test_every_trial_note_tells_its_plan_freeze_map_cost_and_outcome(published):
    _, _, _, detail = published
    trials = [t for t in detail["trials"] if t["state"] in ("Complete", "Pruned", "Fail")]
    assert len(trials) >= 8
    for t in trials:
        body = t["note"]["body"]
        assert body.startswith(f"## trial {t['number']} · "), body[:80]
        assert "**Plan:**" in body and "### Freeze map" in body and "### Cost" in body
        assert "| head |" in body  # the freeze map's last row
    names = {t["note"]["body"].split("\n", 1)[0] for t in trials}
    for recipe in ("linear_probe", "lp_ft", "from_scratch"):
        assert any(f"baseline {recipe}" in n for n in names), names
    probe = next(t for t in trials if "baseline linear_probe" in t["note"]["body"])
    row = next(line for line in probe["note"]["body"].splitlines() if line.startswith("| layer1"))
    assert "0.0" not in row and ("frozen" in row or "cached" in row)  # never trains


def test_every_trial_that_trained_has_its_figure_as_an_artifact(published):
    _, base, study_id, detail = published
    for t in detail["trials"]:
        if t["state"] not in ("Complete", "Pruned"):
            continue
        (png,) = [a for a in t["artifacts"] if a["filename"].endswith(".png")]
        assert png["mimetype"] == "image/png"
        url = f"/artifacts/{study_id}/{t['trial_id']}/{png['artifact_id']}"
        assert url in t["note"]["body"]  # the note shows the figure
        data = raw(base + url)
        assert data.startswith(PNG) and len(data) > 10_000


def test_the_study_note_compares_the_best_with_every_recipe_and_links_the_report(published):
    _, base, study_id, detail = published
    body = detail["note"]["body"]
    assert "### Best against the textbook recipes" in body
    ran = {
        t["note"]["body"].split("baseline ", 1)[1].split("\n")[0]
        for t in detail["trials"]
        if "· baseline " in t["note"]["body"].split("\n", 1)[0]
    }
    assert ran and ran <= set(BASELINE_NAMES)
    for recipe in ran:
        assert f"| {recipe} (trial " in body
    assert "Search progress:" in body and "Re-run with" in body
    (report,) = [a for a in detail["artifacts"] if a["filename"] == "report.html"]
    assert f"/artifacts/{study_id}/{report['artifact_id']}" in body
    html = raw(f"{base}/artifacts/{study_id}/{report['artifact_id']}").decode()
    assert "<html" in html and "### Best" not in html
    assert 'src="http' not in html.replace(get_plotlyjs(), "")  # offline: nothing fetched


def test_the_study_figures_are_saved_once_each(published):
    path, _, study_id, detail = published
    ids = [g["id"] for g in detail["plotly_graph_objects"]]
    assert len(ids) >= 3 and len(set(ids)) == len(ids)
    assert all(i.startswith("autofreeze-") for i in ids)
    # a re-run of the finished study replaces them rather than adding more
    run_search(load_config(path), progress=quiet, observers=[Publisher(quiet)])
    with dashboard(str(path)) as base:
        again = get(f"{base}/api/studies/{study_id}")
    assert sorted(g["id"] for g in again["plotly_graph_objects"]) == sorted(ids)


@pytest.mark.slow  # several seconds: the full suite, not `make check`
def test_the_figures_are_listed_in_reading_order_whatever_the_hash_seed(published):
    """optuna-dashboard lists saved figures from a set, whose order follows Python's string
    hashing: two starts of ``autofreeze dashboard`` with other hash seeds list them the same,
    in reading order (the table against the recipes first)."""
    path, _, study_id, detail = published
    orders = []
    for seed in ("1", "2"):
        with dashboard(str(path), env={"PYTHONHASHSEED": seed}) as base:
            orders.append(
                [g["id"] for g in get(f"{base}/api/studies/{study_id}")["plotly_graph_objects"]]
            )
    assert orders[0] == orders[1] == [i for i in figure_order() if i in orders[0]]
    assert len(orders[0]) == len(detail["plotly_graph_objects"]) >= 6
    assert orders[0][0] == "autofreeze-best-against-the-recipes"


def test_an_artifact_folder_that_cannot_be_written_is_one_note(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    path = write_study(
        tmp_path, "nofig", n_trials=2, study_extra='artifacts = "a-file/figs"', dashboard=True
    )
    lines: list[str] = []
    result = run_search(
        load_config(path), progress=lines.append, observers=[Publisher(lines.append)]
    )
    assert result.ran == 2
    notes = [line for line in lines if "cannot write figures" in line]
    assert len(notes) == 1 and "[study] artifacts" in notes[0]


def test_notes_and_figures_work_on_postgresql_with_the_artifacts_in_a_shared_folder(
    tmp_path, pg_url
):
    """Any storage URL: the notes and figure metadata live in the study's database, the
    figures in the configured folder (what workers on several machines share)."""
    from optuna.artifacts import FileSystemArtifactStore, download_artifact
    from optuna_dashboard import get_note

    from autofreeze.review.dashboard import trial_artifacts

    shared = tmp_path / "shared-figures"
    path = write_study(
        tmp_path, "onpg", n_trials=3, study_extra=f'artifacts = "{shared}"', dashboard=True
    )
    result = run_search(
        load_config(path, {"study.storage": pg_url}), progress=quiet, observers=[Publisher(quiet)]
    )
    study = optuna.load_study(study_name="onpg", storage=pg_url)
    assert result.ran == 3 and study.metric_names == ["val_accuracy"]
    ran = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(ran) == 3  # (the other recipes wait beyond the budget)
    for t in ran:
        (png,) = trial_artifacts(t)
        target = tmp_path / f"{t.number}.png"
        download_artifact(
            artifact_store=FileSystemArtifactStore(str(shared)),
            artifact_id=png["artifact_id"],
            file_path=str(target),
        )
        assert target.read_bytes().startswith(PNG)
        # get_note takes a live trial and reads only these of it
        live = SimpleNamespace(study=study, storage=study._storage, _trial_id=t._trial_id)
        assert "### Freeze map" in get_note(live)
    assert "Best against the textbook recipes" in get_note(study)


def test_a_figure_that_cannot_be_drawn_costs_no_trial_its_result(tmp_path, monkeypatch):
    import autofreeze.review.figures

    def broken(*args, **kwargs):
        raise ValueError("no such colour")

    monkeypatch.setattr(autofreeze.review.figures, "trial_png", broken)
    path = write_study(tmp_path, "nodraw", n_trials=3, dashboard=True)
    lines: list[str] = []
    result = run_search(
        load_config(path), progress=lines.append, observers=[Publisher(lines.append)]
    )
    study = optuna.load_study(study_name="nodraw", storage=f"sqlite:///{tmp_path}/nodraw.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert result.ran == 3 and len(done) == 3
    notes = [line for line in lines if "could not draw" in line]
    assert len(notes) == 1 and "ValueError: no such colour" in notes[0]


def test_a_dashboard_on_a_storage_alone_finds_each_studys_figures_where_its_search_put_them(
    tmp_path, monkeypatch
):
    """``autofreeze dashboard --storage URL``, no config and no --artifacts, started elsewhere:
    the figures of two studies, each in the artifact folder of its own config, are served from
    where each study's search put them (read from the config the study stored)."""
    url = f"sqlite:///{tmp_path}/shared.db"
    folders = {}
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        path = write_study(folder, name, n_trials=1, epochs=1, dashboard=True)
        run_search(
            load_config(path, {"study.storage": url}), progress=quiet, observers=[Publisher(quiet)]
        )
        folders[name] = folder / f"{name}-artifacts"
    elsewhere = tmp_path / "reviewer"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with dashboard("--storage", url) as base:
        summaries = get(f"{base}/api/studies")["study_summaries"]
        assert sorted(s["study_name"] for s in summaries) == ["first", "second"]
        for summary in summaries:
            detail = get(f"{base}/api/studies/{summary['study_id']}")
            (trial,) = [t for t in detail["trials"] if t["state"] == "Complete"]
            (png,) = [a for a in trial["artifacts"] if a["filename"].endswith(".png")]
            link = f"/artifacts/{summary['study_id']}/{trial['trial_id']}/{png['artifact_id']}"
            served = raw(base + link)
            stored = (folders[summary["study_name"]] / png["artifact_id"]).read_bytes()
            assert served == stored and served.startswith(PNG)
