"""Optuna's gRPC storage proxy: `grpc://` URLs, `autofreeze proxy` (its one-line errors, a
stop signal) and the heartbeats the workers beat through a real proxy process. Studies shared
by real workers through the proxy: tests/search/test_proxy_workers.py."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from autofreeze.study import records
from autofreeze.study.proxy import ProxyStorage, proxy_address
from autofreeze.study.proxy_server import say_when_listening
from autofreeze.study.storage import open_storage, storage_lost
from tests.commands import invoke
from tests.processes import free_port, start, stop_proxy, wait_for
from tests.studies import write_study


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("grpc://127.0.0.1:13000", ("127.0.0.1", 13000)),
        ("grpc://tuner.example.org:1/", ("tuner.example.org", 1)),
        ("grpc://[::1]:65535", ("[::1]", 65535)),
    ],
)
def test_a_proxy_url_is_a_host_and_a_port(url, address):
    assert proxy_address(url) == address


@pytest.mark.parametrize(
    "url",
    [
        "grpc://127.0.0.1",
        "grpc://127.0.0.1:0",
        "grpc://127.0.0.1:70000",
        "grpc://127.0.0.1:13000/study",
        "grpc://127.0.0.1:13000?timeout=1",
        "grpc://u:secret@127.0.0.1:13000",
    ],
)
def test_anything_else_is_a_bad_url_in_one_masked_line(url):
    result = invoke("trials", "--storage", url, "--study-name", "s")
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: bad storage URL 'grpc://") and "grpc://HOST:PORT" in line
    assert "secret" not in line


def test_without_grpcio_a_proxy_url_and_the_proxy_command_say_what_to_install(
    tmp_path, monkeypatch
):
    monkeypatch.setattr("autofreeze.study.proxy._importable", lambda module: module != "grpc")
    cases = (
        ["trials", "--storage", "grpc://127.0.0.1:9", "--study-name", "s"],
        ["proxy", "--storage", f"sqlite:///{tmp_path}/x.db", "--port", str(free_port())],
    )
    for args in cases:
        result = invoke(*args)
        assert result.exit_code == 1 and "Traceback" not in result.output
        (line,) = result.stderr.strip().splitlines()
        assert line.endswith("needs grpcio and protobuf: pip install 'autofreeze[grpc]'"), line
    assert not list(tmp_path.iterdir())


def test_the_proxy_command_refuses_what_it_cannot_serve_in_one_line(tmp_path):
    def error(*args: str) -> str:
        result = invoke("proxy", *args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        (line,) = result.stderr.strip().splitlines()
        return line

    assert invoke("proxy").exit_code == 2  # no database named
    assert "serves a database, not another proxy" in error("--storage", "grpc://127.0.0.1:9")
    bad = error("--storage", "notadatabase://u:hunter2@x", "--port", str(free_port()))
    assert bad.startswith("Error: bad storage URL 'notadatabase://u:***@x'")
    down = error("--storage", "postgresql://u:hunter2@127.0.0.1:1/af", "--port", str(free_port()))
    assert down.startswith("Error: cannot open storage 'postgresql://u:***@127.0.0.1:1/af'")
    with socket.socket() as taken:  # any process listening there
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        new = tmp_path / "new.db"
        line = error("--storage", f"sqlite:///{new}", "--port", str(port))
    assert line == (
        f"Error: cannot serve on 127.0.0.1:{port}: Address already in use; give another --port "
        "(or --host)"
    )
    assert not new.exists()  # refused before the database was created


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """A real `autofreeze proxy` in front of a new SQLite file: (process, port, log)."""
    folder = tmp_path_factory.mktemp("proxy")
    port = free_port()
    log = folder / "proxy.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "autofreeze", "proxy", "--storage", f"sqlite:///{folder}/p.db"]
        + ["--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    try:
        wait_for(lambda: "workers use --storage" in log.read_text(), 60, "the proxy to start")
        ProxyStorage(host="127.0.0.1", port=port).wait_server_ready(timeout=30)
        yield proc, port, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_workers_heartbeats_go_through_the_proxy_and_a_silent_trial_is_retried(
    proxy, monkeypatch
):
    """Optuna's proxy has no heartbeat: each worker beats through its public API, and another
    judges on its own clock (here a fake one) that a beat unchanged for three intervals is a
    dead worker: the trial is failed and re-queued, linked to the one it replaces."""
    _, port, _ = proxy
    url = f"grpc://127.0.0.1:{port}"
    beater, judge = (open_storage(url, heartbeat=1, progress=print) for _ in range(2))
    study = optuna.create_study(storage=beater, study_name="beats", direction="maximize")
    judged = optuna.load_study(storage=judge, study_name="beats")
    trials = alive, silent, never = [study.ask() for _ in range(3)]
    study_id = beater.get_study_id_from_name("beats")
    ids = {t: beater.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials}
    clock = [1000.0]
    monkeypatch.setattr("autofreeze.study.proxy.time.monotonic", lambda: clock[0])
    for step in range(8):  # the judge looks every half interval; `silent` beats until 1 s
        beater.record_heartbeat(ids[alive])
        if step <= 2:
            beater.record_heartbeat(ids[silent])
        assert judge.fail_stale_trials(judged) == [], step
        clock[0] += 0.5
    clock[0] = 1003.9  # `silent`'s last beat was first seen at 1001.0: 2.9 s ago
    assert judge.fail_stale_trials(judged) == []
    clock[0] = 1004.0  # three intervals
    assert judge.fail_stale_trials(judged) == [silent.number]
    assert judge.fail_stale_trials(judged) == []  # failed once
    after = {t.number: t for t in study.get_trials()}
    assert after[silent.number].state == TrialState.FAIL
    assert after[alive.number].state == after[never.number].state == TrialState.RUNNING
    (retry,) = [t for t in after.values() if t.state == TrialState.WAITING]
    assert records.retry_of(retry) == silent.number
    assert records.heartbeat(after[alive.number])["n"] >= 8  # the beats are in the storage


def test_a_worker_waits_for_its_study_behind_the_proxy_then_says_what_is_missing(proxy):
    _, port, _ = proxy
    url = f"grpc://127.0.0.1:{port}"
    result = invoke("worker", "--storage", url, "--study-name", "later", "--wait", "1.5")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert (
        lines[0]
        == f"waiting up to 2s for study 'later' in {url} (its search is still preparing it)"
    )
    assert lines[-1].startswith(f"Error: no study 'later' in {url} (studies there: beats)")
    assert len(lines) == 2, lines


def test_the_proxy_says_a_taken_port_in_one_line_and_stops_on_ctrl_c(proxy):
    """gRPC binds with SO_REUSEPORT: a second proxy on the first one's port would share it
    silently; it is refused. Ctrl-C stops a proxy like every long command: exit code 130."""
    proc, port, log = proxy
    result = invoke("proxy", "--storage", f"sqlite:///{log.parent}/unused.db", "--port", str(port))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"cannot serve on 127.0.0.1:{port}: Address already in use" in result.stderr
    connected = open_storage(f"grpc://127.0.0.1:{port}", progress=print)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text and text.strip().splitlines()[-1] == "interrupted", text
    # a command whose proxy stops under it ends with one line, not a traceback
    with pytest.raises(Exception) as gone:
        connected.get_all_studies()
    assert storage_lost(gone.value).startswith("UNAVAILABLE: ")


def test_a_search_told_to_retry_waits_for_a_proxy_that_starts_after_it(tmp_path):
    """A job script may start the search beside its proxy: with ``--connect-attempts`` the
    search retries until the proxy answers, then runs; by default it fails at once, in one
    line, and leaves nothing behind."""
    config = write_study(tmp_path, "late", n_trials=1, epochs=1, study_extra="baselines = false")
    port = free_port()
    url = f"grpc://127.0.0.1:{port}"
    at_once = invoke("search", str(config), "--storage", url)
    assert at_once.exit_code == 1 and "Traceback" not in at_once.output
    last = at_once.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: cannot reach the storage proxy {url}: "), last
    assert not list(tmp_path.glob("*.db")) and not list(tmp_path.glob("*-artifacts"))

    db = f"sqlite:///{tmp_path}/late.db"
    # the proxy process needs seconds to import and serve: the search's first tries miss it
    proxy = start("proxy", "--storage", db, "--port", str(port), log=tmp_path / "proxy.log")
    result = invoke("search", str(config), "--storage", url, "--connect-attempts", "6")
    assert result.exit_code == 0, result.output
    assert f"storage proxy {url} unreachable" in result.stderr  # it waited for the proxy
    found = optuna.load_study(study_name="late", storage=db).get_trials()
    assert [t.state for t in found] == [TrialState.COMPLETE]
    stop_proxy(proxy, tmp_path / "proxy.log")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])  # noqa: S104 (every interface)
def test_the_proxy_names_its_address_only_once_the_port_answers(host):
    """`autofreeze proxy` says "workers use --storage ..." when its port accepts connections,
    not before Optuna's server has bound it: a job script (or a test) that starts workers on
    that line found the port closed (the line used to come first)."""
    said: list[str] = []
    port = free_port()
    thread = say_when_listening(host, port, "workers use it", said.append)
    time.sleep(0.3)
    assert said == []  # nothing listens yet
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        thread.join(timeout=5)
    assert said == ["workers use it"]


def test_a_silence_ended_by_an_error_is_said_to_be_over_once():
    """A heartbeat's write may meet the proxy down, ask again, and end in an error once it
    answers (the trial finished meanwhile), which the heartbeat lets go: an answer all the same,
    said once. Before, only a call that went through said it: a worker on CI said "not
    answering" and never "answers again" (test_proxy_faults.py)."""
    import grpc

    class Down(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

        def details(self):
            return "Socket closed"

    storage = ProxyStorage(host="127.0.0.1", port=free_port())  # never called: calls are given
    storage.heartbeat_interval = 1
    said: list[str] = []
    storage.progress = said.append
    answers = iter([Down(), optuna.exceptions.UpdateFinishedTrialError("finished meanwhile")])

    def beat():
        raise next(answers)

    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.riding_out(beat)
    assert said == [
        "storage proxy not answering (UNAVAILABLE: Socket closed); asking again for up to 120s",
        "storage proxy answers again: going on",
    ]
    assert storage.riding_out(lambda: 7) == 7 and len(said) == 2  # said once, not again
