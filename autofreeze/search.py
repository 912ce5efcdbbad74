"""Create or resume a study on its storage, enqueue the textbook baselines, run trials."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autofreeze import pipeline
from autofreeze.config import StudyConfig
from autofreeze.errors import StorageError
from autofreeze.freezing import FreezePlan
from autofreeze.objective import Objective, TrialFailed
from autofreeze.registry import Registry, get_registry
from autofreeze.space import check_space, plan_params
from autofreeze.storage import mask_url, open_storage

CONFIG_ATTR = "autofreeze_config"


def make_sampler(cfg: StudyConfig) -> optuna.samplers.BaseSampler:
    seed = cfg.study.seed
    name = cfg.study.sampler
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=5, constant_liar=True
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
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if cfg.study.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cfg.training.epochs)
    return optuna.pruners.NopPruner()


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
                    schedule_params=plan.schedule_params,
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


def counted_trials(study: optuna.Study) -> int:
    """Trials that use up the budget: finished ones, and failures the objective reported."""
    n = 0
    for t in study.get_trials(deepcopy=False):
        if (
            t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or t.state == TrialState.FAIL
            and "fail_reason" in t.user_attrs
        ):
            n += 1
    return n


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
        study.set_user_attr(CONFIG_ATTR, cfg.to_dict())
    if cfg.study.baselines and not study.get_trials(deepcopy=False):
        for name, plan in baseline_plans(cfg, n_blocks):
            study.enqueue_trial(plan_params(plan), user_attrs={"baseline": name})
            progress(f"enqueued baseline {name}")


def run_search(
    cfg: StudyConfig,
    *,
    storage_url: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    progress: pipeline.Progress = pipeline.stderr_progress,
    registry: Registry | None = None,
) -> SearchResult:
    """Run trials until the study holds ``n_trials`` counted trials or ``timeout`` passes."""
    registry = registry or get_registry()
    n_trials = n_trials if n_trials is not None else cfg.study.n_trials
    timeout = timeout if timeout is not None else cfg.study.timeout
    url = storage_url or cfg.storage_url
    storage = open_storage(url)  # fail on a bad URL before any expensive work
    pipeline.ensure_weights(cfg, progress, registry)
    objective = Objective(cfg, registry, progress, n_trials)
    check_space(cfg.search, registry, objective.n_blocks, cfg.training.epochs)
    study = open_study(cfg, url, storage=storage)
    prepare_study(cfg, study, objective.n_blocks, progress)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    ran = 0
    while True:
        done = counted_trials(study)
        elapsed = time.perf_counter() - t0
        if n_trials is not None and done >= n_trials:
            break
        if timeout is not None and elapsed >= timeout:
            progress(f"timeout of {timeout:.0f}s reached")
            break
        finished: list[FrozenTrial] = []
        study.optimize(
            objective,
            n_trials=1,
            catch=(TrialFailed,),
            callbacks=[lambda _study, trial, out=finished: out.append(trial)],
        )
        ran += 1
        if finished:
            progress(trial_line(study, finished[0], done + 1, n_trials, t0, timeout))
    return SearchResult(study, ran, time.perf_counter() - t0)


def trial_line(
    study: optuna.Study,
    last: FrozenTrial,
    index: int,
    n_trials: int | None,
    t0: float,
    timeout: float | None,
) -> str:
    value = "-" if last.value is None else f"{last.value:.4f}"
    try:
        best = f"{study.best_value:.4f}"
    except ValueError:
        best = "-"
    elapsed = time.perf_counter() - t0
    left = ""
    if n_trials:
        per = elapsed / max(1, index)
        left = f", ~{max(0.0, per * (n_trials - index)):.0f}s left"
    if timeout:
        left += f", timeout in {max(0.0, timeout - elapsed):.0f}s"
    name = last.user_attrs.get("baseline", "")
    return (
        f"trial {index}/{n_trials or '?'} #{last.number} {name} {last.state.name.lower()} "
        f"value={value} best={best} ({elapsed:.0f}s elapsed{left})"
    )
