"""Storage: passwords never shown, wherever the URL puts them; SQLite files that cannot hold a
study, read-only ones and new ones."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess

import pytest

from autofreeze.study.storage import mask_url
from tests.commands import invoke
from tests.studies import write_study


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@db:5432/af", "postgresql://u:***@db:5432/af"),
        ("postgresql://u:p@ss@db/af", "postgresql://u:***@db/af"),  # an unencoded @
        ("postgresql://u:p%40ss@db/af", "postgresql://u:***@db/af"),
        ("postgresql://db/af?user=u&password=secret", "postgresql://db/af?user=u&password=***"),
        (
            "mysql+pymysql://u:secret@db/af?charset=utf8&PASSWORD=x2",
            "mysql+pymysql://u:***@db/af?charset=utf8&PASSWORD=***",
        ),
        ("mysql+pymysql://root@127.0.0.1:3306/test", "mysql+pymysql://root@127.0.0.1:3306/test"),
        ("sqlite:///studies/quickstart.db", "sqlite:///studies/quickstart.db"),
        ("sqlite:////tmp/a:b@c.db", "sqlite:////tmp/a:b@c.db"),  # a path, not a user
        ("not a url", "not a url"),
    ],
)
def test_mask_url_hides_every_password(url, shown):
    assert mask_url(url) == shown
    for secret in ("secret", "ss@", "x2"):
        assert secret not in mask_url(url)


def test_sqlite_paths_that_cannot_hold_a_study_are_one_line(tmp_path):
    from autofreeze.errors import StorageError
    from autofreeze.study.storage import open_storage

    (tmp_path / "notes.db").write_text("not a database")
    (tmp_path / "afile").write_text("")
    cases = {
        "notes.db": "file is not a database",
        "afile/study.db": "afile is a file, not a folder",
    }
    for name, reason in cases.items():
        with pytest.raises(StorageError, match=reason) as err:
            open_storage(f"sqlite:///{tmp_path / name}", progress=lambda _: None)
        assert "\n" not in str(err.value) and "check the path" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "notes.db"]


def test_a_new_study_file_is_said_and_a_failed_search_leaves_none(tmp_path):
    config = write_study(tmp_path, "typo", n_trials=1, epochs=1, study_extra="baselines = false")
    result = invoke("search", str(config), "--storage", f"sqlite:///{tmp_path}/new/study.db")
    assert result.exit_code == 0, result.output
    assert f"created a new SQLite study database {tmp_path}/new/study.db" in result.stderr
    again = invoke("search", str(config), "--storage", f"sqlite:///{tmp_path}/new/study.db")
    assert "created a new" not in again.stderr  # an existing file: nothing to say
    # a config that fails before its first trial (here: its data) leaves no database behind
    bad = config.with_name("bad.toml")
    bad.write_text(config.read_text().replace("num_classes = 3", "num_classes = 1"))
    result = invoke("search", str(bad), "--storage", f"sqlite:///{tmp_path}/other.db")
    assert result.exit_code == 1 and "must be >= 2" in result.stderr, result.output
    assert not list(tmp_path.glob("other.db*")) and "created" not in result.stderr


def test_read_only_commands_never_create_a_database(tmp_path):
    url = f"sqlite:///{tmp_path}/nope/typo.db"
    for command in ("trials", "best"):
        result = invoke(command, "--storage", url, "--study-name", "s")
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.stderr.strip() == (
            f"Error: no SQLite study database at {tmp_path}/nope/typo.db (check the path; "
            "`autofreeze search CONFIG` creates it)"
        )
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def immutable(tmp_path):
    """A finished study, then its folder and file made immutable (root included)."""
    config = write_study(tmp_path, "ro", n_trials=2, epochs=1, study_extra="baselines = false")
    assert invoke("search", str(config)).exit_code == 0
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    with sqlite3.connect(tmp_path / "ro.db") as con:  # every trial in the file, none in its WAL
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(tmp_path / "ro.db", frozen / "ro.db")
    if subprocess.run(["chattr", "+i", str(frozen / "ro.db")], capture_output=True).returncode:
        pytest.skip("chattr +i is not supported on this filesystem")
    subprocess.run(["chattr", "+i", str(frozen)], check=True)
    yield config, frozen / "ro.db"
    subprocess.run(["chattr", "-R", "-i", str(frozen)], check=True)


def test_an_immutable_study_can_be_read_but_not_searched(immutable):
    config, db = immutable
    url = f"sqlite:///{db}"
    listed = invoke("trials", "--storage", url, "--study-name", "ro", "--json")
    assert listed.exit_code == 0, listed.output
    assert len(json.loads(listed.stdout)) == 2
    assert "reading it as an immutable snapshot" in listed.stderr
    best = invoke("best", "--storage", url, "--study-name", "ro")
    assert best.exit_code == 0 and best.stdout.startswith("best trial ")
    result = invoke("search", str(config), "--storage", url)
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot write to SQLite file {db}: ")
    assert "read-only or immutable" in line
    assert sorted(p.name for p in db.parent.iterdir()) == ["ro.db"]


# -- a relative SQLite path that meant an absolute one --------------------------------------------
@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A current folder without ``data/`` and a filesystem root (injected) that has one, as on
    a machine with ``/data``; returns (cwd, root, config)."""
    import autofreeze.study.storage

    cwd, root = tmp_path / "work", tmp_path / "root"
    (root / "data" / "studies").mkdir(parents=True)
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(autofreeze.study.storage, "ROOT", root, raising=False)
    config = write_study(
        tmp_path, "rel", n_trials=1, epochs=1, weights="none", study_extra="baselines = false"
    )
    return cwd, root, config


def test_a_relative_sqlite_path_that_names_a_root_folder_says_which_url_was_meant(elsewhere):
    cwd, root, config = elsewhere
    result = invoke("search", str(config), "--storage", "sqlite:///data/studies/my.db")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        f"Error: sqlite:///data/studies/my.db is a path relative to the current folder ({cwd}, "
        f"which has no data/), but {root}/data exists: for {root}/data/studies/my.db write "
        f"sqlite:///{root}/data/studies/my.db (four slashes); to create a new database under "
        "the current folder, write sqlite:///./data/studies/my.db"
    )
    assert list(cwd.iterdir()) == [] and list((root / "data" / "studies").iterdir()) == []
    # a command that only reads says the same where it finds no file
    listed = invoke("trials", "--storage", "sqlite:///data/studies/my.db", "--study-name", "rel")
    assert listed.exit_code == 1 and f"sqlite:///{root}/data/studies/my.db" in listed.stderr


def test_a_relative_sqlite_path_meant_as_such_is_created_without_a_word(elsewhere):
    from autofreeze.study.storage import open_storage

    cwd, root, _ = elsewhere
    open_storage("sqlite:///./data/studies/a.db")  # spelled relative: what it says
    assert (cwd / "data" / "studies" / "a.db").is_file()
    open_storage("sqlite:///data/studies/b.db")  # data/ exists here now: no doubt left
    assert (cwd / "data" / "studies" / "b.db").is_file()
    open_storage("sqlite:///new/c.db")  # no /new at the root: nothing else was meant
    assert (cwd / "new" / "c.db").is_file()
    assert list((root / "data" / "studies").iterdir()) == []


def test_a_commit_that_lost_its_connection_is_a_lost_storage_with_its_reason():
    """Optuna wraps a failed commit in StorageInternalError ("invalid data ... exceeding max
    length", its message for any SQLAlchemy error there: the load harness met it when a server's
    connections were all taken); the worker says the database's own reason, with its remedy."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    from autofreeze.study.storage import storage_lost

    def wrapped(error: Exception) -> Exception:
        try:
            try:
                raise error
            except Exception as e:
                raise optuna.exceptions.StorageInternalError("An exception is raised") from e
        except optuna.exceptions.StorageInternalError as exc:
            return exc

    full = OperationalError("COMMIT", {}, Exception("FATAL:  sorry, too many clients already"))
    reason = storage_lost(wrapped(full))
    assert reason is not None and "too many clients" in reason and "autofreeze proxy" in reason
    # a bad value is a bug to see, not a lost database
    assert storage_lost(wrapped(IntegrityError("INSERT", {}, Exception("duplicate key")))) is None
