"""Distributed studies with real worker processes on real SQLite, PostgreSQL and MySQL
databases: sharing a study (on PostgreSQL also through Optuna's gRPC storage proxy), reaching
it, keeping passwords out of it (a worker killed or a search interrupted: test_worker_kills.py;
a killed worker's trial retried through the proxy: test_proxy_workers.py; figures written
through it: test_proxy_artifacts.py)."""

from __future__ import annotations

import pytest

from autofreeze.study import records
from autofreeze.study.storage import load_existing_study
from tests.processes import (
    FINISHED,
    assert_budget_kept,
    start,
    trials,
    wait_for,
)
from tests.studies import write_study

pytestmark = pytest.mark.slow  # real processes: the full suite, not `make check`


def test_two_cpu_workers_share_one_sqlite_study(tmp_path):
    """Two worker processes on one SQLite study: both run trials (their lines are labelled),
    the budget holds, and each samples with a seed of its own. Whether two workers beat one is
    a measurement, not a test: benchmarks/distributed.py measures it side by side."""
    config = write_study(tmp_path, "w2", n_trials=12, epochs=2, pruner="none")
    log = tmp_path / "w2.log"
    # -v: the workers' epoch lines reach the log, labelled by worker
    proc = start("search", str(config), "--workers", "2", "-v", log=log)
    assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
    found = trials(f"sqlite:///{tmp_path}/w2.db", "w2")
    # twelve trials ran; a worker that lost the race for the last place records a trial that
    # never ran (over_budget), which happens or not depending on the timing
    ran = [t for t in found if not t.user_attrs.get("over_budget")]
    assert len(ran) == 12
    assert_budget_kept(found, 12)
    text = log.read_text()
    assert "[cpu0]" in text and "[cpu1]" in text
    # each worker samples with a seed of its own: no two searched trials are the same
    searched = [tuple(sorted(t.params.items())) for t in ran if "baseline" not in t.user_attrs]
    assert len(searched) == 6 and len(set(searched)) == 6, searched


# enough trials that the search cannot run them all while the worker prepares the study's data
N_SHARED = 12


def test_postgres_study_with_a_second_machine_worker(tmp_path, pg_url):
    """A search and a worker that knows only the storage and the study name, on PostgreSQL:
    the same study, the same budget, read back from the database itself. Through the proxy:
    a worker that knows only the proxy's URL and the study name runs a study's trials in
    test_proxy_artifacts.py, and two workers share one study and its budget in
    test_proxy_workers.py."""
    url = pg_url
    config = write_study(tmp_path, "pg", n_trials=N_SHARED, epochs=3, pruner="none")
    # the second worker knows only the storage and the study name: it reads the stored config.
    # It starts first and waits for the study, as a job array's worker does: started after the
    # search, its imports alone took longer than the search's ten trials on a loaded machine
    b = start(
        "worker",
        "--study-name",
        "pg",
        "--threads",
        "1",
        log=tmp_path / "b.log",
        env={"AUTOFREEZE_STORAGE": url},
    )
    wait_for(lambda: "waiting up to" in (tmp_path / "b.log").read_text(), 120, "b to wait")
    a = start("search", str(config), "--storage", url, log=tmp_path / "a.log")
    assert a.wait(timeout=400) == 0, (tmp_path / "a.log").read_text()[-3000:]
    assert b.wait(timeout=120) == 0, (tmp_path / "b.log").read_text()[-3000:]
    assert_budget_kept(trials(pg_url, "pg"), N_SHARED)
    b_log = (tmp_path / "b.log").read_text()
    ran_by_b = int(b_log.rsplit("worker done: ", 1)[1].split()[0])
    assert ran_by_b >= 1, b_log
    stored = records.config(load_existing_study(pg_url, "pg"))
    assert stored["study"]["storage"] == url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://autofreeze:hunter2@127.0.0.1:1/study", "postgresql://autofreeze:***@"),
        ("mysql+pymysql://root:hunter2@127.0.0.1:1/study", "mysql+pymysql://root:***@"),
        ("notadatabase://u:hunter2@x", "bad storage URL"),
        ("grpc://127.0.0.1:1", "cannot reach the storage proxy grpc://127.0.0.1:1 after 2 "),
    ],
)
def test_unreachable_database_is_one_masked_line(tmp_path, url, shown):
    text = refused_worker(tmp_path, url)
    assert "hunter2" not in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("Error: ") and shown in last, text


def refused_worker(tmp_path, url: str) -> str:
    """What ``autofreeze worker`` on the storage ``url`` said before it exited with code 1
    and no traceback; it tries twice, a second apart (the default five wait 15 s for the same
    line)."""
    log = tmp_path / "w.log"
    proc = start(
        "worker",
        "--study-name",
        "s",
        "--connect-attempts",
        "2",
        log=log,
        env={"AUTOFREEZE_STORAGE": url},
    )
    assert proc.wait(timeout=60) == 1
    text = log.read_text()
    assert "Traceback" not in text, text
    return text


def test_mysql_url_works_unchanged(tmp_path, mysql_url):
    config = write_study(
        tmp_path, "my", n_trials=3, epochs=1, pruner="none", study_extra="baselines = false"
    )
    proc = start("search", str(config), "--storage", mysql_url, log=tmp_path / "a.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "a.log").read_text()[-3000:]
    found = trials(mysql_url, "my")
    assert len(found) == 3 and all(t.state in FINISHED for t in found)


def test_storage_password_never_reaches_user_attrs(tmp_path, pg_url):
    url = pg_url.replace("postgres@", "postgres:not-checked-by-trust@")
    config = write_study(
        tmp_path,
        "pw",
        n_trials=1,
        epochs=1,
        pruner="none",
        study_extra=f'baselines = false\nstorage = "{url}"',
    )
    proc = start("search", str(config), "--json", log=tmp_path / "a.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "a.log").read_text()[-3000:]
    study = load_existing_study(pg_url, "pw")
    stored = records.config(study)
    dumped = repr(
        (study.user_attrs, stored, [(t.user_attrs, t.system_attrs) for t in study.trials])
    )
    assert "not-checked-by-trust" not in dumped
    assert "not-checked-by-trust" not in (tmp_path / "a.log").read_text()
    assert stored["study"]["storage"].startswith("postgresql://postgres:***@")


def test_a_database_with_no_connection_left_is_one_line_that_names_the_proxy(tmp_path, pg_url):
    """A real PostgreSQL refusal: a role allowed no connection gets the server's "too many
    connections" (what every worker past ``max_connections`` gets), said in one line with the
    remedy, exit 1, and the study's database untouched."""
    import uuid

    import psycopg

    role = f"af_full_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
    try:
        full = pg_url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)
        assert full != pg_url
        last = refused_worker(tmp_path, full).strip().splitlines()[-1]
        assert "too many connections" in last and "autofreeze proxy" in last, last
        assert "max_connections" in last
        with psycopg.connect(pg_url) as admin:  # nothing was created in the study's database
            tables = admin.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            ).fetchone()[0]
        assert tables == 0
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")
