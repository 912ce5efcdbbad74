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
