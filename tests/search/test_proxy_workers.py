"""Workers through Optuna's gRPC storage proxy: a real `autofreeze proxy` process in front of
the real PostgreSQL, real worker processes that know only its grpc:// URL (the same study
directly: test_distributed.py; the proxy's own errors and heartbeats: tests/study/test_proxy.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import pytest
from optuna.trial import TrialState

from autofreeze.study import records
from autofreeze.study.storage import load_existing_study, open_storage
from tests.commands import invoke
from tests.processes import (
    FINISHED,
    assert_budget_kept,
    children,
    start,
    start_proxy,
    stop_proxy,
    trials,
    wait_for,
)
from tests.studies import write_study

pytestmark = pytest.mark.slow  # real processes: the full suite, not `make check`


def test_two_workers_share_a_postgres_study_through_the_proxy_and_a_killed_ones_trial_is_retried(
    tmp_path, pg_url
):
    """`search --workers 2` on PostgreSQL through one `autofreeze proxy` process (Optuna's gRPC
    storage proxy; the workers know only its grpc:// URL). Both workers run trials; one is
    SIGKILLed inside its second trial, which goes stale and is retried by the other: the proxy
    has no heartbeat of its own (Optuna's `fail_stale_trials` skips it), so the workers beat
    through it and judge each other's beats on their own clocks. The budget holds exactly, and
    `best`, `trials`, `report` and the dashboard read through the proxy what the database
    holds. The search then exits with code 1 and names the killed worker."""
    # 8 epochs: the kill at epoch 2 of a trial lands inside it even on a loaded machine
    config = write_study(tmp_path, "px", n_trials=8, epochs=8, pruner="none")
    proxy, url = start_proxy(pg_url, tmp_path / "proxy.log")
    log = tmp_path / "search.log"
    search = start(
        "search", str(config), "--storage", url, "--workers", "2", "--heartbeat", "2", "-v", log=log
    )
    wait_for(lambda: len(epochs_seen(log, "cpu1")) >= 2, 300, "cpu1 inside its second trial")
    *done_by_cpu1, killed = epochs_seen(log, "cpu1")
    running_before = {t.number for t in trials(pg_url, "px") if t.state == TrialState.RUNNING}
    os.kill(worker_pid(search.pid, "cpu1"), signal.SIGKILL)
    killed_at = time.time()
    assert search.wait(timeout=400) == 1, log.read_text()[-3000:]
    assert "worker cpu1 was killed by SIGKILL" in log.read_text()
    found = trials(pg_url, "px")
    assert_budget_kept(found, 8)  # the killed trial's retry among them, nothing twice
    # the search stored the proxy's URL: its workers, and `autofreeze worker`, reach it there
    assert records.config(load_existing_study(pg_url, "px"))["study"]["storage"] == url
    (failed,) = [t for t in found if t.state == TrialState.FAIL]
    assert failed.number == killed and killed in running_before
    assert {found[n].state for n in done_by_cpu1} <= set(FINISHED)  # both workers ran trials
    assert epochs_seen(log, "cpu0")
    # failed within the grace period (3 heartbeats of 2 s), plus the beat at which the busy
    # worker last looked and the poll of the waiting one
    stale_after = failed.datetime_complete.timestamp() - killed_at
    assert stale_after < 6 + 2 + 2 + 5, stale_after
    assert_read_alike(url, pg_url, "px", tmp_path)
    stop_proxy(proxy, tmp_path / "proxy.log")


def epochs_seen(log: Path, worker: str) -> list[int]:
    """The trials ``worker`` ran, in order, from its relayed epoch lines (``-v``); the last one
    only once it reached its second epoch."""
    lines = re.findall(rf"^\[{worker}\]\s+#(\d+) .* epoch (\d+)/", log.read_text(), re.M)
    numbers = list(dict.fromkeys(int(n) for n, _ in lines))
    if numbers and not any(int(n) == numbers[-1] and int(e) >= 2 for n, e in lines):
        numbers.pop()
    return numbers


def worker_pid(parent: int, label: str) -> int:
    """The pid of the worker ``label`` (``cpu1``) that the search ``parent`` started."""
    for pid in children(parent):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"AUTOFREEZE_WORKER={label}".encode() in environ:
            return pid
    raise AssertionError(f"no worker {label} under {parent}")


def assert_read_alike(proxy_url: str, db_url: str, name: str, tmp_path) -> None:
    """`best`, `trials` and `report` through the proxy print exactly what they print from the
    database; optuna-dashboard on the proxy shows every trial."""
    urls = (proxy_url, db_url)
    for command in (["best", "--json"], ["trials", "--json"]):
        shown = [invoke(*command, "--storage", u, "--study-name", name) for u in urls]
        assert [r.exit_code for r in shown] == [0, 0], shown[0].output
        assert json.loads(shown[0].stdout) == json.loads(shown[1].stdout)
    reports = [tmp_path / "proxy.md", tmp_path / "database.md"]
    for u, out in zip(urls, reports, strict=True):
        result = invoke("report", "--storage", u, "--study-name", name, "--out", str(out))
        assert result.exit_code == 0, result.output
    assert reports[0].read_text() == reports[1].read_text()
    assert f"# autofreeze report: {name}" in reports[0].read_text()
    import optuna_dashboard

    app = optuna_dashboard.wsgi(open_storage(proxy_url, read_only=True))
    (summary,) = get(app, "/api/studies")["study_summaries"]
    detail = get(app, f"/api/studies/{summary['study_id']}")
    assert summary["study_name"] == name
    assert len(detail["trials"]) == len(trials(db_url, name))


def get(app, path: str):
    """A GET request to a WSGI app, its JSON answer."""
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status == ["200 OK"], (status, body[:300])
    return json.loads(body)
