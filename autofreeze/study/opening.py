"""Creating a study or resuming it, and waiting for one that a search is still preparing."""

from __future__ import annotations

import time
from typing import Any

import optuna

from autofreeze.config import StudyConfig
from autofreeze.errors import StorageError
from autofreeze.progress import Progress
from autofreeze.study import records
from autofreeze.study.sampling import make_pruner, make_sampler
from autofreeze.study.storage import load_existing_study, mask_url, open_storage


def open_study(cfg: StudyConfig, storage: Any = None) -> optuna.Study:
    """Create the config's study, or load it if it exists, with the config's sampler/pruner."""
    storage = storage or open_storage(cfg.storage_url, heartbeat=cfg.study.heartbeat)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=cfg.study.name,
            directions=cfg.study.directions,
            sampler=make_sampler(cfg),
            pruner=make_pruner(cfg),
            load_if_exists=True,
        )
    except ValueError as exc:  # e.g. direction differs from the stored study's
        raise StorageError(
            f"study {cfg.study.name!r} in {mask_url(cfg.storage_url)}: {exc}"
        ) from None
    return records.with_storage(study, storage)  # it reads and writes the machine record


def wait_for_study(
    url: str, name: str, storage: Any, wait: float, progress: Progress, poll: float = 1.0
) -> optuna.Study:
    """The study ``name`` once its search has stored its config, waiting up to ``wait``
    seconds for it to appear (said once on ``progress``); then the error of a missing study."""
    deadline = time.monotonic() + wait
    said = False
    while True:
        try:
            study = load_existing_study(url, name, storage=storage)
            if records.has_config(study) or time.monotonic() >= deadline:
                return study  # stored_config() names a study that never got its config
        except StorageError:
            if time.monotonic() >= deadline:
                raise
        if not said:
            progress(
                f"waiting up to {wait:.0f}s for study {name!r} in {mask_url(url)} "
                "(its search is still preparing it)"
            )
            said = True
        time.sleep(max(0.0, min(poll, deadline - time.monotonic())))
