"""Real autofreeze processes for the tests of distributed studies and faults: start them,
read their study back, check its budget. Every process started here is killed after its test
(see ``conftest._no_orphans``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
from optuna.trial import TrialState

from autofreeze.recipes import BASELINE_NAMES

BASELINES = set(BASELINE_NAMES)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


STARTED: list[subprocess.Popen] = []


def start(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "autofreeze", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        env={**os.environ, **(env or {})},
    )
    STARTED.append(proc)
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_proxy(db_url: str, log: Path) -> tuple[subprocess.Popen, str]:
    """``autofreeze proxy`` in front of the database ``db_url`` on a free port; returns the
    process and its ``grpc://`` URL once the proxy answers."""
    port = free_port()
    return _serve_proxy(db_url, port, log, "the proxy to start"), f"grpc://127.0.0.1:{port}"


def _serve_proxy(db_url: str, port: int, log: Path, what: str) -> subprocess.Popen:
    """``autofreeze proxy`` in front of ``db_url`` on ``port``, once it says so and answers."""
    from autofreeze.study.proxy import ProxyStorage

    proc = start("proxy", "--storage", db_url, "--port", str(port), log=log)

    def serving() -> bool:
        assert proc.poll() is None, log.read_text()
        return "workers use --storage" in log.read_text()

    wait_for(serving, 60, what)
    ProxyStorage(host="127.0.0.1", port=port).wait_server_ready(timeout=30)
    return proc


def stop_proxy(proc: subprocess.Popen, log: Path) -> None:
    """SIGTERM stops the proxy as it stops every long command: exit code 143, one line."""
    proc.terminate()
    assert proc.wait(timeout=30) == 143, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text and text.strip().splitlines()[-1] == "stopped by SIGTERM", text


_READERS: dict[str, optuna.storages.RDBStorage] = {}


def trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials as they are now (KeyError: no such study yet).

    The tests poll this every 0.2 s while real processes run. ``optuna.load_study`` sets up a
    storage each time (its engine, its tables, its schema version: about 50 ms of CPU), which
    took a quarter of a core from the processes under test; one storage a URL is kept instead,
    without a pool (no connection is held between calls: a test may cap the server's
    connections) and without Optuna's cache (every read is the database's).
    """
    from sqlalchemy.pool import NullPool

    if url not in _READERS:
        _READERS[url] = optuna.storages.RDBStorage(
            url, engine_kwargs={"poolclass": NullPool}, skip_compatibility_check=True
        )
    storage = _READERS[url]
    return storage.get_all_trials(storage.get_study_id_from_name(name))


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (KeyError, ValueError):  # the study does not exist yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def assert_budget_kept(all_trials, budget: int) -> None:
    """Exactly the budget finished; nothing left running; every lost trial was retried."""
    finished = [t for t in all_trials if t.state in FINISHED]
    assert len(finished) == budget
    lost_race = {t.number for t in all_trials if t.user_attrs.get("over_budget")}
    assert not [
        t
        for t in all_trials
        if t.state == TrialState.RUNNING
        or (t.state == TrialState.WAITING and t.user_attrs.get("retry_of") not in lost_race)
    ]
    done_baselines = [t.user_attrs["baseline"] for t in finished if "baseline" in t.user_attrs]
    assert sorted(done_baselines) == sorted(BASELINES)  # each exactly once
    for t in all_trials:
        if t.state == TrialState.FAIL and t.number not in lost_race:
            assert "fail_reason" not in t.user_attrs  # nothing diverged in these studies
            retries = [r for r in all_trials if r.user_attrs.get("retry_of") == t.number]
            assert retries and retries[0].state in FINISHED, f"trial {t.number} was lost"


def trials_per_minute(all_trials) -> float:
    done = [t for t in all_trials if t.state in FINISHED]
    span = max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    return len(done) / span.total_seconds() * 60


def new_pg_database() -> str:
    """A new, empty PostgreSQL database (dropped by :func:`drop_pg_database`)."""
    import psycopg

    name = f"autofreeze_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def drop_pg_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def proc_stats():
    """``(pid, fields)`` of every process, ``fields`` from /proc/PID/stat after the command
    name: state, parent, process group, ..."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        yield int(stat.parent.name), fields


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    return [p for p, fields in proc_stats() if int(fields[1]) == pid]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped by its new parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def pg_bin(tool: str) -> str:
    """PostgreSQL's server tool ``tool`` (``initdb``, ``pg_ctl``), of the newest version."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"), key=lambda p: p.parts[-3])
    if not found:
        raise FileNotFoundError(f"no PostgreSQL {tool} under /usr/lib/postgresql")
    return str(found[-1])


def _as_postgres(*command: str) -> None:
    """Run a PostgreSQL server tool, as the ``postgres`` user when this process is root (the
    server refuses to run as root)."""
    import shlex

    args = list(command)
    if os.geteuid() == 0:
        args = ["su", "postgres", "-c", shlex.join(args)]
    subprocess.run(args, check=True, stdin=subprocess.DEVNULL, capture_output=True)


def start_pg_cluster(max_connections: int) -> tuple[Path, str]:
    """A PostgreSQL cluster of one's own (never the shared server): ``initdb`` into a new
    folder, started on a free port of 127.0.0.1 with ``max_connections``, trust auth. Returns
    its folder (for :func:`stop_pg_cluster`) and the URL of its ``postgres`` database."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="af_pg_"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    _as_postgres(pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c max_connections={max_connections}"
    )
    _as_postgres(
        pg_bin("pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o", options, "start"
    )
    return folder, f"postgresql://postgres@127.0.0.1:{port}/postgres"


def stop_pg_cluster(folder: Path) -> None:
    """Stop a cluster of :func:`start_pg_cluster` (at once: its clients are cut) and remove it."""
    import shutil

    try:
        _as_postgres(pg_bin("pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def restart_proxy(db_url: str, url: str, log: Path) -> subprocess.Popen:
    """``autofreeze proxy`` again on the port of ``url`` (after the previous one died); returns
    once it answers."""
    from autofreeze.study.proxy import proxy_address

    _, port = proxy_address(url)
    return _serve_proxy(db_url, port, log, "the proxy to restart")
