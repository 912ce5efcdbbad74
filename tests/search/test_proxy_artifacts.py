"""Artifacts on a cluster, for real: the proxy, worker and dashboard commands of deploy/k8s
(tests/study/test_cluster_recipes.py checks their wiring) run against a real PostgreSQL. A
worker that knows only the proxy's grpc:// URL and the shared folder's path, started in a
folder of its own (as on another machine), writes every trial's figure and the study's report
there; `autofreeze dashboard` through the proxy serves them over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from optuna.trial import TrialState

from autofreeze.config import load_config
from autofreeze.progress import quiet
from autofreeze.search.run import prepare_search
from tests import processes
from tests.processes import FINISHED, free_port, stop_proxy, trials, wait_for
from tests.studies import write_study
from tests.study.test_cluster_recipes import container, env_of

pytestmark = pytest.mark.slow  # real processes: the full suite, not `make check`

PNG = b"\x89PNG\r\n\x1a\n"


def recipe(workload: str, **values: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a deploy/k8s container, with the cluster's values
    replaced by this machine's: ``values`` maps a word or an environment value to its stand-in
    (the Secret's URL by ``secret``)."""
    c = container(workload)
    command = [values.get(w, w) for w in c["command"]]
    env = {}
    for name, value in env_of(c).items():
        env[name] = values["secret"] if isinstance(value, dict) else values.get(value, value)
    return command, env


def launch(command: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    """``command`` (``autofreeze ...``) as a real process in ``cwd`` with only ``env`` added
    (killed after the test, as every process of tests/processes.py is)."""
    assert command[0] == "autofreeze"
    proc = subprocess.Popen(
        [sys.executable, "-m", "autofreeze", *command[1:]],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        env={**os.environ, **env},
    )
    processes.STARTED.append(proc)
    return proc


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def test_a_worker_behind_the_proxy_writes_figures_that_the_dashboard_serves(tmp_path, pg_url):
    proxy_port, dashboard_port = free_port(), free_port()
    shared = tmp_path / "shared-artifacts"  # the ReadWriteMany volume
    elsewhere = tmp_path / "another-machine"
    elsewhere.mkdir()
    url = f"grpc://127.0.0.1:{proxy_port}"
    stand_ins = {
        "secret": pg_url,
        "0.0.0.0": "127.0.0.1",  # noqa: S104 (the recipes' address; here, this machine only)
        "13000": str(proxy_port),
        "8080": str(dashboard_port),
        "grpc://autofreeze-proxy:13000": url,
        "/artifacts": str(shared),
        "cuda": "cpu",
        "8": "1",  # threads
    }
    command, env = recipe("autofreeze-proxy", **stand_ins)
    log = tmp_path / "proxy.log"
    proxy = launch(command, env, log, tmp_path)
    wait_for(lambda: "workers use --storage" in log.read_text(), 60, "the proxy to start")
    assert proxy.poll() is None, log.read_text()

    # the study, prepared through the proxy as `autofreeze search` prepares it; no trial runs
    # here: both are the worker's
    path = write_study(tmp_path, "my", n_trials=2, epochs=1, pruner="none", dashboard=True)
    prepare_search(load_config(path, {"study.storage": url}), progress=quiet)

    command, env = recipe("autofreeze-workers", **stand_ins)
    assert set(env) == {"AUTOFREEZE_STORAGE", "AUTOFREEZE_ARTIFACTS"}  # nothing else known
    worker_log = tmp_path / "worker.log"
    worker = launch(command, env, worker_log, elsewhere)
    assert worker.wait(timeout=300) == 0, worker_log.read_text()[-3000:]
    assert "worker done: 2 trials run" in worker_log.read_text()

    found = trials(pg_url, "my")
    assert [t.state for t in found if t.state != TrialState.WAITING] == [TrialState.COMPLETE] * 2
    # the figures went to the shared folder only: not beside the config the study stored
    assert not (tmp_path / "my-artifacts").exists() and not list(elsewhere.iterdir())
    files = {p.name: p.read_bytes() for p in shared.iterdir()}
    assert len(files) == 3  # two figures and the report

    command, env = recipe("autofreeze-dashboard", **stand_ins)
    dash_log = tmp_path / "dashboard.log"
    dashboard = launch(command, env, dash_log, elsewhere)
    base = f"http://127.0.0.1:{dashboard_port}"

    def answers() -> bool:
        assert dashboard.poll() is None, dash_log.read_text()
        try:
            get(f"{base}/api/studies")
        except OSError:
            return False
        return True

    wait_for(answers, 60, "the dashboard to answer")
    assert f"figures from {shared}" in dash_log.read_text()
    served = assert_served(base, files)
    assert sorted(served) == sorted(t.number for t in found if t.state in FINISHED)
    dashboard.terminate()
    dashboard.wait(timeout=30)
    stop_proxy(proxy, log)


def assert_served(base: str, files: dict[str, bytes]) -> list[int]:
    """Every trial's figure and the study's report, read over HTTP from the dashboard, are the
    files in the shared folder, and the notes link them; the trials served."""
    (summary,) = json.loads(get(f"{base}/api/studies"))["study_summaries"]
    study_id = summary["study_id"]
    detail = json.loads(get(f"{base}/api/studies/{study_id}"))
    served = []
    for t in detail["trials"]:
        if t["state"] == "Waiting":  # a first plan beyond the budget
            continue
        (png,) = [a for a in t["artifacts"] if a["filename"].endswith(".png")]
        link = f"/artifacts/{study_id}/{t['trial_id']}/{png['artifact_id']}"
        assert link in t["note"]["body"]  # the trial's note shows its figure
        data = get(base + link)
        assert data.startswith(PNG) and data == files[png["artifact_id"]]
        served.append(t["number"])
    (report,) = [a for a in detail["artifacts"] if a["filename"] == "report.html"]
    assert f"/artifacts/{study_id}/{report['artifact_id']}" in detail["note"]["body"]
    html = get(f"{base}/artifacts/{study_id}/{report['artifact_id']}")
    assert b"<html" in html and html == files[report["artifact_id"]]
    return served
