"""Storage URLs: passwords never shown, wherever the URL puts them."""

from __future__ import annotations

import pytest

from autofreeze.storage import mask_url


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


def test_sqlite_paths_that_cannot_hold_a_study_are_one_line_and_a_new_file_is_said(tmp_path):
    from autofreeze.errors import StorageError
    from autofreeze.storage import open_storage

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
    said: list[str] = []
    open_storage(f"sqlite:///{tmp_path / 'typo' / 'stduy.db'}", progress=said.append)
    assert said == [f"created a new SQLite study database {tmp_path / 'typo' / 'stduy.db'}"]
    said.clear()
    open_storage(f"sqlite:///{tmp_path / 'typo' / 'stduy.db'}", progress=said.append)
    assert said == []  # an existing file: nothing to say
