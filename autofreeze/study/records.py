"""What a study records, in one place: every user-attribute name and its read/write helpers.

Trials carry their plan, cost and history as user attributes (machine-readable, shown by
optuna-dashboard); studies carry the config they run. Nothing else in autofreeze spells these
names; it calls the helpers below.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from autofreeze.core.backbones import Backbone
    from autofreeze.core.train import FitResult
    from autofreeze.plan import FreezePlan

# -- study attributes --------------------------------------------------------------------------
CONFIG = "autofreeze_config"  # the resolved study config every worker runs (storage masked)
CONFIG_DIR = "autofreeze_config_dir"  # the folder its relative paths are resolved against
PROBE = "autofreeze_probe"  # the transferability probe's curve, quadrant and boundary
CHOICE = "autofreeze_choice"  # the plan named best after re-evaluation, with its mean and CI
RERUNS = "autofreeze_reruns"  # the re-evaluation's runs: plan's trial, seed, value, seconds

# -- trial attributes --------------------------------------------------------------------------
BASELINE = "baseline"  # the textbook recipe an enqueued trial runs
PRIOR = "prior"  # a plan the probe suggested, enqueued after the baselines
RETRY_OF = "retry_of"  # the trial a re-queued one replaces
REEVALUATION_OF = "reevaluation_of"  # the trial whose plan a re-evaluation re-runs
SEED = "seed"  # the training seed of a re-evaluation (others use [training] seed)
FAIL_REASON = "fail_reason"  # why the objective failed a trial (such a failure counts)
OVER_BUDGET = "over_budget"  # a trial started after other workers had taken the last of the budget
PLAN = "plan"
FROZEN_BLOCKS = "frozen_blocks"
BLOCKS = "blocks"  # every block's name, from the input (the rows of the freeze map)
FROZEN_PARAM_FRACTION = "frozen_param_fraction"
SCHEDULE = "schedule"
FEATURE_CACHE = "feature_cache"  # whether the trial trained on cached frozen work
CACHE = "cache"  # which cache: pooled (head only) or prefix, at which block, from where
AUGMENT = "augment"  # the augmentation in force: policy, online or cached views, mixing
NOTES_SAID = "notes_said"  # study: notes said once per study (e.g. a boundary run uncached)
PRUNED_AT_EPOCH = "pruned_at_epoch"
PHASE_EVENTS = "phase_events"
HISTORY = "history"
SECONDS = "seconds"  # the trial's wall time: building, caching and training
VALIDATION_SECONDS = "validation_seconds"  # of the training loop's time, evaluating val
EXAMPLES_PER_SECOND = "train_examples_per_second"
TRAINABLE_PARAMS = "trainable_params"  # the most parameters trained at once
PEAK_MEMORY_MB = "peak_memory_mb"
COST = (SECONDS, EXAMPLES_PER_SECOND, TRAINABLE_PARAMS, PEAK_MEMORY_MB)  # a trial's cost attrs
SEARCHED = "searched"  # the name of a trial the sampler chose (not a baseline)


# -- reading -------------------------------------------------------------------------------------
def baseline(trial: FrozenTrial | optuna.Trial) -> str | None:
    return trial.user_attrs.get(BASELINE)


def reevaluation_of(trial: FrozenTrial | optuna.Trial) -> int | None:
    return trial.user_attrs.get(REEVALUATION_OF)


def name(trial: FrozenTrial) -> str:
    """The recipe a trial ran, ``searched``, or ``re-eval #N`` for a re-run of trial N."""
    again = reevaluation_of(trial)
    if again is not None:
        return f"re-eval #{again}"
    return baseline(trial) or trial.user_attrs.get(PRIOR) or SEARCHED


def initial_design(trials: list[FrozenTrial]) -> int:
    """How many trials the study was seeded with: the baselines and the probe's prior (their
    retries and re-evaluations are not new points of the design)."""
    return sum(
        1
        for t in trials
        if (baseline(t) or t.user_attrs.get(PRIOR))
        and not is_retry(t)
        and reevaluation_of(t) is None
    )


def retry_of(trial: FrozenTrial) -> int | None:
    """The number of the trial this one re-runs (the first of a chain), or None."""
    return trial.user_attrs.get(RETRY_OF)


def is_retry(trial: FrozenTrial) -> bool:
    """Whether the trial was queued to replace one cut short (it carries ``retry_of``)."""
    return RETRY_OF in trial.user_attrs


def seed(trial: FrozenTrial | optuna.Trial, default: int | None = None) -> int | None:
    """The training seed a re-evaluation runs with; ``default`` for any other trial."""
    return trial.user_attrs.get(SEED, default)


def blocks(trial: FrozenTrial) -> list[str] | None:
    """Every block's name, input first; None for a trial that never built its backbone (or of
    an older version, which stored the frozen blocks only)."""
    return trial.user_attrs.get(BLOCKS)


def n_blocks(trial: FrozenTrial) -> int | None:
    """How many blocks the trial's backbone has; None when it recorded none."""
    return len(blocks(trial) or []) or None


def frozen_blocks(trial: FrozenTrial) -> list[str] | None:
    """The names of the blocks below the plan's boundary."""
    return trial.user_attrs.get(FROZEN_BLOCKS)


def frozen_fraction(trial: FrozenTrial) -> float | None:
    """The share of the backbone's parameters below the plan's boundary."""
    return trial.user_attrs.get(FROZEN_PARAM_FRACTION)


def history(trial: FrozenTrial) -> list[dict[str, Any]]:
    """Each epoch run (see :func:`write_history`); empty before the first one. An epoch that
    was not validated has ``val_loss`` and ``val_accuracy`` None (the last one always has them).
    """
    return trial.user_attrs.get(HISTORY) or []


def phase_events(trial: FrozenTrial) -> list[str]:
    """The schedule's phase changes, in words, in the order they happened."""
    return trial.user_attrs.get(PHASE_EVENTS) or []


def pruned_at_epoch(trial: FrozenTrial) -> int | None:
    """The epoch at which the pruner stopped the trial, if it did."""
    return trial.user_attrs.get(PRUNED_AT_EPOCH)


def seconds(trial: FrozenTrial, default: float | None = None) -> float | None:
    """The trial's wall time (building, caching and training); ``default`` if not recorded."""
    return trial.user_attrs.get(SECONDS, default)


def cost_value(trial: FrozenTrial, name: str) -> Any:
    """One of the trial's cost attrs (a name of :data:`COST`), None if not recorded."""
    return trial.user_attrs.get(name)


def cost(trial: FrozenTrial) -> dict[str, Any]:
    """Every cost attr of :data:`COST` by name, None for those not recorded."""
    return {k: cost_value(trial, k) for k in COST}


def cache(trial: FrozenTrial) -> dict[str, Any] | None:
    """The cached frozen work the trial used (see :func:`write_cache`, :func:`write_uncached`)."""
    return trial.user_attrs.get(CACHE)


def cache_kind(trial: FrozenTrial) -> str | None:
    """``pooled``, ``prefix`` or ``none`` (could not be cached); None: no cache recorded."""
    return (cache(trial) or {}).get("kind")


def metric_value(trial: FrozenTrial) -> float | None:
    """The trial's metric: its value, or its first value in a multi-objective study."""
    return trial.values[0] if trial.values else None


def maximizes(study: optuna.Study) -> bool:
    """Whether the study's metric (its first objective) is maximised."""
    return study.directions[0] == optuna.study.StudyDirection.MAXIMIZE


def fail_reason(trial: FrozenTrial) -> str:
    return trial.user_attrs.get(FAIL_REASON, "")


def plan(trial: FrozenTrial) -> dict[str, Any]:
    return trial.user_attrs.get(PLAN, {})


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial used up budget: it finished, or the objective failed it with a reason.

    A trial that failed without a reason was cut short (Ctrl-C, a dead worker) and is retried.
    Re-evaluations run after the budget and are not counted in it.
    """
    if reevaluation_of(trial) is not None:
        return False
    finished = trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
    return finished or (trial.state == TrialState.FAIL and FAIL_REASON in trial.user_attrs)


def over_budget(trial: FrozenTrial | optuna.Trial) -> bool:
    return bool(trial.user_attrs.get(OVER_BUDGET))


def claimed_ahead(trials: Iterable[FrozenTrial], number: int) -> int:
    """How much of the budget is spent or taken ahead of the running trial ``number``: trials
    that count, and running ones that started before it (by start time, then number).

    Workers check the budget before they start a trial, but two of them can both see one trial
    left and both start one (measured: 101 trials for a budget of 100 with 8 workers). Every
    worker orders the running trials the same way from the stored start times, so of the
    trials that raced for the last place exactly one finds nothing ahead of it. On SQLite the
    start times are stamped inside serialised transactions; across machines they come from
    each machine's clock, which only decides which of two racers goes on.
    """
    trials = list(trials)
    mine = next(t for t in trials if t.number == number)
    key = (mine.datetime_start, number)
    ahead = sum(
        1
        for t in trials
        if t.state == TrialState.RUNNING
        and t.number != number
        and reevaluation_of(t) is None
        and t.datetime_start is not None
        and (t.datetime_start, t.number) < key
    )
    return ahead + sum(counts(t) for t in trials)


def budget(trials: Iterable[FrozenTrial]) -> tuple[int, int]:
    """(counted, running) trials of a whole study, whichever worker runs them."""
    counted = running = 0
    for t in trials:
        counted += counts(t)
        running += t.state == TrialState.RUNNING
    return counted, running


def reevaluation_attrs(number: int, seed: int) -> dict[str, Any]:
    """The user attrs of a trial that re-runs the plan of trial ``number`` with ``seed``."""
    return {REEVALUATION_OF: number, SEED: seed}


def retry_attrs(trial: FrozenTrial) -> dict[str, Any]:
    """The user attrs of a trial that re-runs ``trial``: its recipe name and the link back."""
    attrs: dict[str, Any] = {RETRY_OF: trial.number}
    for key in (BASELINE, PRIOR):
        if trial.user_attrs.get(key):
            attrs[key] = trial.user_attrs[key]
    return attrs


def params_of(trial: FrozenTrial) -> dict[str, Any]:
    """The parameters a trial ran, or was enqueued with if it was cut short before asking."""
    return dict(trial.params or trial.system_attrs.get("fixed_params") or {})


# -- reading a study ------------------------------------------------------------------------------
def has_config(study: optuna.Study) -> bool:
    """Whether the study's search has stored its config yet."""
    return CONFIG in study.user_attrs


def config(study: optuna.Study) -> dict[str, Any] | None:
    """The resolved config the study runs, as stored (a dict; storage masked), or None."""
    return study.user_attrs.get(CONFIG)


def config_dir(study: optuna.Study) -> str:
    """The folder the stored config's relative paths are resolved against (``.`` if none)."""
    return study.user_attrs.get(CONFIG_DIR, ".")


def metric_of(study: optuna.Study) -> str | None:
    """The metric the study's stored config names, if it stored one."""
    return ((config(study) or {}).get("study") or {}).get("metric")


def choice(study: optuna.Study) -> dict[str, Any] | None:
    """The plan named best after re-evaluation (trial, mean, 95 % half-width, runs,
    candidates), or None before (or without) a re-evaluation."""
    return study.user_attrs.get(CHOICE)


def reruns(study: optuna.Study) -> list[dict[str, Any]]:
    """The re-evaluation's runs so far, each ``{"of": trial, "seed", "value", "seconds"}``.

    They are not trials: Optuna's own views (``best_trial``, the history, parameter importance)
    see the search's trials only, and a re-run's value is a second opinion of a plan, not a
    new point of the search.
    """
    return list(study.user_attrs.get(RERUNS, []))


def add_rerun(study: optuna.Study, of: int, seed: int, value: float, seconds: float) -> None:
    """Record one finished re-run (the list grows by one; an interrupted re-run is not kept)."""
    runs = reruns(study)
    runs.append({"of": of, "seed": seed, "value": value, "seconds": round(seconds, 3)})
    study.set_user_attr(RERUNS, runs)


def probe(study: optuna.Study) -> dict[str, Any] | None:
    """The transferability probe's result (curve, quadrant, boundary), or None."""
    return study.user_attrs.get(PROBE)


# -- writing -------------------------------------------------------------------------------------
def write_plan(trial: optuna.Trial, plan: FreezePlan, backbone: Backbone) -> None:
    frozen = backbone.blocks[: plan.boundary]
    total = sum(p.numel() for p in backbone.model.parameters())
    trial.set_user_attr(PLAN, plan.to_dict())
    trial.set_user_attr(FROZEN_BLOCKS, [b.name for b in frozen])
    trial.set_user_attr(BLOCKS, [b.name for b in backbone.blocks])
    trial.set_user_attr(
        FROZEN_PARAM_FRACTION,
        round(sum(backbone.block_param_count(b) for b in frozen) / total, 6),
    )
    trial.set_user_attr(SCHEDULE, plan.schedule)


def write_result(trial: optuna.Trial, result: FitResult) -> None:
    """Phase changes, cost (but the wall time: :func:`write_seconds`) and the learning curves."""
    trial.set_user_attr(PHASE_EVENTS, result.events)
    for key, value in result.cost.items():
        if key != SECONDS:
            trial.set_user_attr(key, round(value, 3))
    write_history(trial, result.history)


def write_history(trial: optuna.Trial, history: list[Any]) -> None:
    """The learning curves and freeze state of each epoch run (also of a pruned trial); the
    val_* of an epoch not validated are null (JSON null, never NaN: a browser reads it)."""

    def val(v: float | None) -> float | None:
        return None if v is None else round(v, 5)

    trial.set_user_attr(
        HISTORY,
        [
            {
                "epoch": e.epoch,
                "phase": e.phase,
                "val_accuracy": val(e.val_accuracy),
                "val_loss": val(e.val_loss),
                "train_loss": round(e.train_loss, 5),
                "trainable_from": e.first_trainable,  # blocks below it were frozen
                "cached": e.cached,  # blocks below it ran from a cache
                "lrs": {k: float(f"{v:.3g}") for k, v in e.lrs.items()},
            }
            for e in history
        ],
    )


def write_cache(trial: optuna.Trial, kind: str, boundary: int, source: str, views: int = 0) -> None:
    """The trial trained on cached frozen work: ``pooled`` features (head only) or the
    ``prefix`` output of blocks ``0..boundary-1``, read from ``source`` (memory, disk or
    computed by this trial), of ``views`` augmented views per training image (0: unaugmented)."""
    entry = {"kind": kind, "boundary": boundary, "source": source or "memory"}
    trial.set_user_attr(CACHE, {**entry, "views": views} if views else entry)


def write_augment(trial: optuna.Trial, policy: str, views: int, mixing: bool) -> None:
    """Which augmentation is in force: the policy and how it is applied (``online``: fresh
    every batch, no frozen work cached; ``cached views``: ``views`` fixed views per image, the
    caches hold them; ``none``), and whether mixup/cutmix mix the batches."""
    applied = "none" if policy == "none" else "cached views" if views and not mixing else "online"
    entry = {"policy": policy, "applied": applied, "mix": mixing}
    trial.set_user_attr(AUGMENT, {**entry, "views": views} if applied == "cached views" else entry)


def write_uncached(trial: optuna.Trial, boundary: int, reason: str) -> None:
    """The plan's frozen prefix could have been cached but the backbone cannot be split there."""
    trial.set_user_attr(CACHE, {"kind": "none", "boundary": boundary, "reason": reason})


def say_once(study: optuna.Study | None, note: str) -> bool:
    """Whether ``note`` is new to the study, which then records it: a note every worker may
    meet is said by the first. Without a study (a lone trial) every note is new."""
    if study is None:
        return True
    said = study.user_attrs.get(NOTES_SAID, [])
    if note in said:
        return False
    study.set_user_attr(NOTES_SAID, [*said, note])
    return True


def write_seconds(trial: optuna.Trial, seconds: float) -> None:
    trial.set_user_attr(SECONDS, round(seconds, 3))


def mark_retry_of(trial: FrozenTrial, first: int) -> None:
    """Link a copy of a stale trial, before Optuna re-queues it, to the trial it replaces."""
    trial.user_attrs[RETRY_OF] = first


def write_failure(trial: optuna.Trial, reason: str) -> None:
    """Mark the trial failed by the objective: it counts towards the budget, not retried."""
    trial.set_user_attr(FAIL_REASON, reason)
