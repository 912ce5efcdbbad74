"""Create or resume a study on its storage, enqueue the textbook baselines, run trials."""

from __future__ import annotations

import signal
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autofreeze import pipeline
from autofreeze.config import StudyConfig
from autofreeze.errors import ConfigError, PlanError, StorageError, UnknownNameError
from autofreeze.freezing import FreezePlan
from autofreeze.objective import Objective, TrialFailed
from autofreeze.registry import Registry, get_registry
from autofreeze.review import best_trial
from autofreeze.space import check_space, plan_params
from autofreeze.storage import mask_url, open_storage

CONFIG_ATTR = "autofreeze_config"
CONFIG_DIR_ATTR = "autofreeze_config_dir"


def make_sampler(cfg: StudyConfig) -> optuna.samplers.BaseSampler:
    seed = cfg.study.seed
    name = cfg.study.sampler
    if name == "tpe":
        # the baselines are the first trials; TPE still needs a few random ones of its own to
        # see the categorical choices (bn_mode, init, schedule) before it models the space
        startup = 5 + (len(BASELINE_NAMES) if cfg.study.baselines else 0)
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
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.GPSampler(seed=seed)


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    if cfg.study.pruner == "median":
        # steps are 1-based epochs: never prune on the first epoch
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    if cfg.study.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cfg.training.epochs)
    return optuna.pruners.NopPruner()


BASELINE_NAMES = (
    "linear_probe",
    "full_finetune_low_lr",
    "freeze_first_half",
    "gradual_unfreezing",
    "lp_ft",
    "from_scratch",
)


def baseline_plans(cfg: StudyConfig, n_blocks: int) -> list[tuple[str, FreezePlan]]:
    """The textbook recipes, each a plan the search space can express (others are skipped)."""
    epochs = cfg.training.epochs
    lp = max(1, epochs // 2)
    recipes = [
        ("linear_probe", FreezePlan(boundary=n_blocks, head_lr=1e-2)),
        ("full_finetune_low_lr", FreezePlan(boundary=0, head_lr=1e-3, backbone_lr_ratio=0.1)),
        (
            "freeze_first_half",
            FreezePlan(boundary=n_blocks // 2, head_lr=3e-3, backbone_lr_ratio=0.3),
        ),
        (
            "gradual_unfreezing",
            FreezePlan(
                boundary=0,
                schedule="gradual",
                schedule_params={"every": 1},
                head_lr=3e-3,
                backbone_lr_ratio=0.3,
            ),
        ),
        (
            "lp_ft",
            FreezePlan(
                boundary=0,
                schedule="lp_ft",
                schedule_params={"lp_epochs": lp, "ft_lr_scale": 0.1},
                head_lr=1e-2,
                backbone_lr_ratio=1.0,
            ),
        ),
        (
            "from_scratch",
            FreezePlan(boundary=0, head_lr=3e-3, backbone_lr_ratio=1.0, init="scratch"),
        ),
    ]
    space = cfg.search
    low, high = space.boundary_range(n_blocks)

    def clamp(value: float, r: Any) -> float:
        return min(max(value, r.low), r.high)

    def clamp_knobs(schedule: str, knobs: dict[str, Any]) -> dict[str, Any]:
        out = dict(knobs)
        for key, configured in space.knobs.get(schedule, {}).items():
            if isinstance(configured, list) and len(configured) == 2 and key in out:
                out[key] = type(out[key])(min(max(out[key], configured[0]), configured[1]))
            elif not isinstance(configured, list):
                out[key] = configured
        return out

    out = []
    for name, plan in recipes:
        if plan.schedule not in space.schedules or not low <= plan.boundary <= high:
            continue
        if plan.init not in space.choices("init"):
            continue
        out.append(
            (
                name,
                FreezePlan(
                    boundary=plan.boundary,
                    schedule=plan.schedule,
                    schedule_params=clamp_knobs(plan.schedule, plan.schedule_params),
                    head_lr=clamp(plan.head_lr, space.head_lr),
                    backbone_lr_ratio=clamp(plan.backbone_lr_ratio, space.backbone_lr_ratio),
                    layer_decay=clamp(1.0, space.layer_decay),
                    weight_decay=clamp(0.05, space.weight_decay),
                    bn_mode=space.choices("bn_mode")[0],
                    init=plan.init,
                ),
            )
        )
    return out


def _counts(trial: FrozenTrial) -> bool:
    finished = trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
    return finished or (trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs)


def counted_trials(study: optuna.Study) -> int:
    """Trials that use up the budget: finished ones, and failures the objective reported."""
    return sum(_counts(t) for t in study.get_trials(deepcopy=False))


@dataclass
class SearchResult:
    study: optuna.Study
    ran: int
    seconds: float


def open_study(
    cfg: StudyConfig, storage_url: str | None = None, storage: Any = None, **storage_kw: Any
) -> optuna.Study:
    """Create the config's study, or load it if it exists (``load_if_exists``)."""
    url = storage_url or cfg.storage_url
    storage = storage or open_storage(url, **storage_kw)
    try:
        return optuna.create_study(
            storage=storage,
            study_name=cfg.study.name,
            direction=cfg.study.direction,
            sampler=make_sampler(cfg),
            pruner=make_pruner(cfg),
            load_if_exists=True,
        )
    except ValueError as exc:  # e.g. direction differs from the stored study's
        raise StorageError(f"study {cfg.study.name!r} in {mask_url(url)}: {exc}") from None


def prepare_study(
    cfg: StudyConfig, study: optuna.Study, n_blocks: int, progress: pipeline.Progress
) -> None:
    """Store the config with the study and enqueue the baselines, once per study."""
    if CONFIG_ATTR not in study.user_attrs:
        stored = cfg.to_dict()
        if stored["study"].get("storage"):  # user attrs are shown everywhere: no passwords
            stored["study"]["storage"] = mask_url(stored["study"]["storage"])
        study.set_user_attr(CONFIG_ATTR, stored)
        study.set_user_attr(CONFIG_DIR_ATTR, str(cfg.base_dir))
    if cfg.study.baselines and not study.get_trials(deepcopy=False):
        for name, plan in baseline_plans(cfg, n_blocks):
            study.enqueue_trial(plan_params(plan), user_attrs={"baseline": name})
            progress(f"enqueued baseline {name}")


def prepare_search(
    cfg: StudyConfig,
    storage_url: str | None = None,
    progress: pipeline.Progress = pipeline.stderr_progress,
    registry: Registry | None = None,
    **storage_kw: Any,
) -> optuna.Study:
    """Everything before the first trial: storage, weights, checks, study, baselines.

    Run once by ``autofreeze search`` before it starts its workers, so that workers never race
    to pretrain or to enqueue the baselines.
    """
    registry = registry or get_registry()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url or cfg.storage_url
    storage = open_storage(url, **storage_kw)  # fail on a bad URL before any expensive work
    try:
        pipeline.ensure_weights(cfg, progress, registry)
        probe = pipeline.build_backbone(cfg, num_classes=2, registry=registry)
        check_space(cfg.search, registry, probe.n_blocks, cfg.training.epochs)
    except (ConfigError, UnknownNameError, PlanError) as exc:
        where = str(cfg.path) if cfg.path else "config"
        raise type(exc)(f"{where}: {exc}") from None
    study = open_study(cfg, url, storage=storage)
    prepare_study(cfg, study, probe.n_blocks, progress)
    return study


def budget_state(study: optuna.Study) -> tuple[int, int]:
    """(counted, running) trials of the whole study, whichever worker runs them."""
    trials = study.get_trials(deepcopy=False)
    return sum(_counts(t) for t in trials), sum(t.state == TrialState.RUNNING for t in trials)


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
    cfg: StudyConfig,
    study: optuna.Study,
    *,
    n_trials: int | None,
    timeout: float | None,
    progress: pipeline.Progress = pipeline.stderr_progress,
    registry: Registry | None = None,
    poll: float = 2.0,
) -> int:
    """The worker loop: take trials until the study's global budget is spent.

    A trial starts only while ``counted + running < n_trials``, so the budget holds however
    many workers share the study. When the rest of the budget is running elsewhere the worker
    waits: if one of those trials dies (its heartbeat goes stale) it is retried here.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = Objective(cfg, registry, progress, n_trials)
    t0 = time.perf_counter()
    ran = 0
    with _Interrupts(objective) as interrupts:
        while True:
            interrupts.check()
            done, running = budget_state(study)
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
                    catch=(TrialFailed,),
                    callbacks=[lambda _study, trial, out=finished: out.append(trial)],
                )
            except KeyboardInterrupt:
                requeue_interrupted(study, objective.current_trial, progress)
                raise
            ran += 1
            if finished:
                progress(trial_line(study, finished[0], ran, n_trials, t0, timeout))
    return ran


def requeue_interrupted(
    study: optuna.Study, number: int | None, progress: pipeline.Progress
) -> None:
    """Put the trial a Ctrl-C cut short back in the queue, linked to the one it replaces."""
    if number is None:
        return
    trial = study.get_trials(deepcopy=False)[number]
    if trial.state != TrialState.FAIL or "fail_reason" in trial.user_attrs:
        return
    attrs = {k: v for k, v in trial.user_attrs.items() if k == "baseline"}
    study.enqueue_trial(trial.params, user_attrs={**attrs, "retry_of": number})
    progress(f"interrupted trial {number} re-queued; run the same command to resume")


def load_worker_config(study: optuna.Study) -> StudyConfig:
    """The config a study was created with (what `autofreeze worker` runs without a CONFIG)."""
    from pathlib import Path

    from autofreeze.config import parse_config
    from autofreeze.errors import ConfigError

    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        raise ConfigError(
            f"study {study.study_name!r} has no stored autofreeze config; "
            "give the study's CONFIG file"
        )
    folder = Path(study.user_attrs.get(CONFIG_DIR_ATTR, "."))
    base = folder if folder.is_dir() else Path.cwd()
    return parse_config(stored, f"study {study.study_name!r} stored config", base / "study.toml")


def run_search(
    cfg: StudyConfig,
    *,
    storage_url: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    progress: pipeline.Progress = pipeline.stderr_progress,
    registry: Registry | None = None,
    **storage_kw: Any,
) -> SearchResult:
    """Prepare the study and run its trials in this process (one worker)."""
    n_trials = n_trials if n_trials is not None else cfg.study.n_trials
    timeout = timeout if timeout is not None else cfg.study.timeout
    t0 = time.perf_counter()
    study = prepare_search(cfg, storage_url, progress, registry, **storage_kw)
    ran = run_trials(
        cfg, study, n_trials=n_trials, timeout=timeout, progress=progress, registry=registry
    )
    return SearchResult(study, ran, time.perf_counter() - t0)


def trial_line(
    study: optuna.Study,
    last: FrozenTrial,
    ran: int,
    n_trials: int | None,
    t0: float,
    timeout: float | None,
) -> str:
    """One progress line per finished trial: outcome, best so far, budget and time left."""
    value = "-" if last.value is None else f"{last.value:.4f}"
    best = best_trial(study)
    elapsed = time.perf_counter() - t0
    done = counted_trials(study)
    budget = f"{done}/{n_trials} done" if n_trials else f"{done} done"
    left = ""
    if n_trials:
        left = f", ~{max(0.0, elapsed / max(1, ran) * (n_trials - done)):.0f}s left"
    if timeout:
        left += f", timeout in {max(0.0, timeout - elapsed):.0f}s"
    name = last.user_attrs.get("baseline", "searched")
    reason = last.user_attrs.get("fail_reason", "")
    return (
        f"#{last.number} {name} {last.state.name.lower()}{' (' + reason + ')' if reason else ''}"
        f" value={value} best={'-' if best is None else f'{best.value:.4f} (#{best.number})'}"
        f" | {budget}, {elapsed:.0f}s elapsed{left}"
    )


def run_parallel_search(
    cfg: StudyConfig,
    specs: list[Any],
    *,
    config_path: str,
    storage_url: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    worker_args: list[str] | None = None,
    heartbeat: int | None = None,
    progress: pipeline.Progress = pipeline.stderr_progress,
) -> SearchResult:
    """Prepare the study here, then run one ``autofreeze worker`` process per spec."""
    from autofreeze import workers

    n_trials = n_trials if n_trials is not None else cfg.study.n_trials
    url = storage_url or cfg.storage_url
    t0 = time.perf_counter()
    study = prepare_search(cfg, url, progress, heartbeat_interval=heartbeat)
    before = counted_trials(study)
    extra = list(worker_args or [])
    if n_trials is not None:
        extra += ["--n-trials", str(n_trials)]
    if timeout is not None:
        extra += ["--timeout", str(timeout)]
    if heartbeat is not None:
        extra += ["--heartbeat", str(heartbeat)]
    progress(
        f"starting {len(specs)} workers: "
        + ", ".join(f"{s.label} ({s.device}, {s.threads} threads)" for s in specs)
    )
    codes = workers.launch(
        specs,
        lambda spec: workers.worker_command(spec, config_path, cfg.study.name, extra),
        lambda label, line: progress(f"[{label}] {line}"),
        env={"AUTOFREEZE_STORAGE": url},
    )
    failed = [(s.label, c) for s, c in zip(specs, codes, strict=True) if c != 0]
    if failed:
        label, code = failed[0]
        raise WorkerError(
            f"worker {label} exited with code {code} (its last lines are above); "
            "the study is consistent: run the same command to resume"
        )
    return SearchResult(study, counted_trials(study) - before, time.perf_counter() - t0)


class WorkerError(StorageError):
    """A worker process ended with an error."""


def run_worker(
    config: str | None,
    *,
    storage: str | None,
    study_name: str | None,
    device: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    epochs: int | None = None,
    heartbeat: int | None = None,
    connect_attempts: int = 5,
    progress: pipeline.Progress = pipeline.stderr_progress,
) -> int:
    """Join an existing study and run trials until its global budget is spent."""
    from sqlalchemy.exc import OperationalError

    from autofreeze.config import load_config
    from autofreeze.errors import ConfigError
    from autofreeze.storage import HEARTBEAT_INTERVAL, load_existing_study

    cfg = load_config(config) if config else None
    url = storage or (cfg.storage_url if cfg else None)
    name = study_name or (cfg.study.name if cfg else None)
    if not (url and name):
        raise ConfigError("a worker needs a CONFIG, or --storage URL and --study-name NAME")
    study = load_existing_study(
        url,
        name,
        heartbeat_interval=heartbeat or HEARTBEAT_INTERVAL,
        attempts=connect_attempts,
        progress=progress,
    )
    cfg = cfg or load_worker_config(study)
    changes: dict[str, Any] = {"device": device} if device else {}
    if epochs:
        changes["epochs"] = epochs
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update=changes)})
    study.sampler = make_sampler(cfg)
    study.pruner = make_pruner(cfg)
    try:
        return run_trials(
            cfg,
            study,
            n_trials=n_trials or cfg.study.n_trials,
            timeout=timeout or cfg.study.timeout,
            progress=progress,
        )
    except OperationalError as exc:
        raise StorageError(
            f"lost the study database {mask_url(url)} ({str(exc.orig or exc).splitlines()[0]}); "
            "the trial that was running is retried by another worker once its heartbeat "
            "goes stale"
        ) from None
