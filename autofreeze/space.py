"""The search space: one function turns an Optuna trial into a freeze plan.

It reads like docs/search_space.md: the boundary, the schedule and its own knobs (conditional on
the schedule), the learning rates per group, BatchNorm handling and the initialisation. Entries
fixed in the config are not suggested; they are still part of the plan.
"""

from __future__ import annotations

from typing import Any

import optuna

from autofreeze.config import FloatRange, SearchSection
from autofreeze.errors import ConfigError
from autofreeze.freezing import FreezePlan
from autofreeze.registry import Registry
from autofreeze.schedules import Knob


def _float(trial: optuna.Trial, name: str, r: FloatRange) -> float:
    if r.low == r.high:
        return r.low
    return trial.suggest_float(name, r.low, r.high, log=r.log)


def _categorical(trial: optuna.Trial, name: str, choices: list[Any]) -> Any:
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, choices)


def _knob(trial: optuna.Trial, name: str, knob: Knob, configured: Any) -> Any:
    """A schedule knob: the config may fix it, narrow its range, or leave the declared one."""
    if configured is not None and not isinstance(configured, list):
        return configured
    if knob.kind == "categorical":
        return _categorical(trial, name, list(configured or knob.choices))
    low, high = configured if configured is not None else (knob.low, knob.high)
    if low == high:
        return low
    if knob.kind == "int":
        return trial.suggest_int(name, int(low), int(high), log=knob.log)
    return trial.suggest_float(name, float(low), float(high), log=knob.log)


def check_space(space: SearchSection, registry: Registry, n_blocks: int, epochs: int) -> None:
    """Validate what the search space names against the loaded plugins and the backbone."""
    space.boundary_range(n_blocks)
    for name in space.schedules:
        registry.get_schedule(name)
    for sched, knobs in space.knobs.items():
        if sched not in space.schedules:
            raise ConfigError(
                f"[search.knobs.{sched}]: schedule {sched!r} is not in [search] schedules "
                f"{space.schedules}"
            )
        declared = {k.name: k for k in registry.get_schedule(sched).knobs}
        for key, value in knobs.items():
            if key not in declared:
                raise ConfigError(
                    f"[search.knobs.{sched}] {key}: unknown knob (knobs: {', '.join(declared)})"
                )
            knob = declared[key]
            where = f"[search.knobs.{sched}] {key}"
            if knob.kind != "categorical" and isinstance(value, list):
                if len(value) != 2 or value[0] > value[1]:
                    raise ConfigError(
                        f"{where}: a range is [low, high] with low <= high, not {value}"
                    )
            elif knob.kind == "categorical" and isinstance(value, list) and not value:
                raise ConfigError(f"{where}: list at least one choice")
            for v in value if isinstance(value, list) else [value]:
                knob.check(v, f"[search.knobs.{sched}]")


def suggest_plan(
    trial: optuna.Trial, space: SearchSection, registry: Registry, n_blocks: int
) -> FreezePlan:
    """Ask ``trial`` for one freeze plan within ``space``."""
    low, high = space.boundary_range(n_blocks)
    boundary = low if low == high else trial.suggest_int("boundary", low, high)
    schedule = _categorical(trial, "schedule", space.schedules)
    configured = space.knobs.get(schedule, {})
    knobs = {
        k.name: _knob(trial, f"{schedule}.{k.name}", k, configured.get(k.name))
        for k in registry.get_schedule(schedule).knobs
    }
    return FreezePlan(
        boundary=boundary,
        schedule=schedule,
        schedule_params=knobs,
        head_lr=_float(trial, "head_lr", space.head_lr),
        backbone_lr_ratio=_float(trial, "backbone_lr_ratio", space.backbone_lr_ratio),
        layer_decay=_float(trial, "layer_decay", space.layer_decay),
        weight_decay=_float(trial, "weight_decay", space.weight_decay),
        bn_mode=_categorical(trial, "bn_mode", space.choices("bn_mode")),
        init=_categorical(trial, "init", space.choices("init")),
    )


def plan_params(plan: FreezePlan) -> dict[str, Any]:
    """The trial parameters that reproduce ``plan`` (for enqueueing baselines)."""
    params: dict[str, Any] = {
        "boundary": plan.boundary,
        "schedule": plan.schedule,
        "head_lr": plan.head_lr,
        "backbone_lr_ratio": plan.backbone_lr_ratio,
        "layer_decay": plan.layer_decay,
        "weight_decay": plan.weight_decay,
        "bn_mode": plan.bn_mode,
        "init": plan.init,
    }
    params.update({f"{plan.schedule}.{k}": v for k, v in plan.schedule_params.items()})
    return params


def plan_from_params(
    params: dict[str, Any], space: SearchSection, registry: Registry, n_blocks: int
) -> FreezePlan:
    """Rebuild a plan from a finished trial's params (fixed entries come from the space)."""
    return suggest_plan(optuna.trial.FixedTrial(params), space, registry, n_blocks)
