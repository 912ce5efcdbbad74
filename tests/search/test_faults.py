"""Faults of real processes: many of them creating one new database at the same moment, workers
started before their study exists, and workers whose parent dies under them."""

from __future__ import annotations

import subprocess
import sys
import time

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from autofreeze.cli import cli
from tests.processes import (
    FINISHED,
    STARTED,
    alive,
    assert_budget_kept,
    children,
    drop_pg_database,
    new_pg_database,
    start,
    trials,
    wait_for,
)
from tests.studies import write_study

pytestmark = pytest.mark.slow  # real processes: the full suite, not `make check`

CREATE = """
import sys, time
from pathlib import Path
import optuna
from autofreeze.study.storage import open_storage

url, folder, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
(folder / f"ready-{me}").touch()
while not (folder / "go").exists():
    time.sleep(0.002)
storage = open_storage(url, progress=lambda _: None)
optuna.create_study(storage=storage, study_name="s", load_if_exists=True)
"""
# 4 processes a round, 2 rounds: without the retry of the race's losers the test failed in its
# first round in 6 runs of 6 on SQLite and on PostgreSQL (it ran 6 processes, 3 rounds)
PROCESSES = 4
ROUNDS = 2


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_creating_one_new_database_together_all_succeed(tmp_path, backend):
    """What a job array does: every process opens the new database at the same moment. Before
    the race was handled, about half of such starts had one process fail with "table studies
    already exists" (SQLite) or a duplicate enum type (PostgreSQL)."""
    for round_ in range(ROUNDS):
        folder = tmp_path / f"round{round_}"
        folder.mkdir()
        url = f"sqlite:///{folder}/new.db" if backend == "sqlite" else new_pg_database()
        try:
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", CREATE, url, str(folder), str(i)],
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for i in range(PROCESSES)
            ]
            STARTED.extend(procs)
            wait_for(
                lambda f=folder: len(list(f.glob("ready-*"))) == PROCESSES, 120, "every process"
            )
            (folder / "go").touch()
            errors = [p.communicate(timeout=120)[1] for p in procs]
            assert [p.returncode for p in procs] == [0] * PROCESSES, "\n".join(errors)[-3000:]
            assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["s"]
        finally:
            if backend == "postgresql":
                drop_pg_database(url)


def test_a_worker_waits_for_its_study_then_says_what_is_missing(tmp_path):
    url = f"sqlite:///{tmp_path}/empty.db"
    t0 = time.monotonic()
    result = CliRunner().invoke(
        cli, ["worker", "--storage", url, "--study-name", "later", "--wait", "1.5"]
    )
    waited = time.monotonic() - t0
    assert result.exit_code == 1 and 1.5 <= waited < 10, (waited, result.output)
    lines = result.stderr.strip().splitlines()
    assert (
        lines[0]
        == f"waiting up to 2s for study 'later' in {url} (its search is still preparing it)"
    )
    assert lines[-1].startswith("Error: no study 'later' in ") and len(lines) == 2, lines


def test_a_search_and_its_workers_started_together_on_a_new_database(tmp_path):
    """The job array on PostgreSQL: two workers start on a new database before the search has
    made the study; they wait for it, join it, and every recipe runs once within the budget.

    The race is made to happen: the search starts only once both workers have said they are
    waiting. How many trials each worker then wins is timing (the search may finish its eight
    one-epoch trials before a worker polls), so the test asserts what holds whatever the timing:
    each worker waited, found the study and ended cleanly, and the budget was kept."""
    url = new_pg_database()
    try:
        config = write_study(tmp_path, "array", n_trials=8, epochs=1, pruner="none")
        env = {"AUTOFREEZE_STORAGE": url}
        logs = [tmp_path / f"w{i}.log" for i in range(2)]
        workers = [
            start("worker", str(config), "--threads", "1", "--wait", "300", log=log, env=env)
            for log in logs
        ]
        wait_for(
            lambda: (
                all("waiting up to" in log.read_text() for log in logs if log.exists())
                and all(log.exists() for log in logs)
            ),
            120,
            "both workers waiting for the study",
        )
        assert optuna.get_all_study_summaries(url) == []  # they waited before it existed
        search = start("search", str(config), log=tmp_path / "search.log", env=env)
        for proc, log in zip([search, *workers], [tmp_path / "search.log", *logs], strict=True):
            assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
        assert_budget_kept(trials(url, "array"), 8)
        ran = [int(log.read_text().rsplit("worker done: ", 1)[1].split()[0]) for log in logs]
        assert sum(ran) <= 8, ran  # each joined the study, ended cleanly, and kept the budget
    finally:
        drop_pg_database(url)


def test_workers_outlive_their_dead_parent_and_the_next_run_finishes(tmp_path):
    """SIGKILL on ``search --workers 2`` (or its terminal closing): each worker finishes the
    trial it is in and records it, instead of dying at its next progress line and leaving the
    trial failed with no reason; the next search runs the rest of the budget."""
    config = write_study(tmp_path, "orphan", n_trials=8, epochs=4, pruner="none")
    url = f"sqlite:///{tmp_path}/orphan.db"
    parent = subprocess.Popen(
        [sys.executable, "-m", "autofreeze", "search", str(config), "--workers", "2"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # the pipe the workers' lines go through dies with the parent
    )
    STARTED.append(parent)
    wait_for(
        lambda: sum(t.state == TrialState.RUNNING for t in trials(url, "orphan")) == 2,
        180,
        "both workers inside a trial",
    )
    workers = children(parent.pid)
    assert len(workers) == 2
    parent.kill()
    parent.wait()
    parent.stderr.close()
    # what the workers were in when their parent died (a trial may have ended and the next
    # begun since both were seen running): those they finish, and take nothing after them
    at_kill = trials(url, "orphan")
    running = {t.number for t in at_kill if t.state == TrialState.RUNNING}
    done = {t.number for t in at_kill if t.state in FINISHED}
    assert running
    wait_for(lambda: not any(alive(pid) for pid in workers), 240, "the workers to finish and stop")
    after = {t.number: t for t in trials(url, "orphan")}
    assert all(after[n].state in FINISHED for n in running), [after[n].state for n in running]
    assert not [t for t in after.values() if t.state == TrialState.RUNNING]
    finished = {n for n, t in after.items() if t.state in FINISHED}
    assert finished == done | running  # they took no new trial
    # the rest in one process (a resume with workers: test_worker_kills.py)
    again = start("search", str(config), log=tmp_path / "again.log")
    assert again.wait(timeout=400) == 0, (tmp_path / "again.log").read_text()[-3000:]
    assert_budget_kept(trials(url, "orphan"), 8)


def test_a_short_kill_and_resume_soak_loses_nothing():
    """benchmarks/soak.py, one round: SIGTERM on PostgreSQL to the parent or a worker
    mid-search (within 6 s of the workers' start, while the eight trials run; the benchmark
    waits up to 20 s and draws SIGINT and SIGKILL too, on SQLite as well), then the search
    resumed; see soak.violations and soak.fault_problems for what is checked. SIGTERM and
    SIGINT on SQLite, with and without workers: tests/search/test_signals.py and
    test_worker_kills.py."""
    from benchmarks.soak import soak

    lines: list[str] = []
    rounds = soak(
        1,
        ["postgresql"],
        seed=2,
        trials=8,
        epochs=2,
        progress=lines.append,
        latest=6.0,
        signals=["SIGTERM"],
        cycle=True,
    )
    assert [(r.storage, r.signal) for r in rounds] == [("postgresql", "SIGTERM")]
    assert [r.problems for r in rounds] == [[]], lines
    assert all(r.resumed_code == 0 for r in rounds), lines
