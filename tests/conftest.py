from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from autofreeze.testing import tiny_split as tensor_split
from tests.processes import STARTED, drop_pg_database, new_pg_database

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Two test processes side by side (pytest-xdist) already fill the two cores: the searches and
# workers they start train on one thread each, as the tests themselves do (_few_threads),
# instead of torch's one per core, which made four threads fight over two cores. A worker
# that `search --workers` starts still gets its share from the search (OMP_NUM_THREADS).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# A suite started in the background by a shell without job control (`make test &` in a
# script) inherits SIGINT ignored, and so would every process a test starts: the tests that
# press Ctrl-C on a search need what a terminal gives, Python's KeyboardInterrupt.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    # one thread per test process when pytest-xdist runs two of them side by side
    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture
def tiny_data():
    return tensor_split(24, seed=0), tensor_split(12, seed=1)


@pytest.fixture(autouse=True)
def _no_orphans():
    """A failing test must not leave workers running into the next ones."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def pg_url():
    psycopg = pytest.importorskip("psycopg")
    try:
        url = new_pg_database()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is not reachable ({exc}); .ci/run starts it")
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def mysql_url():
    pymysql = pytest.importorskip("pymysql")
    name = f"autofreeze_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = pymysql.connect(
            host="127.0.0.1", port=3306, user="root", password="", autocommit=True
        )
    except pymysql.err.OperationalError as exc:
        pytest.fail(f"MariaDB at 127.0.0.1:3306 is not reachable ({exc})")
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


# the longest files, longest first (`pytest --durations`, summed by file, on 2 cores; a minute and
# more of real processes for the first ones). xdist's loadfile hands each process one file, then
# the next, in this order (the Makefile turns off its reordering by test count,
# --no-loadscope-reorder): the longest first and the short ones last, the two processes end
# within seconds of each other (with the plugin's 19 s file last, one waited for the other)
LONGEST = (
    "tests/search/test_faults.py",
    "tests/search/test_distributed.py",
    "tests/search/test_worker_kills.py",
    "tests/review/test_dashboard.py",
    "tests/search/test_proxy_faults.py",
    "tests/search/test_memory.py",
    "tests/review/test_browser.py",
    "tests/data/test_decode.py",
    "tests/search/test_proxy_workers.py",
    "tests/cache/test_prefix_cache.py",
    "tests/review/test_terminal.py",
    "tests/search/test_signals.py",
    "plugins/autofreeze-torchvision/tests/test_torchvision_plugin.py",
    "tests/search/test_search.py",
    "tests/test_quickstart.py",
    "tests/search/test_budget.py",
    "tests/search/test_proxy_artifacts.py",
    "tests/core/test_train.py",
    "tests/search/test_storage_calls.py",
    "tests/cache/test_cache_memory.py",
    "tests/cli/test_cli.py",
    "tests/core/test_backbones.py",
    "tests/study/test_proxy.py",
)


def pytest_collection_modifyitems(items):
    """The longest files first, then the other files with slow tests, each file kept whole (its
    module fixtures built once): with two xdist processes the long files start at once and the
    short ones fill in behind them, instead of one long file starting last while the other
    process has nothing left."""
    root = Path(__file__).parents[1]
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> int:
        where = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        if where in LONGEST:
            return LONGEST.index(where)
        return len(LONGEST) + (item.path not in slow_files)

    items.sort(key=rank)  # a stable sort
