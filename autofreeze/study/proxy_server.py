"""``autofreeze proxy``: Optuna's gRPC storage proxy (``optuna.storages.run_grpc_proxy_server``)
in front of a study database, so that many workers reach it through one process.

The proxy serves an RDB storage only, opened as every command opens one
(:func:`autofreeze.study.storage.open_storage`: a SQLite file prepared for writing, a new
database's tables created once) and wrapped in Optuna's in-process cache as Optuna's docs ask
(``optuna.storages.get_storage``). A SQLite file is allowed: Optuna warns only that
``delete_study`` through the proxy leaves its cache stale on SQLite, and autofreeze never
deletes a study; the proxy then makes a single machine's file reachable from other machines.
Never JournalStorage (Optuna: unsafe behind the proxy with ``enqueue_trial``, which every
study's first plans and retries use): autofreeze opens no journal, and a ``grpc://`` URL (a
proxy in front of a proxy) is refused.

It serves until Ctrl-C or SIGTERM: the CLI's handler raises in the main thread, which Optuna's
server loop lets through (it waits in short steps), and the command exits with 130 or 143.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from autofreeze.errors import StorageError
from autofreeze.progress import Progress
from autofreeze.study.proxy import SCHEME, is_proxy_url, require_grpc
from autofreeze.study.storage import mask_url, new_sqlite_path, open_storage

THREADS = 10  # calls served at once (Optuna's default); each is one short transaction
EVERY_INTERFACE = ("0.0.0.0", "::", "[::]", "")
LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}  # to reach those from here


def serve_proxy(url: str, *, host: str, port: int, progress: Progress) -> None:
    """Serve the database ``url`` on ``host:port`` until a stop signal; every failure before
    serving (a proxy URL, grpcio missing, a taken port, a database that cannot be opened) is
    one line, and nothing is created before the port is known to be free."""
    if is_proxy_url(url):
        raise StorageError(
            f"the proxy serves a database, not another proxy ({url}): give the database's "
            "URL with --storage (or AUTOFREEZE_STORAGE), e.g. postgresql://user@host/db"
        )
    require_grpc("autofreeze proxy")
    check_port(host, port)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its "Server started" line: ours
    created = new_sqlite_path(url)
    storage = open_storage(url, progress=progress)
    if created is not None:
        progress(f"created a new SQLite study database {created}")
    # said once the port answers, not before: a worker started on this line must find it
    # listening (Optuna's server binds inside run_grpc_proxy_server, after this point)
    say_when_listening(
        host,
        port,
        f"storage proxy for {mask_url(url)} on {grpc_host(host)}:{port}; workers use "
        f"--storage {SCHEME}{reachable_host(host)}:{port} (Ctrl-C stops)",
        progress,
    )
    pool = ThreadPoolExecutor(THREADS, thread_name_prefix="autofreeze-proxy")
    try:
        optuna.storages.run_grpc_proxy_server(
            optuna.storages.get_storage(storage),  # Optuna's cache in front of the RDB
            host=grpc_host(host),
            port=port,
            thread_pool=pool,
        )
    except RuntimeError as exc:  # gRPC could not bind after all (taken since the check)
        raise StorageError(f"cannot serve on {host}:{port}: {exc}; give another --port") from None


def say_when_listening(
    host: str, port: int, line: str, progress: Progress, within: float = 60.0
) -> threading.Thread:
    """Say ``line`` from a background thread once ``host:port`` accepts a connection (tried
    every 20 ms for up to ``within`` seconds; a server that never listens raises in the main
    thread instead). Returns the thread."""
    target = LOOPBACK.get(host.strip("[]"), host.strip("[]"))

    def wait_then_say() -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                socket.create_connection((target, port), timeout=1.0).close()
            except OSError:
                time.sleep(0.02)
                continue
            progress(line)
            return

    thread = threading.Thread(target=wait_then_say, name="autofreeze-proxy-ready", daemon=True)
    thread.start()
    return thread


def grpc_host(host: str) -> str:
    """``host`` as gRPC's ``host:port`` address takes it (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def reachable_host(host: str) -> str:
    """The host workers name: this machine's name when listening on every interface."""
    return socket.gethostname() if host in EVERY_INTERFACE else grpc_host(host)


def check_port(host: str, port: int) -> None:
    """Fail with one line if ``host:port`` cannot be listened on.

    gRPC binds with ``SO_REUSEPORT``: a second proxy on a taken port would share it with the
    first, silently, and the workers' calls would go to either. A plain socket, bound here
    first, finds the port taken.
    """
    bare = host.strip("[]")
    try:
        addresses = socket.getaddrinfo(
            bare or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StorageError(
            f"cannot serve on {host}:{port}: {exc.strerror}; give another --host"
        ) from None
    bound, taken, why = False, False, ""
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a past proxy's TIME_WAIT
            try:
                sock.bind(address)
                bound = True
            except OSError as exc:  # one address of several may not exist here (::1)
                why = exc.strerror or str(exc)
                taken = taken or exc.errno == errno.EADDRINUSE
    if taken or not bound:
        raise StorageError(f"cannot serve on {host}:{port}: {why}; give another --port (or --host)")
