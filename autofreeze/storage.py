"""Study storage: an Optuna RDB URL (SQLite by default, PostgreSQL/MySQL unchanged)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from autofreeze.errors import StorageError
from autofreeze.progress import stderr_progress

_QUERY_SECRET = re.compile(r"([?&](?:password|passwd|pwd)=)[^&]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages, logs and reports).

    Parsed by hand rather than by SQLAlchemy, which stops at the first ``@`` of an unencoded
    password and leaves ``?password=`` in the query alone: the user part ends at the last
    ``@`` of the URL's authority.
    """
    url = _QUERY_SECRET.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep or rest.startswith("/"):  # no authority (sqlite:///path): nothing to hide
        return url
    query = rest.find("?")
    authority, tail = (rest[:query], rest[query:]) if query >= 0 else (rest, "")
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}{tail}"


STALE_AFTER_BEATS = 3  # a running trial silent for this many heartbeats is failed and retried
MAX_RETRY = 3


def _enable_wal(path: Path) -> None:
    """WAL lets readers (the dashboard, other workers) proceed while one worker writes."""
    import sqlite3

    with sqlite3.connect(path, timeout=60) as con:
        con.execute("PRAGMA journal_mode=WAL")


def _prepare_sqlite(path: Path, progress: Any) -> None:
    """Create the file's folders and turn WAL on; a path that cannot hold a database is one
    line, and a new file is said on stderr (a typo in the path would otherwise start a new,
    empty study unnoticed)."""
    import sqlite3

    new = not path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _enable_wal(path)
    except (OSError, sqlite3.Error) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        where = next((p for p in path.parents if p.is_file()), None)
        if where is not None:
            reason = f"{where} is a file, not a folder"
        raise StorageError(
            f"cannot use SQLite file {path}: {reason} (check the path and its permissions, "
            "or give another [study] storage)"
        ) from None
    if new:
        progress(f"created a new SQLite study database {path}")


def _serialize_sqlite_writes(engine: Any) -> None:
    """Make every SQLite transaction ``BEGIN IMMEDIATE``.

    pysqlite starts a transaction lazily at the first write, so two workers can both read a
    WAITING (enqueued) trial and both claim it: measured here, two workers ran the same baseline
    twice in two runs out of three ("Cannot tell a COMPLETE trial"). Taking the write lock at
    the start of the transaction makes Optuna's check-then-set of the trial state atomic.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_pysqlite_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed are not reused


def set_heartbeat(storage: Any, interval: int) -> None:
    """Running trials beat every ``interval`` seconds; one silent for three intervals is marked
    FAIL and re-queued as a new WAITING trial (up to ``MAX_RETRY`` times).

    Every worker of a study must use the same interval: the others judge a trial stale by it.
    It is the study config's ``[study] heartbeat``, set once the config is known.
    """
    storage.heartbeat_interval = interval
    storage.grace_period = STALE_AFTER_BEATS * interval
    storage.heartbeat_stale_trial_callback = storage.failed_trial_callback = _retry_callback()


def _retry_callback() -> Any:
    """Optuna's stale-trial retry, with the new trial's user attr ``retry_of`` naming the
    trial it replaces (the first one of a chain), visible in the dashboard while it waits."""
    import copy

    import optuna

    from autofreeze import records

    class RetryStaleTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
        def __call__(self, study: Any, trial: Any) -> None:
            trial = copy.deepcopy(trial)
            first = trial.system_attrs.get("failed_trial", trial.number)
            trial.user_attrs[records.RETRY_OF] = first
            super().__call__(study, trial)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryStaleTrial(max_retry=MAX_RETRY)


def open_storage(
    url: str,
    *,
    heartbeat: int | None = None,
    attempts: int = 1,
    backoff: float = 2.0,
    progress: Any = None,
) -> Any:
    """Open (and create the tables of) an RDB storage, failing with one clear line.

    With ``heartbeat`` (seconds), running trials beat and dead workers' trials are retried (see
    :func:`set_heartbeat`). With ``attempts > 1`` an unreachable database is retried with
    exponential backoff.
    """
    import time

    import optuna
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if str(path) not in ("", ":memory:"):
            _prepare_sqlite(path, progress or stderr_progress)
        # several local workers share the file: wait for the lock instead of failing
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    for attempt in range(1, attempts + 1):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
            if url.startswith("sqlite"):
                _serialize_sqlite_writes(storage.engine)
            if heartbeat:
                set_heartbeat(storage, heartbeat)
            return storage
        except (ArgumentError, NoSuchModuleError) as exc:
            raise StorageError(
                f"bad storage URL {mask_url(url)!r}: {_short(exc)} (expected e.g. "
                f"sqlite:///studies/x.db or postgresql://user@host/db)"
            ) from None
        except ImportError:
            raise StorageError(
                f"no database driver for {mask_url(url)!r}: install one (pip install "
                f"'autofreeze[postgres]' for postgresql://, 'autofreeze[mysql]' and a "
                f"mysql+pymysql:// URL for MySQL)"
            ) from None
        except (OperationalError, ValueError, OSError) as exc:
            if attempt == attempts:
                tries = f" after {attempts} attempts" if attempts > 1 else ""
                raise StorageError(
                    f"cannot open storage {mask_url(url)!r}{tries}: {_short(exc)}"
                ) from None
            wait = backoff ** (attempt - 1)
            if progress:
                progress(
                    f"storage {mask_url(url)} unreachable ({_short(exc)}); retrying in {wait:.0f}s"
                )
            time.sleep(wait)
    raise AssertionError("unreachable")


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def load_existing_study(url: str, study_name: str, storage: Any = None, **storage_kw: Any) -> Any:
    """Load a study that must exist; a missing one lists the names the storage holds.

    ``storage`` is an already opened storage of ``url``; else one is opened with
    ``storage_kw`` (see :func:`open_storage`).
    """
    import optuna

    storage = storage or open_storage(url, **storage_kw)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(storage)]
    if study_name not in names:
        raise StorageError(
            f"no study {study_name!r} in {mask_url(url)} (studies there: "
            f"{', '.join(names) or 'none'}); run `autofreeze search` first"
        )
    return optuna.load_study(study_name=study_name, storage=storage)
