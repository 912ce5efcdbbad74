"""Faults behind Optuna's gRPC storage proxy: the proxy SIGKILLed and restarted under a running
search, a call cut by the proxy's death, a trial that nobody runs. Real `autofreeze proxy`
processes, real PostgreSQL (the shared server's test databases). The same faults at scale, and
a PostgreSQL that allows fewer connections than there are workers: benchmarks/load_harness.py."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import optuna
import pytest
from optuna.storages import GrpcStorageProxy
from optuna.trial import TrialState

from autofreeze.study import records
from autofreeze.study.proxy import ORPHAN_AFTER
from autofreeze.study.storage import open_storage, storage_lost
from tests.processes import (
    assert_budget_kept,
    restart_proxy,
    start,
    start_proxy,
    stop_proxy,
    trials,
    wait_for,
)
from tests.studies import write_study

pytestmark = pytest.mark.slow  # real processes: the full suite, not `make check`


def test_the_proxy_is_killed_mid_study_and_restarted_and_the_workers_ride_it_out(tmp_path, pg_url):
    """`search --workers 2` through the proxy; the proxy is SIGKILLed while trials run and
    started again on its port 3 s later. Each process says once that the proxy does not answer
    and once that it answers again, and goes on: the search ends with exit code 0, the budget
    exact, nothing lost or run twice, no traceback."""
    config = write_study(tmp_path, "pk", n_trials=8, epochs=4, pruner="none")
    proxy, url = start_proxy(pg_url, tmp_path / "proxy.log")
    log = tmp_path / "search.log"
    search = start(
        "search", str(config), "--storage", url, "--workers", "2", "--heartbeat", "2", "-v", log=log
    )
    wait_for(lambda: log.read_text().count(" epoch ") >= 3, 300, "trials under way")
    proxy.send_signal(signal.SIGKILL)
    proxy.wait()
    time.sleep(3)
    proxy = restart_proxy(pg_url, url, tmp_path / "proxy2.log")
    assert search.wait(timeout=400) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text
    silent = [line for line in text.splitlines() if "storage proxy not answering" in line]
    again = [line for line in text.splitlines() if "storage proxy answers again" in line]
    # once per process that called meanwhile: the workers and the search (it reads the study)
    assert 1 <= len(silent) <= 3 and len(again) == len(silent), text
    assert "asking again for up to 120s" in silent[0]
    assert_budget_kept(trials(pg_url, "pk"), 8)
    stop_proxy(proxy, tmp_path / "proxy2.log")


@pytest.fixture
def proxy_on_sqlite(tmp_path):
    db = f"sqlite:///{tmp_path}/p.db"
    proc, url = start_proxy(db, tmp_path / "proxy.log")
    yield db, url, proc
    if proc.poll() is None:
        proc.kill()


def test_a_worker_rides_out_a_restarting_proxy_and_a_reader_fails_at_once(
    tmp_path, proxy_on_sqlite
):
    """A worker's storage (heartbeats on) asks a proxy that died again until it is back and
    says so twice; a reader's fails at once, in one line; a worker gives up after its ride-out
    with the same line."""
    db, url, proc = proxy_on_sqlite
    said: list[str] = []
    worker = open_storage(url, heartbeat=1, progress=said.append)
    reader = open_storage(url, progress=print)
    proc.kill()
    proc.wait()
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as gone:
        reader.get_all_studies()
    assert time.monotonic() - t0 < 2
    assert storage_lost(gone.value).startswith("UNAVAILABLE: ")
    answer: list = []
    asking = threading.Thread(target=lambda: answer.append(worker.get_all_studies()))
    asking.start()
    wait_for(lambda: said, 30, "the worker to say the proxy is silent")
    assert asking.is_alive()
    proc = restart_proxy(db, url, tmp_path / "proxy2.log")
    asking.join(timeout=60)
    assert answer == [[]]
    assert said[0].startswith("storage proxy not answering (UNAVAILABLE: ")
    assert said[0].endswith("; asking again for up to 120s")
    assert said[1:] == ["storage proxy answers again: going on"]
    proc.kill()
    proc.wait()
    worker.ride_out = 1.0
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as gone:
        worker.get_all_studies()
    assert 1.0 <= time.monotonic() - t0 < 5
    assert storage_lost(gone.value).startswith("UNAVAILABLE: ")


def test_a_tell_that_went_through_as_the_proxy_died_is_a_success(proxy_on_sqlite, monkeypatch):
    """The proxy commits a trial's COMPLETE and dies before it answers: the worker asks again,
    finds the trial finished as it asked, and the tell succeeds (no 'already finished')."""
    _, url, _ = proxy_on_sqlite
    storage = open_storage(url, heartbeat=1, progress=print)
    study = optuna.create_study(storage=storage, study_name="tell", direction="maximize")
    trial = study.ask()
    real = GrpcStorageProxy.set_trial_state_values
    cut = []

    def answer_lost(self, trial_id, state, values=None):
        result = real(self, trial_id, state, values)
        if not cut:  # the first call went through; its answer is lost with the proxy
            cut.append(1)
            raise _Unavailable()
        return result

    monkeypatch.setattr(GrpcStorageProxy, "set_trial_state_values", answer_lost)
    study.tell(trial, 0.75)
    assert cut == [1]
    (told,) = study.get_trials()
    assert told.state == TrialState.COMPLETE and told.value == 0.75
    # the call did not go through, and another worker failed the trial meanwhile (stale):
    # a finished trial other than the one asked for is not taken for ours
    other = storage.create_new_trial(storage.get_study_id_from_name("tell"))

    def failed_meanwhile(self, trial_id, state, values=None):
        if not cut:
            cut.append(1)
            real(self, trial_id, TrialState.FAIL)
            raise _Unavailable()
        return real(self, trial_id, state, values)

    cut.clear()
    monkeypatch.setattr(GrpcStorageProxy, "set_trial_state_values", failed_meanwhile)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(other, TrialState.COMPLETE, [0.5])


class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "Socket closed"


def test_a_trial_nobody_runs_never_beats_and_is_retried_once(proxy_on_sqlite, monkeypatch):
    """A trial created (or claimed) by a call that went through as the proxy died has nobody
    behind it: it never beats. It is failed and re-queued once, after ORPHAN_AFTER seconds of
    looking at it, counted from when the proxy last answered again."""
    _, url, _ = proxy_on_sqlite
    judge = open_storage(url, heartbeat=1, progress=print)
    study = optuna.create_study(storage=judge, study_name="orphan", direction="maximize")
    orphan = study.ask()
    clock = [1000.0]
    monkeypatch.setattr("autofreeze.study.proxy.time.monotonic", lambda: clock[0])
    assert judge.fail_stale_trials(study) == []
    clock[0] = 1000 + ORPHAN_AFTER - 1
    judge.answered_again = 1010.0  # the proxy was silent until then: nobody could beat
    assert judge.fail_stale_trials(study) == []
    clock[0] = 1010 + ORPHAN_AFTER
    assert judge.fail_stale_trials(study) == [orphan.number]
    assert judge.fail_stale_trials(study) == []  # once
    after = study.get_trials()
    assert after[orphan.number].state == TrialState.FAIL
    (retry,) = [t for t in after if t.state == TrialState.WAITING]
    assert records.retry_of(retry) == orphan.number
