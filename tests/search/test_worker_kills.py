"""A worker SIGKILLed inside a trial, and a search with workers stopped by Ctrl-C: real worker
processes on a real SQLite study; nothing is lost or counted twice, and the next run resumes.
(A file of its own beside test_distributed.py: each takes a minute or more, and the suite runs
files in parallel, one process each; the same on PostgreSQL through the proxy:
test_proxy_workers.py; the soak and dead parents: test_faults.py.)"""

from __future__ import annotations

import signal
import time

import pytest
from optuna.trial import TrialState

from tests.processes import (
    FINISHED,
    assert_budget_kept,
    start,
    trials,
    wait_for,
)
from tests.search.test_signals import INTERRUPTED_LINE, RESUME
from tests.studies import write_study

pytestmark = pytest.mark.slow  # real processes: the full suite, not `make check`


def test_sigkilled_worker_trial_fails_and_is_retried(tmp_path):
    # 12 epochs: the kill at epoch 2 lands inside a trial even on a loaded machine (with 6, the
    # worker once finished its trial between the log check and the kill: nothing to retry)
    config = write_study(tmp_path, "kill", n_trials=8, epochs=12, pruner="none")
    url = f"sqlite:///{tmp_path}/kill.db"
    a = start("search", str(config), "--heartbeat", "2", log=tmp_path / "a.log")
    wait_for(lambda: trials(url, "kill"), 120, "the study to be created")
    # the worker runs the stored config: its heartbeat is the search's --heartbeat 2
    b = start("worker", str(config), "--threads", "1", "-v", log=tmp_path / "b.log")
    wait_for(
        lambda: "epoch 2/12" in (tmp_path / "b.log").read_text(),  # -v: a line per epoch
        120,
        "the second worker to be inside a trial",
    )
    running_before = {t.number for t in trials(url, "kill") if t.state == TrialState.RUNNING}
    b.send_signal(signal.SIGKILL)
    b.wait()
    killed_at = time.time()
    assert a.wait(timeout=400) == 0, (tmp_path / "a.log").read_text()[-3000:]
    found = trials(url, "kill")
    assert_budget_kept(found, 8)
    failed = [t for t in found if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].number in running_before
    # the surviving worker fails it at its first look once the grace (3 heartbeats of 2 s, the
    # last up to 2 s before the kill) is over: before it starts any trial after that, or within
    # its poll of 2 s where it had none left to start. Measured against its own steps, not a
    # fixed time, so that a loaded machine, where its trials take longer, fails nothing here
    failed_at = failed[0].datetime_complete.timestamp()
    started_after = [
        t.datetime_start.timestamp()
        for t in found
        if t.number != failed[0].number and t.datetime_start.timestamp() > killed_at + 6 + 1
    ]
    assert failed_at < min(started_after, default=killed_at + 6 + 2 + 5) + 0.5, (
        failed_at - killed_at,
        [s - killed_at for s in started_after],
    )


def test_ctrl_c_stops_workers_keeps_the_study_consistent_and_resumes(tmp_path):
    # trials of 8 epochs: the Ctrl-C lands while one runs, even on a loaded machine
    config = write_study(tmp_path, "intr", n_trials=8, epochs=8, pruner="none")
    url = f"sqlite:///{tmp_path}/intr.db"
    log = tmp_path / "a.log"
    proc = start("search", str(config), "--workers", "2", "--heartbeat", "2", log=log)
    wait_for(
        lambda: (
            sum(t.state in FINISHED for t in trials(url, "intr")) >= 1
            and any(t.state == TrialState.RUNNING for t in trials(url, "intr"))
        ),
        180,
        "a finished and a running trial",
    )
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
    text = log.read_text()
    assert text.strip().splitlines()[-1] == INTERRUPTED_LINE, text[-3000:]
    assert text.count(RESUME) == 1, text[-3000:]  # the workers leave it to the search
    after = trials(url, "intr")
    assert not [t for t in after if t.state == TrialState.RUNNING]
    interrupted = [t for t in after if t.state == TrialState.FAIL]
    assert interrupted
    for t in interrupted:
        assert any(r.user_attrs.get("retry_of") == t.number for r in after)
    finished_before = {t.number: t.value for t in after if t.state in FINISHED}
    again = start(
        "search", str(config), "--workers", "2", "--heartbeat", "2", log=tmp_path / "b.log"
    )
    assert again.wait(timeout=400) == 0, (tmp_path / "b.log").read_text()[-3000:]
    final = trials(url, "intr")
    assert_budget_kept(final, 8)
    assert {t.number: t.value for t in final if t.number in finished_before} == finished_before
