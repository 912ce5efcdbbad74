"""Optuna's gRPC storage proxy, the workers' side: the storage URL ``grpc://HOST:PORT``.

One ``autofreeze proxy`` process (:mod:`autofreeze.study.proxy_server`) holds the study
database's connections; workers and readers reach it through Optuna's
:class:`optuna.storages.GrpcStorageProxy`, which implements Optuna's public ``BaseStorage`` and
so carries everything autofreeze stores (trials, the machine record, notes, the queue's claims).

**Heartbeats.** The proxy has none: ``GrpcStorageProxy`` is no ``BaseHeartbeat`` (its service
has no call that records a beat) and Optuna's ``fail_stale_trials`` skips it. So that a dead
worker's trial is still retried, :class:`ProxyStorage` beats through the public API: while a
trial runs, its worker writes a new value to the trial's ``autofreeze:heartbeat`` system
attribute every interval (who beats, a count, and after how many silent seconds the trial is
stale). Every worker looks at the other running trials' values, at each beat of its own trial
and each time it looks for stale trials (before a trial, and while it waits for the budget's
last ones), and notes when it first saw each value, on its own monotonic clock. A value
unchanged for the beater's grace period (three intervals) means the beater is gone: the next
time the worker looks for stale trials, the trial is failed (``set_trial_state_values``, which
succeeds for one worker only) and handed to the retry callback, as
``optuna.storages.fail_stale_trials`` does for a database. No two machines' clocks are compared.
A worker that has just started needs one grace period of looking before it can judge; a trial
that never beat is left alone, as Optuna leaves it.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import itertools
import re
import sys
import threading
import time
import uuid
import warnings
from typing import Any

import optuna
from optuna.storages import GrpcStorageProxy
from optuna.trial import TrialState

from autofreeze.errors import StorageError
from autofreeze.progress import Progress
from autofreeze.study import records

SCHEME = "grpc://"
DEFAULT_PORT = 13000  # Optuna's
INSTALL = "pip install 'autofreeze[grpc]'"
# a name asked for to learn whether the proxy answers (found or not, it answered)
PROBE_NAME = "autofreeze: is the proxy there"
_ADDRESS = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.\-]+)):(?P<port>\d{1,5})/?"
)


def is_proxy_url(url: str) -> bool:
    return url.startswith(SCHEME)


def proxy_address(url: str) -> tuple[str, int]:
    """``(host, port)`` of ``grpc://HOST:PORT`` (an IPv6 host in brackets, kept in them).

    Raises:
        ValueError: anything else (a user, a path, a query, no port): the proxy takes none.
    """
    match = _ADDRESS.fullmatch(url.removeprefix(SCHEME)) if is_proxy_url(url) else None
    port = int(match["port"]) if match else 0
    if match is None or not 1 <= port <= 65535:
        raise ValueError(
            f"a storage proxy's URL is grpc://HOST:PORT (e.g. grpc://tuner.example.org:"
            f"{DEFAULT_PORT}, as `autofreeze proxy` prints it), with no user, path or query"
        )
    host = f"[{match['v6']}]" if match["v6"] else match["host"]
    return host, port


def require_grpc(what: str) -> None:
    """Fail with one line if grpcio (or protobuf), which Optuna's proxy needs, is missing."""
    missing = [m for m in ("grpc", "google.protobuf") if not _importable(m)]
    if missing:
        raise StorageError(f"{what} needs grpcio and protobuf: {INSTALL}")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package (google)
        return False


def rpc_failure(exc: BaseException) -> str | None:
    """``exc`` as a line if it is a failed call to the proxy (``grpc.RpcError``), else None."""
    grpc = sys.modules.get("grpc")
    if grpc is None or not isinstance(exc, grpc.RpcError):
        return None
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else None
    text = " ".join(str(details or exc).split())[:300]
    if code is not None and code.name == "UNIMPLEMENTED":
        return "it answers, but is not Optuna's storage proxy"
    return f"{code.name}: {text}" if code is not None else text


class ProxyStorage(GrpcStorageProxy):
    """Optuna's ``GrpcStorageProxy`` with heartbeats through its public API (see the module).

    Heartbeats are off until :func:`autofreeze.study.storage.set_heartbeat` sets the same
    attributes it sets on an ``RDBStorage``: ``heartbeat_interval``, ``grace_period`` and the
    stale-trial callback.
    """

    def __init__(self, *, host: str, port: int) -> None:
        with warnings.catch_warnings():  # "experimental" since Optuna 4.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(host=host, port=port)
        self.heartbeat_interval: int | None = None
        self.grace_period: int | None = None
        self.heartbeat_stale_trial_callback: Any = None
        self.failed_trial_callback: Any = None  # RDBStorage's older name, set alike
        self.beater = uuid.uuid4().hex[:12]  # this process's beats, told from another's copy
        self.beats = itertools.count(1)
        # (study id, trial number) -> (the heartbeat value last seen, when it was first seen)
        self.seen: dict[tuple[int, int], tuple[Any, float]] = {}
        self.watched: set[int] = set()  # the studies whose trials this process judges
        self.looking = threading.Lock()

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def record_heartbeat(self, trial_id: int) -> None:
        """Beat: a new value of the trial's heartbeat; then look at the other running trials
        (so that, back from a long trial of its own, this process judges at once). A call
        that fails (the trial was failed as stale, the proxy does not answer for now) is let
        go: the trial's next write through the storage says what happened."""
        import grpc

        beat = {"by": self.beater, "n": next(self.beats), "stale_after": self.stale_after()}
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, grpc.RpcError):
            records.write_heartbeat(self, trial_id, beat)
            with self.looking:
                watched = list(self.watched)
            for study_id in watched:
                self.look(study_id)

    def stale_after(self) -> float:
        interval = self.heartbeat_interval or 0
        return float(self.grace_period or 3 * interval)

    def fail_stale_trials(self, study: optuna.Study) -> list[int]:
        """Fail the study's running trials whose heartbeat stopped and hand each to the
        stale-trial callback (the retry); return their numbers. Nothing without heartbeats."""
        if self.heartbeat_interval is None:
            return []
        study_id = self.get_study_id_from_name(study.study_name)
        with self.looking:
            self.watched.add(study_id)
        failed = []
        for number in self.look(study_id):
            trial_id = self.get_trial_id_from_study_id_trial_number(study_id, number)
            try:  # another worker may fail it first, or it may just have finished
                if not self.set_trial_state_values(trial_id, TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            failed.append(number)
            if self.heartbeat_stale_trial_callback is not None:
                self.heartbeat_stale_trial_callback(study, copy.deepcopy(self.get_trial(trial_id)))
        return failed

    def look(self, study_id: int) -> list[int]:
        """Note the heartbeat of each running trial of the study; return the numbers of those
        whose value has not changed for their beater's grace period since this process first
        saw it."""
        with self.looking:
            now = time.monotonic()
            running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            seen = {key: v for key, v in self.seen.items() if key[0] != study_id}
            stale = []
            for trial in running:
                beat = records.heartbeat(trial)
                if not isinstance(beat, dict):
                    continue  # never beat: left alone, as Optuna leaves such a trial
                key = (study_id, trial.number)
                last = self.seen.get(key)
                since = last[1] if last is not None and last[0] == beat else now
                seen[key] = (beat, since)
                if now - since >= float(beat.get("stale_after") or self.stale_after()):
                    stale.append(trial.number)
            self.seen = seen
            return stale


def _unanswered(storage: ProxyStorage) -> str | None:
    """Why the proxy does not answer, or None when it does (one cheap call)."""
    import grpc

    try:
        storage.get_study_id_from_name(PROBE_NAME)
    except KeyError:
        pass
    except grpc.RpcError as exc:
        return rpc_failure(exc)
    return None


def connect(url: str, *, attempts: int = 1, backoff: float = 2.0, progress: Progress) -> Any:
    """A :class:`ProxyStorage` on ``url`` once the proxy answers, failing with one line; with
    ``attempts > 1`` a proxy that does not answer is asked again with exponential backoff.

    Raises:
        ValueError: ``url`` is no ``grpc://HOST:PORT`` (the caller says so, password masked).
    """
    host, port = proxy_address(url)
    require_grpc(f"the storage URL {url}")
    storage = ProxyStorage(host=host, port=port)
    attempt = 0
    while True:
        attempt += 1
        reason = _unanswered(storage)
        if reason is None:
            return storage
        if attempt >= attempts:
            break
        wait = backoff ** (attempt - 1)
        progress(f"storage proxy {url} unreachable ({reason}); retrying in {wait:.0f}s")
        time.sleep(wait)
    storage.close()
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    raise StorageError(
        f"cannot reach the storage proxy {url}{tries}: {reason} (is `autofreeze proxy` "
        "running there? check the host and the port)"
    )
