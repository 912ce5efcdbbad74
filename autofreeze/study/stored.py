"""The config a study runs, stored with it: what every worker runs, and the check that a study
holding trials goes on only with the config they ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from autofreeze.config import StudyConfig, parse_config
from autofreeze.errors import ConfigError
from autofreeze.study import records
from autofreeze.study.storage import mask_url

# what a trial's value depends on; the rest (budget, storage, devices, caching) may change
# between runs of one study
SAME_STUDY = {
    "study": ("metric",),
    "backbone": ("name", "weights", "granularity"),
    "dataset": None,  # every key
    "search": None,
    "training": None,
}


RUNTIME_TRAINING = {
    "device",
    "amp",
    "channels_last",
    "compile",
    "eval_batch_size",
    "feature_cache",
    "cache_size",
    "seed",
    "data_memory",
    "decode_workers",
    "validate",  # which epochs are measured, not how a trial trains or its value
}

# where a new study's first plans come from: read once, when the study is created (a resumed
# study queues no first plans again), so a changed value changes no trial
RUNTIME_SEARCH = {"warm_start", "warm_plans", "warm_from"}
RUNTIME = {"training": RUNTIME_TRAINING, "search": RUNTIME_SEARCH}


def config_changes(stored: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The keys a trial's value depends on that differ between two configs (as dicts)."""
    out = []
    for section, keys in SAME_STUDY.items():
        a, b = stored.get(section) or {}, new.get(section) or {}
        names = keys or sorted(set(a) | set(b))
        for key in names:
            if key in RUNTIME.get(section, ()):
                continue
            if a.get(key) != b.get(key):
                out.append(f"[{section}] {key} was {a.get(key)!r}, now {b.get(key)!r}")
    return out


def check_same_study(study: optuna.Study, cfg: StudyConfig) -> None:
    """A study that holds trials goes on only with the config they ran (metric and direction,
    backbone, data, search space, training); anything else would mix incomparable trials."""
    trials = study.get_trials(deepcopy=False)
    stored = records.config(study)
    changes = config_changes(stored, cfg.to_dict()) if stored and trials else []
    if (has := [d.name.lower() for d in study.directions]) != cfg.study.directions:
        changes.insert(
            0,
            f"the study {'/'.join(has)}s, [study] metric/objectives "
            f"{'/'.join(cfg.study.directions)}",
        )
    if changes:
        more = f" (and {len(changes) - 2} more)" if len(changes) > 2 else ""
        raise ConfigError(
            f"study {study.study_name!r} in {mask_url(cfg.storage_url)} holds {len(trials)} "
            f"trials of another config: {'; '.join(changes[:2])}{more}; give [study] name a "
            "new value (or --study-name) to start another study"
        )


def store_config(study: optuna.Study, cfg: StudyConfig) -> None:
    """Store the resolved config (every override applied) for the study's workers to run."""
    stored = cfg.to_dict()
    if stored["study"].get("storage"):  # anyone reading the study reads it: no passwords
        stored["study"]["storage"] = mask_url(stored["study"]["storage"])
    search = stored.get("search") or {}
    warm = search.get("warm_start")
    for entry in warm if isinstance(warm, list) else [warm]:
        if isinstance(entry, dict) and entry.get("storage"):
            entry["storage"] = mask_url(entry["storage"])
    if search.get("warm_from"):
        search["warm_from"] = [mask_url(url) for url in search["warm_from"]]
    records.write_config(study, stored, str(cfg.base_dir))


def stored_config(
    study: optuna.Study, url: str, overrides: dict[str, Any] | None = None
) -> StudyConfig:
    """The config the study runs, as its search stored it; ``url`` is the storage's real URL
    (the stored one is masked)."""
    stored = records.config(study)
    if stored is None:
        raise ConfigError(
            f"study {study.study_name!r} has no stored autofreeze config; "
            "run `autofreeze search CONFIG` to create it"
        )
    folder = Path(records.config_dir(study))
    base = folder if folder.is_dir() else Path.cwd()
    return parse_config(
        stored,
        f"study {study.study_name!r} stored config",
        base / "study.toml",
        {**(overrides or {}), "study.storage": url},
    )
