"""The search: prepare a study once, then run its trials here or in one worker process per
device; ``autofreeze worker`` joins a study from anywhere.

Workers always run the config stored in the study (every override applied by the search that
stored it); what a worker receives is only its device and its threads.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import optuna

from autofreeze.config import StudyConfig
from autofreeze.errors import ConfigError, PlanError, StorageError, UnknownNameError
from autofreeze.plugins.registry import Registry
from autofreeze.progress import Progress, stderr_progress
from autofreeze.runs.prepare import Prepared, prepare
from autofreeze.runs.pretrain import ensure_weights
from autofreeze.search.baselines import (
    enqueue_first,
    first_plans,
    fit_recipe_lr,
    reference_plans,
)
from autofreeze.search.objective import Objective
from autofreeze.search.observer import Observers, Run, SearchObserver
from autofreeze.search.probe import prior_plans, probe_lines, run_probe
from autofreeze.search.reevaluation import reevaluate
from autofreeze.search.space import SearchSpace, head_lr_floor
from autofreeze.search.trials import rerun_plan, run_trials, search_done
from autofreeze.search.warm import WarmStart, read_warm_start, run_floor, unlike, warm_plans
from autofreeze.search.workers import plan_workers, run_workers
from autofreeze.study import (
    budget,
    check_same_study,
    open_study,
    records,
    requeue_lost,
    store_config,
    stored_config,
    wait_for_study,
    worker_label,
)
from autofreeze.study.allowance import allowance, first_plans_room, seconds_left, trial_estimate
from autofreeze.study.artifacts import check_artifact_store
from autofreeze.study.proxy import is_proxy_url
from autofreeze.study.queue import StudyOnStorage
from autofreeze.study.storage import (
    mask_url,
    new_sqlite_path,
    open_storage,
    remove_if_empty,
    set_heartbeat,
    storage_lost,
)

STATIC_PRETRAINED = ("static", "pretrained")


@dataclass
class SearchResult:
    study: optuna.Study
    ran: int
    seconds: float


def search_space(prepared: Prepared) -> SearchSpace:
    """The config's search space for this backbone and this training budget: schedule knobs
    and, with AdamW, the head LR searched only where they can make a difference."""
    cfg = prepared.cfg
    if not cfg.search.fit_to_budget:  # the configured ranges, exactly as written
        return SearchSpace.from_config(cfg.search, prepared.registry, prepared.n_blocks)
    floor = None
    if cfg.training.optimizer == "adamw":
        floor = head_lr_floor(prepared.steps_per_run, prepared.head_fan_in)
    return SearchSpace.from_config(
        cfg.search, prepared.registry, prepared.n_blocks, cfg.training.epochs, floor
    )


def _prepare_trials(
    cfg: StudyConfig, registry: Registry | None, progress: Progress
) -> tuple[Prepared, SearchSpace]:
    """Weights, data and search space: every check of the config that needs no study."""
    try:
        ensure_weights(cfg, progress, registry)
        prepared = prepare(cfg, registry)
        return prepared, search_space(prepared)
    except (ConfigError, UnknownNameError, PlanError) as exc:
        where = str(cfg.path) if cfg.path else "config"
        raise type(exc)(f"{where}: {exc}") from None


def prepare_search(
    cfg: StudyConfig, registry: Registry | None = None, progress: Progress = stderr_progress
) -> tuple[optuna.Study, Prepared, SearchSpace]:
    """:func:`prepare_study`, for a caller that needs only the study."""
    on, prepared, space = prepare_study(cfg, registry, progress)
    return on.study, prepared, space


def prepare_study(
    cfg: StudyConfig,
    registry: Registry | None = None,
    progress: Progress = stderr_progress,
    connect_attempts: int = 1,
) -> tuple[StudyOnStorage, Prepared, SearchSpace]:
    """Everything before the first trial: storage, weights, data, checks, study, baselines.

    Run once by ``autofreeze search`` before it starts workers, so that workers never race to
    pretrain or to enqueue the baselines, and a bad config or bad data leaves no study behind.
    ``connect_attempts`` > 1 retries a database or proxy that does not answer yet (exponential
    backoff); the default fails at once, as a typo in the URL should.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if cfg.study.dashboard:  # a bucket that cannot be reached is one line, before any study
        check_artifact_store(cfg.artifacts)
    created = new_sqlite_path(cfg.storage_url)
    storage = open_storage(  # a bad URL fails fast unless told to retry
        cfg.storage_url,
        heartbeat=cfg.study.heartbeat,
        attempts=connect_attempts,
        progress=progress,
    )
    try:
        # the earlier studies first: a refusal costs no pretraining and no decoding
        warm = read_warm_start(cfg, _is_new(storage, cfg.study.name), progress)
        prepared, space = _prepare_trials(cfg, registry, progress)
    except BaseException:  # a config that fails here leaves no trace, not even an empty file
        if created is not None:
            storage.engine.dispose()
            remove_if_empty(created)
        raise
    if created is not None:  # a typo in the path would otherwise start an empty study unnoticed
        progress(f"created a new SQLite study database {created}")
    study = open_study(cfg, storage)
    try:
        check_same_study(study, cfg)
    except ConfigError as exc:
        raise ConfigError(f"{cfg.path or 'config'}: {exc}") from None
    for note in space.notes:
        progress(f"note: {note}")
    requeue_lost(study, progress)
    if not study.get_trials(deepcopy=False):
        start_study(study, cfg, prepared, space, progress, warm)
    # last: a worker waiting for the study (`worker --wait`) starts once the config is stored,
    # so it never runs a searched trial ahead of the baselines and the probe's plans
    store_config(study, cfg)
    return StudyOnStorage(study, storage), prepared, space


def _is_new(storage: Any, name: str) -> bool:
    """Whether the study ``name`` has no trial yet (or does not exist): one that
    :func:`start_study` starts."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return True
    return not storage.get_all_trials(study_id, deepcopy=False)


def start_study(
    study: optuna.Study,
    cfg: StudyConfig,
    prepared: Prepared,
    space: SearchSpace,
    progress: Progress,
    warm: WarmStart | None = None,
) -> None:
    """A new study: the probe (timed: it is inside the budget), then the first plans, as many
    as the budget surely runs: the earlier studies' best plans (``[search] warm_start``,
    :mod:`autofreeze.search.warm`) ahead of the recipes and the probe's plans
    (:func:`autofreeze.search.baselines.first_plans`)."""
    floor = run_floor(cfg, prepared.steps_per_run, prepared.head_fan_in)
    if floor is not None:  # a later study that warm-starts from this one scales head LRs by it
        records.write_head_lr_floor(study, floor)
    result = None
    estimate = None
    if cfg.study.probe:
        t0 = time.perf_counter()
        result = run_probe(prepared)
        seconds = time.perf_counter() - t0
        for line in probe_lines(result):
            progress(line)
        records.write_probe(study, {**result.to_dict(), "seconds": round(seconds, 3)})
        estimate = trial_estimate(seconds, cfg.training.epochs)
    recipes, portfolio = reference_plans(cfg, space, prepared.n_blocks, cfg.training.epochs)
    taken = {
        p.boundary for _, p in recipes + portfolio if (p.schedule, p.init) == STATIC_PRETRAINED
    }
    priors = prior_plans(result, prepared.n_blocks, taken) if result is not None else []
    priors = [(name, fit_recipe_lr(plan, space.lr_floor)) for name, plan in priors]
    room = first_plans_room(allowance(cfg), estimate)
    probe = None if result is None else result.to_dict()
    offered_warm = warm_plans(warm, cfg, space, floor, probe, progress)
    warmed = offered_warm[:room]  # first, and kept first by a small budget
    if warmed:  # a prior or portfolio plan an earlier study ran already is not run twice
        priors, portfolio = (unlike(warmed, space, ps) for ps in (priors, portfolio))
    plans = first_plans(
        recipes,
        priors,
        None if result is None else result.boundary,
        result is not None and result.similarity == "similar",
        None if room is None else room - len(warmed),
        portfolio,
    )
    offered = len(recipes) + len(portfolio) + len(priors)
    if len(plans) < offered or len(warmed) < len(offered_warm):
        which = "the probe ranks first" if result is not None else "listed first"
        ahead = f"{len(warmed)} of {len(offered_warm)} warm-start plans, then " * bool(offered_warm)
        rest = f"the {len(plans)} {which} of {offered}" if plans else f"none of the other {offered}"
        progress(f"the budget runs about {room} first plans: queued {ahead}{rest}")
    enqueue_first(study, space, warmed + plans, progress)


def run_search(
    cfg: StudyConfig,
    *,
    devices: str = "cpu",
    workers: int | None = None,
    registry: Registry | None = None,
    progress: Progress = stderr_progress,
    observers: Iterable[SearchObserver] = (),
    connect_attempts: int = 1,
) -> SearchResult:
    """Prepare the study, then run its trials: in this process for one CPU worker, else in one
    ``autofreeze worker`` process per device (``devices``/``workers`` as in the CLI;
    ``connect_attempts`` as in :func:`prepare_study`).

    ``observers`` (the terminal display, the dashboard publisher) are told what happens; see
    :mod:`autofreeze.search.observer`.
    """
    specs = plan_workers(devices, workers)
    t0 = time.perf_counter()
    on, prepared, space = prepare_study(cfg, registry, progress, connect_attempts)
    study = on.study
    before, _ = budget(study)
    run = Run(on, cfg, workers=len(specs), reevaluate=True)
    told = Observers(observers, progress)
    told.started(run)
    objective: Objective | None = None  # built where this process trains: trials, re-runs
    if len(specs) == 1 and specs[0].device == "cpu":
        objective = Objective(prepared, space, progress)
        run_trials(run, objective, told, progress)
    else:
        run_workers(specs, cfg.study.name, cfg.storage_url, progress)
    # the search is done: name the best (a multi-objective study keeps its Pareto front)
    if search_done(study, cfg) and not cfg.study.objectives:
        objective = objective or Objective(prepared, space, progress)
        a = allowance(cfg)
        reevaluate(
            study,
            a,
            cfg.training.seed,
            progress,
            rerun_plan(study, objective, progress),
            lambda: seconds_left(a, study),
        )
    told.ended(run)
    return SearchResult(study, budget(study)[0] - before, time.perf_counter() - t0)


def join_study(
    url: str,
    study_name: str,
    *,
    device: str | None = None,
    timeout: float | None = None,
    connect_attempts: int = 5,
    wait: float = 0.0,
    progress: Progress = stderr_progress,
    observers: Iterable[SearchObserver] = (),
) -> int:
    """Join an existing study and run trials until its global budget is spent (a worker).

    A worker started together with the search that creates the study (a job array) waits up
    to ``wait`` seconds for it: until the search has stored its config, the last step of
    :func:`prepare_search`, after the baselines and the probe's plans are queued.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, attempts=connect_attempts, progress=progress)
    cfg = stored_config(
        wait_for_study(url, study_name, storage, wait, progress),
        url,
        {"training.device": device, "study.timeout": timeout},
    )
    if cfg.study.dashboard:  # the figures' bucket, before this worker touches the study
        check_artifact_store(cfg.artifacts)
    set_heartbeat(storage, cfg.study.heartbeat)
    run = Run(StudyOnStorage(open_study(cfg, storage), storage), cfg)
    told = Observers(observers, progress)
    try:
        prepared = prepare(cfg)
        objective = Objective(prepared, search_space(prepared), progress)
        told.started(run)
        ran = run_trials(run, objective, told, progress, worker_label())
        told.ended(run)
        return ran
    except Exception as exc:  # the database or the proxy went away: one line, else a bug
        reason = storage_lost(exc)
        if reason is None:
            raise
        what = "storage proxy" if is_proxy_url(url) else "study database"
        raise StorageError(
            f"lost the {what} {mask_url(url)} ({reason}); the trial that was running is "
            "retried by another worker once its heartbeat goes stale"
        ) from None
