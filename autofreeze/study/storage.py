"""Study storage: an Optuna RDB URL (SQLite by default, PostgreSQL/MySQL unchanged), or
``grpc://HOST:PORT``, Optuna's gRPC storage proxy in front of one (:mod:`autofreeze.study.proxy`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from autofreeze.errors import StorageError
from autofreeze.progress import stderr_progress
from autofreeze.study import proxy

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


CREATION_RETRIES = 20  # tries of a process that lost the race to create a new database's tables
STALE_AFTER_BEATS = 3  # a running trial silent for this many heartbeats is failed and retried


def _sqlite_failure(path: Path, exc: BaseException, doing: str) -> StorageError:
    reason = getattr(exc, "strerror", None) or str(exc)
    where = next((p for p in path.parents if p.is_file()), None)
    if where is not None:
        reason = f"{where} is a file, not a folder"
    elif "readonly" in reason or "unable to open" in reason:
        reason += " (the file or its folder is read-only or immutable)"
    return StorageError(
        f"cannot {doing} SQLite file {path}: {reason} (check the path and its permissions, "
        "or give another [study] storage)"
    )


def _prepare_sqlite(path: Path) -> None:
    """For a command that writes the study: create the file's folders, turn WAL on (readers
    such as the dashboard proceed while a worker writes) and prove a write goes through.

    A path that cannot hold a database is one line before any trial starts. The commands that
    create a study say so when the file is new (see :func:`new_sqlite_path`).
    """
    import sqlite3

    companions = [f for f in sqlite_files(path) if not f.exists()]  # what a failure removes
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=60, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            # an immutable or read-only file opens read-only without a word: write to know
            con.execute("BEGIN IMMEDIATE")
            con.execute("CREATE TABLE _autofreeze_write_check (x)")
            con.execute("ROLLBACK")
        finally:
            con.close()
    except (OSError, sqlite3.Error) as exc:
        for leftover in companions:  # e.g. the -wal and -shm SQLite made beside a read-only file
            if leftover.is_file():
                leftover.unlink()
        raise _sqlite_failure(path, exc, "write to") from None


def sqlite_files(path: Path) -> list[Path]:
    """A SQLite database and the files SQLite keeps beside it in WAL mode."""
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def new_sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL that does not exist yet (a study about to be created), as an
    absolute path (a relative URL is relative to the current folder: say which one)."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return None if str(path) in ("", ":memory:") or path.exists() else path.absolute()


ROOT = Path("/")  # where an absolute path starts (tests put it elsewhere)


def meant_absolute(url: str) -> str | None:
    """Why a relative SQLite URL probably meant an absolute one, or None.

    ``sqlite:///data/studies/my.db`` (three slashes) is ``data/studies/my.db`` under the current
    folder; ``sqlite:////data/studies/my.db`` (four) is ``/data/studies/my.db``. When the
    relative path's first folder is missing here but exists at the filesystem root, the fourth
    slash was probably forgotten: a new, empty study would be created where nobody looks. A
    path spelled ``./data/...``, or a ``data/`` folder made here first, says the relative path
    is meant.
    """
    raw = url.removeprefix("sqlite:///")
    if not url.startswith("sqlite:///") or raw.startswith((".", "/", "file:", ":memory:")):
        return None
    parts = Path(raw).parts
    if len(parts) < 2 or Path(parts[0]).exists() or not (ROOT / parts[0]).is_dir():
        return None
    absolute = ROOT / raw
    return (
        f"{url} is a path relative to the current folder ({Path.cwd()}, which has no "
        f"{parts[0]}/), but {ROOT / parts[0]} exists: for {absolute} write "
        f"sqlite:///{absolute} (four slashes); to create a new database under the current "
        f"folder, write sqlite:///./{raw}"
    )


def remove_if_empty(path: Path) -> None:
    """Remove a SQLite database this process created if it holds no study (a search that
    failed before its first trial leaves no file behind)."""
    import sqlite3

    try:
        with sqlite3.connect(path, timeout=60) as con:
            if con.execute("SELECT count(*) FROM studies").fetchone()[0]:
                return
    except sqlite3.Error:
        return  # not ours to judge
    for f in sqlite_files(path):
        f.unlink(missing_ok=True)


def _readable_sqlite_url(path: Path, progress: Any, url: str = "") -> str:
    """For a command that only reads (``trials``, ``best``, ``train``): never create a file;
    a file that cannot be opened for writing (read-only folder, immutable file) is read as an
    immutable snapshot, which needs no lock and no ``-wal``/``-shm`` file beside it."""
    import sqlite3

    if not path.is_file():
        meant = meant_absolute(url or f"sqlite:///{path}")
        raise StorageError(
            f"no SQLite study database at {path} ("
            + (meant or "check the path; `autofreeze search CONFIG` creates it")
            + ")"
        )
    try:
        with sqlite3.connect(path, timeout=60) as con:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return f"sqlite:///{path}"
    except sqlite3.Error:
        pass
    try:
        with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as con:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise _sqlite_failure(path, exc, "read") from None
    wal = path.with_name(path.name + "-wal")
    unread = (
        f" without its {wal.name} (the latest trials may be missing)"
        if wal.is_file() and wal.stat().st_size
        else ""
    )
    progress(f"{path} cannot be opened for writing: reading it as an immutable snapshot{unread}")
    return f"sqlite:///file:{path}?immutable=1&uri=true"


def _creation_race(exc: BaseException) -> bool:
    """Whether creating the tables failed because another process was creating them too
    (SQLite and MySQL: "already exists"; PostgreSQL: a duplicate type or version row)."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    return "already exists" in text or "duplicate" in text or "unique constraint" in text


def _serialize_sqlite_writes(engine: Any) -> None:
    """Make every SQLite transaction ``BEGIN IMMEDIATE`` (and a commit durable once the OS has
    it: see the connect hook).

    pysqlite starts a transaction lazily at the first write, so two workers can both read a
    WAITING (enqueued) trial and both claim it: measured here, two workers ran the same baseline
    twice in two runs out of three ("Cannot tell a COMPLETE trial"). Taking the write lock at
    the start of the transaction makes Optuna's check-then-set of the trial state atomic.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_pysqlite_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        # the file is in WAL mode (_prepare_sqlite): a commit is then durable once the OS has
        # it, not once the disk has (SQLite's recommended setting for WAL, which keeps the file
        # consistent whatever happens). A killed worker loses nothing; a power cut may lose the
        # last commits, which the heartbeats and retries already handle as a dead worker's.
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed are not reused


def set_heartbeat(storage: Any, interval: int) -> None:
    """Running trials beat every ``interval`` seconds; one silent for three intervals is marked
    FAIL and re-queued as a new WAITING trial (up to ``retries.MAX_RETRY`` times). An
    ``RDBStorage`` beats in its database, a :class:`autofreeze.study.proxy.ProxyStorage` through
    the proxy; both take the same attributes.

    Every worker of a study must use the same interval: the others judge a trial stale by it.
    It is the study config's ``[study] heartbeat``, set once the config is known.
    """
    from autofreeze.study.retries import retry_callback

    storage.heartbeat_interval = interval
    storage.grace_period = STALE_AFTER_BEATS * interval
    storage.heartbeat_stale_trial_callback = storage.failed_trial_callback = retry_callback()


def _engine_setup(url: str, read_only: bool, progress: Any) -> tuple[str, dict[str, Any]]:
    """The URL to open and its engine's arguments. A SQLite file is prepared for writing (or,
    ``read_only``, opened as it is); several local workers share it, so a connection waits for
    the file's lock instead of failing. A server's dropped connections are noticed before use.
    """
    if not url.startswith("sqlite:///"):
        return url, {"pool_pre_ping": True}
    path = Path(url.removeprefix("sqlite:///"))
    if str(path) not in ("", ":memory:") and not str(path).startswith("file:"):
        if read_only:
            url = _readable_sqlite_url(path, progress, url)
        else:
            meant = None if path.exists() else meant_absolute(url)
            if meant:  # refused before a new, empty study is created and searched unnoticed
                raise StorageError(meant)
            _prepare_sqlite(path)
    return url, {"connect_args": {"timeout": 60}}


def _rdb_storage(url: str, engine_kwargs: dict[str, Any], heartbeat: int | None) -> Any:
    import optuna

    storage = optuna.storages.RDBStorage(
        url, engine_kwargs=engine_kwargs, skip_table_creation="immutable=1" in url
    )
    if url.startswith("sqlite"):
        _serialize_sqlite_writes(storage.engine)
    if heartbeat:
        set_heartbeat(storage, heartbeat)
    return storage


def _unusable_url(url: str, exc: Exception) -> StorageError:
    """A URL SQLAlchemy cannot parse, or whose driver is not installed, as one line."""
    if isinstance(exc, ImportError):
        return StorageError(
            f"no database driver for {mask_url(url)!r}: install one (pip install "
            f"'autofreeze[postgres]' for postgresql://, 'autofreeze[mysql]' and a "
            f"mysql+pymysql:// URL for MySQL)"
        )
    return StorageError(
        f"bad storage URL {mask_url(url)!r}: {_short(exc)} (expected e.g. "
        f"sqlite:///studies/x.db, postgresql://user@host/db or grpc://host:port)"
    )


def open_storage(
    url: str,
    *,
    heartbeat: int | None = None,
    attempts: int = 1,
    backoff: float = 2.0,
    progress: Any = None,
    read_only: bool = False,
) -> Any:
    """Open (and create the tables of) an RDB storage, failing with one clear line; a
    ``grpc://`` URL is a storage proxy, which must answer (:func:`autofreeze.study.proxy.connect`).

    With ``heartbeat`` (seconds), running trials beat and dead workers' trials are retried (see
    :func:`set_heartbeat`). With ``attempts > 1`` an unreachable database or proxy is retried
    with exponential backoff. Processes started together on a new database (a job array) may all
    create its tables at once; the losers of that race retry. ``read_only`` storage is for
    commands that only read: it never creates a SQLite file and reads a read-only one.
    """
    import random
    import time

    from sqlalchemy.exc import (
        ArgumentError,
        IntegrityError,
        NoSuchModuleError,
        OperationalError,
        ProgrammingError,
    )

    progress = progress or stderr_progress
    if proxy.is_proxy_url(url):
        try:
            storage = proxy.connect(url, attempts=attempts, backoff=backoff, progress=progress)
        except ValueError as exc:
            raise StorageError(f"bad storage URL {mask_url(url)!r}: {exc}") from None
        if heartbeat:
            set_heartbeat(storage, heartbeat)
        return storage
    url, engine_kwargs = _engine_setup(url, read_only, progress)
    attempt = races = 0
    while True:
        attempt += 1
        try:
            return _rdb_storage(url, engine_kwargs, heartbeat)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise _unusable_url(url, exc) from None
        except (IntegrityError, ProgrammingError, OperationalError) as exc:
            if _creation_race(exc) and races < CREATION_RETRIES:
                races += 1  # another process is creating the same tables: let it finish
                attempt -= 1
                time.sleep(random.uniform(0.05, 0.5))
                continue
            if isinstance(exc, OperationalError) and attempt < attempts:
                wait = backoff ** (attempt - 1)
                progress(
                    f"storage {mask_url(url)} unreachable ({_short(exc)}); retrying in {wait:.0f}s"
                )
                time.sleep(wait)
                continue
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            raise StorageError(
                f"cannot open storage {mask_url(url)!r}{tries}: {_short(exc)}"
            ) from None
        except (ValueError, OSError) as exc:
            raise StorageError(f"cannot open storage {mask_url(url)!r}: {_short(exc)}") from None


# what PostgreSQL and MySQL/MariaDB say when every connection they allow is taken
FULL_SERVER = ("too many clients", "too many connections", "remaining connection slots")


def _short(exc: BaseException) -> str:
    """The database's first line of ``exc``; a full server gets its remedy on the same line."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    line = text[0][:300] if text else type(exc).__name__
    if any(words in line.lower() for words in FULL_SERVER):
        line += (
            " (every connection the database allows is taken: serve it to the workers through "
            "`autofreeze proxy`, which holds a few, or raise its max_connections; "
            "docs/distributed.md)"
        )
    return line


def storage_lost(exc: BaseException) -> str | None:
    """Why a call to the storage failed because the database or the proxy went away (a line),
    or None for any other error."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import OperationalError

    reason = proxy.rpc_failure(exc)
    # Optuna wraps a commit that lost its connection (a full server: "too many clients") in
    # StorageInternalError "invalid data ... exceeding max length": the cause says what it was
    cause = exc.__cause__ if isinstance(exc, StorageInternalError) else exc
    if reason is None and isinstance(cause, OperationalError):
        reason = _short(cause)
    return reason


def load_existing_study(url: str, study_name: str, storage: Any = None, **storage_kw: Any) -> Any:
    """Load a study that must exist; a missing one lists the names the storage holds.

    ``storage`` is an already opened storage of ``url``; else one is opened with
    ``storage_kw`` (see :func:`open_storage`).
    """
    import optuna

    from autofreeze.study import records

    storage = storage or open_storage(url, **{"read_only": True, **storage_kw})
    names = [s.study_name for s in storage.get_all_studies()]  # no trials read
    if study_name not in names:
        raise StorageError(
            f"no study {study_name!r} in {mask_url(url)} (studies there: "
            f"{', '.join(names) or 'none'}); run `autofreeze search` first"
        )
    study = optuna.load_study(study_name=study_name, storage=storage)
    return records.with_storage(study, storage)  # it reads the machine record
