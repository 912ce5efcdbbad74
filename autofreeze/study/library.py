"""Studies as a library: what the studies of a storage hold, read once and never written.

A later study starts from earlier ones (``[search] warm_start``, :mod:`autofreeze.search.warm`)
and ``autofreeze studies`` lists what a storage holds. Both read a study here: its stored config
(task, backbone, metric), its probe record, its head LR floor, the plan the re-evaluation chose
and its trials, through the storage's getters only (nothing here calls a ``set_*`` method, and
a SQLite file is opened as the read-only commands open it: never created, read as a snapshot
where it cannot be written).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autofreeze.progress import Progress, stderr_progress
from autofreeze.study import records
from autofreeze.study.storage import load_existing_study, mask_url, open_storage


@dataclass(frozen=True)
class StoredStudy:
    """One study of a storage as its records say, read at one moment."""

    name: str
    url: str  # the storage's real URL (:func:`mask_url` it for a message)
    directions: tuple[str, ...]  # "maximize" or "minimize", one per objective
    config: dict[str, Any] | None  # the stored config; None: not a study autofreeze searched
    probe: dict[str, Any] | None
    head_lr_floor: float | None
    choice: dict[str, Any] | None
    trials: tuple[FrozenTrial, ...]

    @property
    def where(self) -> str:
        """``'other' in sqlite:///studies/other.db``: the study in a message."""
        return f"{self.name!r} in {mask_url(self.url)}"

    @property
    def metric(self) -> str | None:
        return ((self.config or {}).get("study") or {}).get("metric")

    @property
    def direction(self) -> str:
        return self.directions[0]

    @property
    def backbone(self) -> str | None:
        return ((self.config or {}).get("backbone") or {}).get("name")

    @property
    def dataset(self) -> dict[str, Any]:
        return dict((self.config or {}).get("dataset") or {})

    @property
    def counted(self) -> int:
        """Trials that used up its budget (:func:`records.counts`)."""
        return sum(records.counts(t) for t in self.trials)

    @property
    def n_blocks(self) -> int | None:
        """Its backbone's block count, as its trials or its probe recorded it."""
        for t in self.trials:
            if n := records.n_blocks(t):
                return n
        return len((self.probe or {}).get("blocks") or []) or None

    def best_plans(self, k: int | None = None) -> list[FrozenTrial]:
        """Its best distinct plans, best first: complete trials that count in its budget (no
        re-evaluation run), the plan the re-evaluation chose first where there is one, then by
        value in its direction; a plan run twice stands once (its better run)."""
        runs = [
            t
            for t in self.trials
            if t.state == TrialState.COMPLETE
            and records.counts(t)
            and records.plan(t)
            and math.isfinite(records.metric_value(t) or math.nan)
        ]
        sign = -1 if self.direction == "maximize" else 1
        chosen = (self.choice or {}).get("trial")
        runs.sort(key=lambda t: (t.number != chosen, sign * (records.metric_value(t) or 0.0)))
        seen: set[str] = set()
        out = []
        for t in runs:
            key = json.dumps(records.plan(t), sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(t)
        return out if k is None else out[:k]

    def best(self) -> tuple[FrozenTrial, float, int] | None:
        """Its best plan's trial, its value and over how many runs: the re-evaluation's choice
        (the mean of its runs) where there is one, else the best single run."""
        plans = self.best_plans(1)
        if not plans:
            return None
        t = plans[0]
        if self.choice and self.choice.get("trial") == t.number and self.choice.get("mean"):
            return t, float(self.choice["mean"]), len(self.choice.get("values") or []) or 1
        return t, float(records.metric_value(t) or math.nan), 1


def open_library(url: str, progress: Progress | None = None) -> Any:
    """The storage of ``url`` opened to read (a missing SQLite file is an error, never made)."""
    return open_storage(url, read_only=True, progress=progress or stderr_progress)


def close_library(storage: Any) -> None:
    """Let go of the storage's connections (a SQLite file is left as it was)."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


def study_names(storage: Any) -> list[str]:
    return sorted(optuna.get_all_study_names(storage))


def read_study(storage: Any, url: str, name: str) -> StoredStudy:
    """The study ``name`` of an opened storage; a missing one is a ``StorageError`` naming the
    studies the storage holds."""
    study = load_existing_study(url, name, storage=storage)
    return StoredStudy(
        name=name,
        url=url,
        directions=tuple(d.name.lower() for d in study.directions),
        config=records.config(study),
        probe=records.probe(study),
        head_lr_floor=records.head_lr_floor(study),
        choice=records.choice(study),
        trials=tuple(study.get_trials(deepcopy=False)),
    )


def read_storage(
    url: str, progress: Progress | None = None, storage: Any = None
) -> list[StoredStudy]:
    """Every study of the storage at ``url`` (``storage``: that storage, already open), by
    name."""
    own = storage is None
    storage = storage or open_library(url, progress)
    try:
        return [read_study(storage, url, name) for name in study_names(storage)]
    finally:
        if own:
            close_library(storage)


def same_objective(a: StoredStudy, metric: str, direction: str) -> bool:
    """Whether ``a``'s best plans are best for ``metric`` in ``direction`` too."""
    return a.metric == metric and a.direction == direction


def comparable(studies: Iterable[StoredStudy], metric: str, direction: str) -> list[StoredStudy]:
    """The studies of ``metric`` and ``direction`` that hold a finished plan."""
    return [s for s in studies if same_objective(s, metric, direction) and s.best_plans(1)]
