"""The search: prepare a study once, then run its trials here or in one worker process per
device; ``autofreeze worker`` joins a study from anywhere.

Workers always run the config stored in the study (every override applied by the search that
stored it); what a worker receives is only its device and its threads.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autofreeze.config import StudyConfig
from autofreeze.errors import ConfigError, PlanError, StorageError, UnknownNameError
from autofreeze.plugins.registry import Registry
from autofreeze.progress import Progress, detail, output_lost, stderr_progress, unwatch, watch
from autofreeze.review.dashboard import Publisher
from autofreeze.review.summary import probe_lines, trial_line
from autofreeze.runs.prepare import Prepared, prepare
from autofreeze.runs.pretrain import ensure_weights
from autofreeze.search.baselines import baseline_plans, enqueue_baselines, enqueue_plans
from autofreeze.search.objective import Objective, OverBudget, TrialFailed
from autofreeze.search.probe import prior_plans, run_probe
from autofreeze.search.reevaluation import reevaluate
from autofreeze.search.space import SearchSpace, head_lr_floor
from autofreeze.search.workers import plan_workers, run_workers
from autofreeze.study import (
    budget,
    check_same_study,
    make_sampler,
    open_study,
    records,
    requeue_interrupted,
    requeue_lost,
    run_stream,
    store_config,
    stored_config,
    wait_for_study,
    worker_label,
)
from autofreeze.study.storage import (
    mask_url,
    new_sqlite_path,
    open_storage,
    remove_if_empty,
    set_heartbeat,
)

STATIC_PRETRAINED = ("static", "pretrained")


class _OneLineFailures(logging.Filter):
    """Optuna logs a failed trial with its traceback. A trial the objective failed (diverged,
    out of memory) or Ctrl-C cut short already has its reason on autofreeze's own progress
    line; a bug's traceback still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, TrialFailed | OverBudget | KeyboardInterrupt):
            return False
        return not record.getMessage().endswith("failed with value None.")


def quiet_trial_failures() -> None:
    """Install :class:`_OneLineFailures` on the logger Optuna reports failed trials with."""
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _OneLineFailures) for f in logger.filters):
        logger.addFilter(_OneLineFailures())


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
    """Everything before the first trial: storage, weights, data, checks, study, baselines.

    Run once by ``autofreeze search`` before it starts workers, so that workers never race to
    pretrain or to enqueue the baselines, and a bad config or bad data leaves no study behind.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    created = new_sqlite_path(cfg.storage_url)
    storage = open_storage(cfg.storage_url, heartbeat=cfg.study.heartbeat)  # fail fast on a bad URL
    try:
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
    new = not study.get_trials(deepcopy=False)
    if cfg.study.baselines:
        enqueue_baselines(study, space, prepared.n_blocks, cfg.training.epochs, progress)
    if cfg.study.probe and new:
        result = run_probe(prepared)
        for line in probe_lines(result):
            progress(line)
        study.set_user_attr(records.PROBE, result.to_dict())
        taken: set[int] = set()  # boundaries a baseline already runs a static plan at
        if cfg.study.baselines:
            recipes = baseline_plans(space, prepared.n_blocks, cfg.training.epochs)
            taken = {p.boundary for _, p in recipes if (p.schedule, p.init) == STATIC_PRETRAINED}
        plans = prior_plans(result, prepared.n_blocks, taken)
        enqueue_plans(study, space, plans, records.PRIOR, progress)
    # last: a worker waiting for the study (`worker --wait`) starts once the config is stored,
    # so it never runs a searched trial ahead of the baselines and the probe's plans
    store_config(study, cfg)
    return study, prepared, space


def run_search(
    cfg: StudyConfig,
    *,
    devices: str = "cpu",
    workers: int | None = None,
    registry: Registry | None = None,
    progress: Progress = stderr_progress,
) -> SearchResult:
    """Prepare the study, then run its trials: in this process for one CPU worker, else in one
    ``autofreeze worker`` process per device (``devices``/``workers`` as in the CLI)."""
    specs = plan_workers(devices, workers)
    t0 = time.perf_counter()
    study, prepared, space = prepare_search(cfg, registry, progress)
    before, _ = budget(study)
    watch(progress, study, cfg, workers=len(specs), reevaluate=True)  # a live display, if any
    if len(specs) == 1 and specs[0].device == "cpu":
        run_trials(study, prepared, space, progress)
    else:
        run_workers(specs, cfg.study.name, cfg.storage_url, progress)
    publisher = Publisher(cfg, progress)
    # the budget is spent: name the best (a multi-objective study keeps its Pareto front)
    if budget(study)[0] >= (cfg.study.n_trials or 0) and not cfg.study.objectives:
        quiet_trial_failures()
        objective = Objective(prepared, space, progress)
        objective.on_end = publisher.trial_figure
        reevaluate(
            study,
            objective,
            cfg.study.reevaluate,
            cfg.study.reevaluate_seeds,
            cfg.training.seed,
            progress,
            catch=(TrialFailed, OverBudget),
            callbacks=[publisher.trial_note],
        )
    publisher.study_view(study)
    unwatch(progress)
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
) -> int:
    """Join an existing study and run trials until its global budget is spent (a worker).

    A worker started together with the search that creates the study (a job array) waits up
    to ``wait`` seconds for it: until the search has stored its config, the last step of
    :func:`prepare_search`, after the baselines and the probe's plans are queued.
    """
    from sqlalchemy.exc import OperationalError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, attempts=connect_attempts, progress=progress)
    cfg = stored_config(
        wait_for_study(url, study_name, storage, wait, progress),
        url,
        {"training.device": device, "study.timeout": timeout},
    )
    set_heartbeat(storage, cfg.study.heartbeat)
    study = open_study(cfg, storage)
    try:
        prepared = prepare(cfg)
        space = search_space(prepared)
        watch(progress, study, cfg)
        ran = run_trials(study, prepared, space, progress, worker_label())
        unwatch(progress)
        Publisher(cfg, progress).study_view(study)
        return ran
    except OperationalError as exc:
        raise StorageError(
            f"lost the study database {mask_url(url)} ({str(exc.orig or exc).splitlines()[0]}); "
            "the trial that was running is retried by another worker once its heartbeat "
            "goes stale"
        ) from None


class _Interrupts:
    """Ctrl-C while a trial trains interrupts it at once; anywhere else (Optuna creating or
    finishing a trial in the database, the wait between trials) it is held until that step is
    done, so an interrupt never leaves a trial RUNNING with nobody behind it."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        if self.objective.training:
            raise KeyboardInterrupt

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


def run_trials(
    study: optuna.Study,
    prepared: Prepared,
    space: SearchSpace,
    progress: Progress = stderr_progress,
    worker: str = "main",
    poll: float = 2.0,
) -> int:
    """The worker loop: take trials until the study's global budget is spent; return how many
    this process ran.

    A trial starts only while ``counted + running < n_trials``, so the budget holds however
    many workers share the study. When the rest of the budget is running elsewhere the worker
    waits: if one of those trials dies (its heartbeat goes stale) it is retried here.
    ``worker`` names this process in the sampler's seed (see ``study.run_stream``).
    """
    n_trials, timeout = prepared.cfg.study.n_trials, prepared.cfg.study.timeout
    quiet_trial_failures()
    # a sampler seeded for this worker and this run: no two of them propose the same trials
    trials = study.get_trials(deepcopy=False)
    study.sampler = make_sampler(
        prepared.cfg, run_stream(study, worker), records.initial_design(trials)
    )
    objective = Objective(prepared, space, progress)
    publisher = Publisher(prepared.cfg, progress)
    publisher.names(study)
    objective.on_end = publisher.trial_figure
    t0 = time.perf_counter()
    ran = 0
    with _Interrupts(objective) as interrupts:
        while True:
            interrupts.check()
            done, running = budget(study)
            elapsed = time.perf_counter() - t0
            if n_trials is not None and done >= n_trials:
                break
            if timeout is not None and elapsed >= timeout:
                progress(f"timeout of {timeout:.0f}s reached")
                break
            if n_trials is not None and done + running >= n_trials:
                # marks trials of dead workers FAIL and re-queues them (the retry callback)
                optuna.storages.fail_stale_trials(study)
                time.sleep(poll)
                continue
            finished: list[FrozenTrial] = []
            try:
                study.optimize(
                    objective,
                    n_trials=1,
                    catch=(TrialFailed, OverBudget),
                    callbacks=[
                        lambda _study, trial, out=finished: out.append(trial),
                        publisher.trial_note,
                    ],
                )
            except KeyboardInterrupt:
                requeue_interrupted(study, objective.current_trial, progress)
                raise
            if finished and records.over_budget(finished[0]):
                continue  # another worker took the last of the budget first: nothing ran
            ran += 1
            if finished:
                detail(progress, trial_line(study, finished[0], ran, n_trials, t0, timeout))
            if output_lost():  # nobody is watching: the trial is recorded, take no new one
                break
    return ran
