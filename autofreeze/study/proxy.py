"""Optuna's gRPC storage proxy, the workers' side: the storage URL ``grpc://HOST:PORT``.

One ``autofreeze proxy`` process (:mod:`autofreeze.study.proxy_server`) holds the study
database's connections; workers and readers reach it through Optuna's
:class:`optuna.storages.GrpcStorageProxy`, which implements Optuna's public ``BaseStorage`` and
so carries everything autofreeze stores (trials, the machine record, notes, the queue's claims).

**Heartbeats.** The proxy has none: ``GrpcStorageProxy`` is no ``BaseHeartbeat`` (its service has no
call that records a beat) and Optuna's ``fail_stale_trials`` skips it. So that a dead worker's trial
is still retried, :class:`ProxyStorage` beats through the public API: while a trial runs, its worker
writes a new value to the trial's ``autofreeze:heartbeat`` system attribute every interval (who
beats, a count, and after how many silent seconds the trial is stale). Every worker looks at the
other running trials' values, at each beat of its own trial and each time it looks for stale trials
(before a trial, and while it waits for the budget's last ones), and notes when it first saw each
value, on its own monotonic clock. A value unchanged for the beater's grace period (three intervals)
means the beater is gone: the next time the worker looks for stale trials, the trial is failed
(``set_trial_state_values``, which succeeds for one worker only) and handed to the retry callback,
as ``optuna.storages.fail_stale_trials`` does for a database. No two machines' clocks are compared.
A worker that has just started needs one grace period of looking before it can judge. A trial that
is running but never beat is judged alike (its "value" is no beat), after :data:`ORPHAN_AFTER`
seconds or the grace period, whichever is longer: every autofreeze worker beats within moments of
taking its trial, so such a trial is one whose creation or claim went through while the proxy died
(below), with nobody behind it.

**A proxy that restarts.** A worker's call (a storage with heartbeats: the worker loop's) that the
proxy does not answer (gRPC's UNAVAILABLE: killed, restarting, a network blip) is asked again,
pausing up to two seconds between tries, for up to :data:`RIDE_OUT` seconds; the worker says once
that it waits and once that the proxy answers again, and then goes on with its trial. Only a proxy
silent for longer ends the worker, in one line. A call cut by the proxy's death may have gone
through before it died: writing an attribute, a parameter or a report again is harmless; a finishing
state that went through is recognised (:meth:`ProxyStorage.set_trial_state_values`); a trial created
or claimed in that moment has nobody behind it and never beats, and is retried like a dead worker's.
While the proxy was silent nobody could beat: the silence of each trial is counted again from the
moment the proxy answered. A command that only reads (``trials``, ``best``, the dashboard) has no
heartbeat and fails at once, in one line.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import itertools
import math
import re
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import optuna
from optuna.storages import GrpcStorageProxy
from optuna.trial import FrozenTrial, TrialState

from autofreeze.errors import StorageError
from autofreeze.progress import Progress
from autofreeze.study import records

SCHEME = "grpc://"
DEFAULT_PORT = 13000  # Optuna's
INSTALL = "pip install 'autofreeze[grpc]'"
# a name asked for to learn whether the proxy answers (found or not, it answered)
PROBE_NAME = "autofreeze: is the proxy there"
# seconds a worker asks a proxy that does not answer again before it gives up: a restart of
# the proxy (a pod rescheduled, a job requeued) takes seconds to a minute
RIDE_OUT = 120.0
RETRY_PAUSE = 2.0  # at most this long between two tries
ORPHAN_AFTER = 60.0  # seconds a running trial that never beat is left alone (see the module)
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
        self.looked: dict[int, float] = {}  # study id -> when this process last looked
        self.looking = threading.Lock()
        self.ride_out = RIDE_OUT
        self.progress: Progress = lambda _: None  # connect() gives the command's
        self.answered_again = -math.inf  # monotonic time the proxy last came back
        self.silent = False  # the proxy does not answer now (said once)
        self.saying = threading.Lock()  # went silent / answers again: each said once

    def riding_out(self, call: Callable[[], Any]) -> Any:
        """``call()``, asked again while the proxy does not answer, up to :attr:`ride_out`
        seconds with heartbeats on (a worker; see the module); any other failure, and every
        failure of a storage without heartbeats, is raised at once."""
        import grpc

        deadline, pause = None, 0.25
        while True:
            try:
                result = call()
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                now = time.monotonic()
                limit = self.ride_out if self.heartbeat_interval is not None else 0.0
                if code == grpc.StatusCode.UNAVAILABLE and now < (deadline or now + limit):
                    if deadline is None:
                        deadline = now + limit
                        self.went_silent(exc)
                    time.sleep(min(pause, max(0.0, deadline - now)))
                    pause = min(2 * pause, RETRY_PAUSE)
                    continue
                if code != grpc.StatusCode.UNAVAILABLE:
                    self.answered()  # with an error, but it answered
                raise
            except Exception:
                self.answered()  # with an error Optuna's client raises (a finished trial)
                raise
            self.answered()
            return result

    def answered(self) -> None:
        """A call went through: if this process said the proxy went silent (on this thread or
        another: a heartbeat's call may go silent, then end in an error that is let go), it
        says once that the proxy answers again."""
        if self.silent:
            self.answers_again()

    def went_silent(self, exc: BaseException) -> None:
        with self.saying:  # the trial's thread and its heartbeat's may both find it: said once
            if self.silent:
                return
            self.silent = True
        self.progress(
            f"storage proxy not answering ({rpc_failure(exc)}); asking again for up to "
            f"{self.ride_out:.0f}s"
        )

    def answers_again(self) -> None:
        """Nobody could beat while the proxy was silent: each trial's silence counts anew."""
        self.answered_again = time.monotonic()
        with self.saying:
            if not self.silent:
                return
            self.silent = False
        self.progress("storage proxy answers again: going on")

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        """Optuna's, riding out a restarting proxy; a finishing state that went through just
        before the proxy died (the next try finds the trial finished as asked) is a success."""
        tries = []

        def once() -> bool:
            tries.append(1)
            return GrpcStorageProxy.set_trial_state_values(self, trial_id, state, values)

        try:
            return self.riding_out(once)
        except optuna.exceptions.UpdateFinishedTrialError:
            if len(tries) < 2:
                raise
            stored = self.get_trial(trial_id)
            asked = None if values is None else [float(v) for v in values]
            if stored.state != state or (asked is not None and stored.values != asked):
                raise
            return True

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def record_heartbeat(self, trial_id: int) -> None:
        """Beat: a new value of the trial's heartbeat; then look at the other running trials
        (so that, back from a long trial of its own, this process judges at once), unless this
        process looked less than half an interval ago (it just did, before taking the trial:
        a silence is judged over three intervals). A call that fails (the trial was failed as
        stale, the proxy does not answer for now) is let go: the trial's next write through
        the storage says what happened."""
        import grpc

        beat = {"by": self.beater, "n": next(self.beats), "stale_after": self.stale_after()}
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, grpc.RpcError):
            records.write_heartbeat(self, trial_id, beat)
            with self.looking:
                recent = time.monotonic() - 0.5 * (self.heartbeat_interval or 0)
                watched = [s for s in self.watched if self.looked.get(s, -math.inf) <= recent]
            for study_id in watched:
                self.look(study_id)

    def stale_after(self) -> float:
        interval = self.heartbeat_interval or 0
        return float(self.grace_period or 3 * interval)

    def fail_stale_trials(
        self,
        study: optuna.Study,
        trials: list[FrozenTrial] | None = None,
        study_id: int | None = None,
    ) -> list[int]:
        """Fail the study's running trials whose heartbeat stopped and hand each to the
        stale-trial callback (the retry); return their numbers. Nothing without heartbeats.

        ``trials``: the study's trials as the caller has just read them (the worker loop reads
        them once a step), else read here; ``study_id``: the study's id, if the caller knows it.
        """
        if self.heartbeat_interval is None:
            return []
        if study_id is None:
            study_id = self.get_study_id_from_name(study.study_name)
        with self.looking:
            self.watched.add(study_id)
        failed = []
        for number in self.look(study_id, trials):
            trial_id = self.get_trial_id_from_study_id_trial_number(study_id, number)
            # another worker may fail it first, or it may just have finished; Optuna's own call:
            # a failure that went through as the proxy died is not told from another worker's
            # (that trial's retry is left to the next run, which re-queues what was cut short)
            fail = GrpcStorageProxy.set_trial_state_values
            try:
                if not self.riding_out(partial(fail, self, trial_id, TrialState.FAIL)):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            failed.append(number)
            if self.heartbeat_stale_trial_callback is not None:
                self.heartbeat_stale_trial_callback(study, copy.deepcopy(self.get_trial(trial_id)))
        return failed

    def look(self, study_id: int, trials: list[FrozenTrial] | None = None) -> list[int]:
        """Note the heartbeat of each running trial of the study (no beat yet is a value too);
        return the numbers of those whose value has not changed for their beater's grace
        period (this process's, for a trial that never beat) since this process first saw it,
        or since the proxy last answered again. ``trials``: the study's trials just read (see
        :meth:`fail_stale_trials`), else its running ones are read here."""
        with self.looking:
            if trials is None:
                trials = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            running = [t for t in trials if t.state == TrialState.RUNNING]
            now = time.monotonic()
            seen = {key: v for key, v in self.seen.items() if key[0] != study_id}
            stale = []
            for trial in running:
                beat = records.heartbeat(trial)
                beat = beat if isinstance(beat, dict) else None
                key = (study_id, trial.number)
                last = self.seen.get(key)
                since = last[1] if last is not None and last[0] == beat else now
                since = max(since, self.answered_again)
                seen[key] = (beat, since)
                grace = (beat or {}).get("stale_after") or self.stale_after()
                if beat is None:
                    grace = max(float(grace), ORPHAN_AFTER)
                if now - since >= float(grace):
                    stale.append(trial.number)
            self.seen = seen
            self.looked[study_id] = now
            return stale


# each of these is one call to the proxy: asked again while the proxy restarts (riding_out)
RIDDEN = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_all_studies", "create_new_trial",
    "set_trial_param", "set_trial_intermediate_value", "set_trial_user_attr",
    "set_trial_system_attr", "get_trial_id_from_study_id_trial_number", "get_trial",
    "get_all_trials",
)  # fmt: skip


def _ridden(name: str) -> Callable[..., Any]:
    base = getattr(GrpcStorageProxy, name)

    def call(self: ProxyStorage, *args: Any, **kwargs: Any) -> Any:
        return self.riding_out(lambda: base(self, *args, **kwargs))

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``GrpcStorageProxy.{name}``, riding out a restarting proxy."
    return call


for _name in RIDDEN:
    setattr(ProxyStorage, _name, _ridden(_name))


def _unanswered(storage: ProxyStorage) -> str | None:
    """Why the proxy does not answer, or None when it does (one cheap call)."""
    import grpc

    try:  # Optuna's own call, asked once: connect() has its own attempts
        GrpcStorageProxy.get_study_id_from_name(storage, PROBE_NAME)
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
    storage.progress = progress
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
