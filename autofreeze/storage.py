"""Study storage: an Optuna RDB URL (SQLite by default, PostgreSQL/MySQL unchanged)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autofreeze.errors import StorageError


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages, logs and reports)."""
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
    except Exception:
        return url.split("@")[-1] if "@" in url else url
    return u.render_as_string(hide_password=True) if u.password else url


def open_storage(url: str, **kwargs: Any) -> Any:
    """Open (and create the tables of) an RDB storage, failing with one clear line."""
    import optuna
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if str(path) not in ("", ":memory:"):
            path.parent.mkdir(parents=True, exist_ok=True)
        # several local workers share the file: wait for the lock instead of failing
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
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
        raise StorageError(f"cannot open storage {mask_url(url)!r}: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def load_existing_study(url: str, study_name: str) -> Any:
    """Load a study that must exist; a missing one lists the names the storage holds."""
    import optuna

    storage = open_storage(url)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(storage)]
    if study_name not in names:
        raise StorageError(
            f"no study {study_name!r} in {mask_url(url)} (studies there: "
            f"{', '.join(names) or 'none'}); run `autofreeze search` first"
        )
    return optuna.load_study(study_name=study_name, storage=storage)
