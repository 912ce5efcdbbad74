"""A study on its storage: sampler and pruner, creating or resuming it, the config it runs,
the baselines it starts with, its budget and its best plan."""

from __future__ import annotations

import hashlib
import math
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autofreeze import records
from autofreeze.baselines import baseline_plans
from autofreeze.config import StudyConfig, parse_config
from autofreeze.errors import ConfigError, StorageError
from autofreeze.plan import FreezePlan
from autofreeze.progress import Progress
from autofreeze.space import SearchSpace
from autofreeze.storage import load_existing_study, mask_url, open_storage

STARTUP_TRIALS = 5  # TPE's random start-up when a study has no enqueued plans
EXPLORE_TRIALS = 3  # random trials after the enqueued ones, where the recipes never go


def sampler_seed(study_seed: int, stream: str) -> int:
    """A seed of its own for one stream of trials (a worker's run), derived from the study's."""
    digest = hashlib.sha256(f"{study_seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def worker_label() -> str:
    """A worker started by ``autofreeze search`` has a label (``cpu0``, ``gpu1``); one started
    by hand is named by its host and process."""
    return os.environ.get("AUTOFREEZE_WORKER") or f"{socket.gethostname()}:{os.getpid()}"


def run_stream(study: optuna.Study, worker: str) -> str:
    """What sets this run of this worker apart from every other one on the study: the worker
    and the number of trials the study already holds.

    Two workers started together differ by name; a resumed run differs by its trial count; a
    search on a fresh study in one process gets the same stream every time (reproducible).
    """
    return f"{worker}:{len(study.get_trials(deepcopy=False))}"


def make_sampler(
    cfg: StudyConfig, stream: str = "", initial_design: int = 0
) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded for ``stream`` (see :func:`run_stream`): workers and
    resumed runs sharing one seed would propose the same trials.

    ``initial_design`` is how many enqueued plans (baselines, the probe's prior) the study
    starts with: most of TPE's start-up, then ``EXPLORE_TRIALS`` random trials (5 without
    any). With no random trial TPE exploited the first searched plan that beat the recipes
    (quickstart best 0.887); with 3 it found 0.933."""
    seed = sampler_seed(cfg.study.seed, stream) if stream else cfg.study.seed
    name = cfg.study.sampler
    if name == "tpe":
        startup = max(STARTUP_TRIALS, initial_design + EXPLORE_TRIALS)
        with warnings.catch_warnings():  # multivariate/group are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed,
                multivariate=True,
                group=True,
                n_startup_trials=startup,
                constant_liar=True,
            )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        with warnings.catch_warnings():  # "experimental" since Optuna 3.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.GPSampler(seed=seed)


def warmup_steps(fraction: float, epochs: int) -> int:
    """The first epoch a pruner may stop a trial at: ``fraction`` of the epochs, never the
    first epoch (steps are 1-based epochs)."""
    return max(2, math.ceil(fraction * epochs))


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    """The configured pruner, judging trials no earlier than ``[study] prune_after``.

    Early epochs rank fine-tuning plans poorly (a high LR under a cosine schedule starts badly
    and ends well); docs/benchmarks.md measures it and derives the defaults.
    """
    study, epochs = cfg.study, cfg.training.epochs
    warm = warmup_steps(study.prune_after, epochs)
    if study.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warm)
    if study.pruner == "percentile":
        return optuna.pruners.PercentilePruner(
            study.prune_percentile, n_startup_trials=3, n_warmup_steps=warm
        )
    if study.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=warm, max_resource=max(warm, epochs))
    return optuna.pruners.NopPruner()


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
    retries_first(study)
    return study


def retries_first(study: optuna.Study) -> None:
    """Make ``study`` take a re-queued trial (after Ctrl-C or a dead worker) before any other
    waiting one.

    Optuna pops the queue in the order trials were enqueued, so a retry waited behind every
    baseline and prior still queued; with a budget smaller than the queue it never ran and the
    comparison silently lost its recipe. Optuna has no public hook for the queue's order, so
    this replaces the study's own pop (same claim, same race handling), retries first
    (and re-evaluations, see :func:`_jumps_queue`).
    """

    def pop() -> int | None:
        waiting = study._storage.get_all_trials(
            study._study_id, deepcopy=False, states=(TrialState.WAITING,)
        )
        for trial in sorted(
            waiting, key=lambda t: (records.RETRY_OF not in t.user_attrs, t.number)
        ):
            try:  # another worker may claim or finish it first: take the next one
                if study._storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                    return trial._trial_id
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    study._pop_waiting_trial_id = pop  # type: ignore[method-assign]


def requeue_lost(study: optuna.Study, progress: Progress) -> int:
    """Re-queue the trials that were cut short (failed with no reason: a killed worker, a
    broken pipe) and that nothing has re-queued yet; return how many.

    Ctrl-C and stale heartbeats re-queue their trial at once; this catches the rest, so the
    next run of the study runs every recipe it started with.
    """
    trials = study.get_trials(deepcopy=False)
    handed_back = {
        t.user_attrs[records.RETRY_OF] for t in trials if records.RETRY_OF in t.user_attrs
    }
    for t in trials:
        handed_back.update(t.system_attrs.get("retry_history", ()))
    lost = [
        t
        for t in trials
        if t.state == TrialState.FAIL
        and not records.counts(t)
        and records.reevaluation_of(t) is None
        and not records.over_budget(t)  # never ran; a queued plan was re-queued at once
        and t.number not in handed_back
        and records.params_of(t)  # a trial that died before its sampler chose: nothing to redo
    ]
    for trial in lost:
        study.enqueue_trial(records.params_of(trial), user_attrs=records.retry_attrs(trial))
        progress(f"trial {trial.number} was cut short without a result: re-queued")
    return len(lost)


# what a trial's value depends on; the rest (budget, storage, devices, caching) may change
# between runs of one study
SAME_STUDY = {
    "study": ("metric",),
    "backbone": ("name", "weights", "granularity"),
    "dataset": None,  # every key
    "search": None,
    "training": None,
}
RUNTIME_TRAINING = {"device", "amp", "channels_last", "compile", "eval_batch_size",
                    "feature_cache", "cache_size", "seed", "data_memory",
                    "decode_workers"}  # fmt: skip


def config_changes(stored: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The keys a trial's value depends on that differ between two configs (as dicts)."""
    out = []
    for section, keys in SAME_STUDY.items():
        a, b = stored.get(section) or {}, new.get(section) or {}
        names = keys or sorted(set(a) | set(b))
        for key in names:
            if section == "training" and key in RUNTIME_TRAINING:
                continue
            if a.get(key) != b.get(key):
                out.append(f"[{section}] {key} was {a.get(key)!r}, now {b.get(key)!r}")
    return out


def check_same_study(study: optuna.Study, cfg: StudyConfig) -> None:
    """A study that holds trials goes on only with the config they ran (metric and direction,
    backbone, data, search space, training); anything else would mix incomparable trials."""
    trials = study.get_trials(deepcopy=False)
    stored = study.user_attrs.get(records.CONFIG)
    changes = config_changes(stored, cfg.to_dict()) if stored and trials else []
    if (has := [d.name.lower() for d in study.directions]) != cfg.study.directions:
        changes.insert(0, f"the study {'/'.join(has)}s, [study] metric/objectives "
                          f"{'/'.join(cfg.study.directions)}")  # fmt: skip
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
    if stored["study"].get("storage"):  # user attrs are shown everywhere: no passwords
        stored["study"]["storage"] = mask_url(stored["study"]["storage"])
    study.set_user_attr(records.CONFIG, stored)
    study.set_user_attr(records.CONFIG_DIR, str(cfg.base_dir))


def stored_config(
    study: optuna.Study, url: str, overrides: dict[str, Any] | None = None
) -> StudyConfig:
    """The config the study runs, as its search stored it; ``url`` is the storage's real URL
    (the stored one is masked)."""
    stored = study.user_attrs.get(records.CONFIG)
    if stored is None:
        raise ConfigError(
            f"study {study.study_name!r} has no stored autofreeze config; "
            "run `autofreeze search CONFIG` to create it"
        )
    folder = Path(study.user_attrs.get(records.CONFIG_DIR, "."))
    base = folder if folder.is_dir() else Path.cwd()
    return parse_config(
        stored,
        f"study {study.study_name!r} stored config",
        base / "study.toml",
        {**(overrides or {}), "study.storage": url},
    )


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
            if records.CONFIG in study.user_attrs or time.monotonic() >= deadline:
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


def enqueue_baselines(
    study: optuna.Study, space: SearchSpace, n_blocks: int, epochs: int, progress: Progress
) -> None:
    """The textbook recipes as the first trials, once per study."""
    if study.get_trials(deepcopy=False):
        return
    enqueue_plans(study, space, baseline_plans(space, n_blocks, epochs), records.BASELINE, progress)


def enqueue_plans(
    study: optuna.Study,
    space: SearchSpace,
    plans: list[tuple[str, FreezePlan]],
    attr: str,
    progress: Progress,
) -> None:
    """Named plans, moved into the space (those outside it skipped), as the next trials."""
    queued = [(name, c) for name, plan in plans if (c := space.clamp(plan)) is not None]
    for name, clamped in queued:
        study.enqueue_trial(clamped.to_params(), user_attrs={attr: name})
    if queued:  # one line for them all
        progress(f"enqueued {attr} {', '.join(name for name, _ in queued)}")


def budget(study: optuna.Study) -> tuple[int, int]:
    """(counted, running) trials of the whole study; see :func:`autofreeze.records.counts`."""
    return records.budget(study.get_trials(deepcopy=False))


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The plan named best after re-evaluation if there was one, else the best single run of a
    trial that is not itself a re-evaluation (a lucky seed does not make a plan best)."""
    trials = study.get_trials(deepcopy=False)
    choice = study.user_attrs.get(records.CHOICE)
    if choice is not None:
        return trials[choice["trial"]]
    runs = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and math.isfinite(records.metric_value(t) or math.nan)
        and records.reevaluation_of(t) is None
    ]
    if not runs:
        return None  # with several objectives: the best metric (`best` shows the front)
    return (max if records.maximizes(study) else min)(runs, key=records.metric_value)


def trial_plan(study: optuna.Study, number: int) -> FreezePlan:
    """The plan trial ``number`` ran (it must have run to the end, or been pruned)."""
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials) or not records.plan(trials[number]):
        raise StorageError(f"study {study.study_name!r} has no trial {number} with a plan "
                           "(see `autofreeze trials`)")  # fmt: skip
    return FreezePlan.from_dict(records.plan(trials[number]))


def best_plan(study: optuna.Study) -> FreezePlan:
    trial = best_trial(study)
    if trial is None:
        raise StorageError(f"study {study.study_name!r} has no finished trial yet")
    return FreezePlan.from_dict(records.plan(trial))
