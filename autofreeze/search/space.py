"""The search space: every entry of ``[search]`` parsed once into a dimension, and one method
that turns an Optuna trial into a freeze plan.

A dimension is a fixed value, a numeric range or a list of choices; each knows how to suggest
itself, whether it contains a value, and the nearest value it allows (what a baseline recipe is
clamped to). :class:`SearchSpace` reads like docs/search_space.md: the boundary, the schedule
and its own knobs (conditional on the schedule), the learning rates per group, BatchNorm
handling and the initialisation. Fixed entries are not suggested; they are still in the plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import optuna

from autofreeze.config.search import FloatRange, SearchSection
from autofreeze.errors import ConfigError
from autofreeze.plan import FreezePlan
from autofreeze.plugins.registry import Registry
from autofreeze.schedules import Budget, Knob


class Dimension(Protocol):
    def suggest(self, trial: optuna.Trial, name: str) -> Any: ...

    def __contains__(self, value: Any) -> bool: ...

    def clamp(self, value: Any) -> Any: ...


@dataclass(frozen=True)
class Fixed:
    """One value: never suggested, always in the plan."""

    value: Any

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return self.value

    def __contains__(self, value: Any) -> bool:
        return value == self.value

    def clamp(self, value: Any) -> Any:
        return self.value


@dataclass(frozen=True)
class Range:
    """Numbers from ``low`` to ``high`` (integers with ``integer``; log-uniform with ``log``)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)

    def __contains__(self, value: Any) -> bool:
        return self.low <= value <= self.high

    def clamp(self, value: Any) -> Any:
        value = min(max(value, self.low), self.high)
        return int(round(value)) if self.integer else float(value)


@dataclass(frozen=True)
class Choices:
    """Categorical values; the first one is the fallback of :meth:`clamp`."""

    options: tuple[Any, ...]

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.options))

    def __contains__(self, value: Any) -> bool:
        return value in self.options

    def clamp(self, value: Any) -> Any:
        return value if value in self.options else self.options[0]


def numbers(low: float, high: float, *, log: bool = False, integer: bool = False) -> Dimension:
    return Fixed(low) if low == high else Range(low, high, log, integer)


def choices(values: list[Any] | tuple[Any, ...] | Any) -> Dimension:
    values = tuple(values) if isinstance(values, list | tuple) else (values,)
    return Fixed(values[0]) if len(values) == 1 else Choices(values)


def _float(r: FloatRange) -> Dimension:
    return numbers(r.low, r.high, log=r.log)


def knob_dimension(
    knob: Knob,
    configured: Any,
    where: str,
    budget: Budget | None = None,
    notes: list[str] | None = None,
) -> Dimension:
    """A schedule knob as the config gives it (fixed, narrowed or absent), checked once.

    With a ``budget``, a numeric knob is searched only where it can make a difference
    (``Knob.useful``); a configured value or range beyond that is clamped into it, and
    ``notes`` gets a line saying so.
    """
    if knob.kind == "categorical":
        values = configured if isinstance(configured, list) else [configured]
        if configured is None:
            values = list(knob.choices)
        if not values:
            raise ConfigError(f"{where}: list at least one choice")
        return choices([knob.check(v, where) for v in values])
    integer = knob.kind == "int"
    lo, hi = knob.useful_range(budget) if budget else (knob.low, knob.high)
    if configured is None:
        return numbers(lo, hi, log=knob.log, integer=integer)
    if isinstance(configured, list):
        if len(configured) != 2 or configured[0] > configured[1]:
            raise ConfigError(f"{where}: a range is [low, high] with low <= high, not {configured}")
        given = [knob.check(v, where) for v in configured]
    else:
        given = [knob.check(configured, where)]
    kept = [min(max(v, lo), hi) for v in given]
    if kept != given and notes is not None and budget is not None:
        shown = kept[0] if len(set(kept)) == 1 else kept
        useful = f"{lo:g}" if lo == hi else f"{lo:g}..{hi:g}"
        notes.append(
            f"{where} {knob.name} = {configured}: with {budget.epochs} epochs and "
            f"{budget.n_blocks} blocks only {useful} can make a difference; searching {shown}"
        )
    return numbers(kept[0], kept[-1], log=knob.log, integer=integer)


def head_lr_floor(steps: int, fan_in: int) -> float:
    """The smallest head LR that can make a difference in ``steps`` AdamW steps.

    AdamW's update is normalised: a weight moves by about the LR per step, so over a run with
    warm-up and cosine decay it travels at most about ``lr * steps / 2``. A fresh head starts
    at PyTorch's default scale ``1 / sqrt(fan_in)``; below ``1 / (sqrt(fan_in) * steps)`` it
    cannot travel half of that and stays near its random start. In the unpruned studies of
    ``benchmarks/search_quality.py --keep DIR`` every trial below it was among the worst of
    its task.
    """
    return 1.0 / (math.sqrt(max(1, fan_in)) * max(1, steps))


def lr_dimension(
    r: FloatRange, floor: float | None, where: str, notes: list[str], why: str
) -> Dimension:
    """A log-uniform LR range, its low end raised to ``floor`` (a fixed value is kept)."""
    if floor is None or r.low == r.high or r.low >= floor:
        return _float(r)
    low = min(floor, r.high)
    notes.append(f"{where} = [{r.low:g}, {r.high:g}]: {why}; searching [{low:.2g}, {r.high:g}]")
    return numbers(low, r.high, log=True)


def boundary_dimension(boundary: Any, n_blocks: int) -> Dimension:
    if boundary == "all":
        return numbers(0, n_blocks, integer=True)
    low, high = (boundary, boundary) if isinstance(boundary, int) else boundary
    if high > n_blocks:
        raise ConfigError(
            f"[search] boundary: {high} is beyond the backbone, which has {n_blocks} blocks "
            f"(allowed 0..{n_blocks}; see `autofreeze inspect`)"
        )
    return numbers(low, high, integer=True)


@dataclass(frozen=True)
class SearchSpace:
    """The search space of one study on one backbone, every entry parsed and checked."""

    boundary: Dimension
    schedule: Dimension
    knobs: dict[str, dict[str, Dimension]]  # schedule -> knob -> dimension
    head_lr: Dimension
    backbone_lr_ratio: Dimension
    layer_decay: Dimension
    weight_decay: Dimension
    bn_mode: Dimension
    init: Dimension
    augment: Dimension = Fixed(None)  # the policy, where [search] augment is given
    notes: tuple[str, ...] = ()  # what was clamped to fit the budget, for the user

    @classmethod
    def from_config(
        cls,
        search: SearchSection,
        registry: Registry,
        n_blocks: int,
        epochs: int | None = None,
        head_lr_floor: float | None = None,
    ) -> SearchSpace:
        """Check ``[search]`` against the loaded schedules and the backbone's block count; with
        ``epochs``, schedule knobs are searched only where they can make a difference, and
        with ``head_lr_floor`` (see :func:`head_lr_floor`) so is the head LR."""
        for sched in search.knobs:
            if sched not in search.schedules:
                raise ConfigError(
                    f"[search.knobs.{sched}]: schedule {sched!r} is not in [search] schedules "
                    f"{search.schedules}"
                )
        boundary = boundary_dimension(search.boundary, n_blocks)
        lowest = int(getattr(boundary, "low", getattr(boundary, "value", 0)))
        budget = Budget(epochs, n_blocks, lowest) if epochs else None
        notes: list[str] = []
        knobs = {}
        for sched in search.schedules:
            declared = registry.get_schedule(sched).knobs
            given = search.knobs.get(sched, {})
            unknown = [key for key in given if key not in {k.name for k in declared}]
            if unknown:
                raise ConfigError(
                    f"[search.knobs.{sched}] {unknown[0]}: unknown knob "
                    f"(knobs: {', '.join(k.name for k in declared)})"
                )
            where = f"[search.knobs.{sched}]"
            knobs[sched] = {
                k.name: knob_dimension(k, given.get(k.name), where, budget, notes) for k in declared
            }
        return cls(
            boundary=boundary,
            schedule=choices(search.schedules),
            knobs=knobs,
            head_lr=lr_dimension(
                search.head_lr,
                head_lr_floor,
                "[search] head_lr",
                notes,
                "below the lower end the head cannot move in this run's optimizer steps",
            ),
            backbone_lr_ratio=_float(search.backbone_lr_ratio),
            layer_decay=_float(search.layer_decay),
            weight_decay=_float(search.weight_decay),
            bn_mode=choices(search.bn_mode),
            init=choices(search.init),
            augment=Fixed(None) if search.augment is None else choices(search.augment),
            notes=tuple(notes),
        )

    def suggest(self, trial: optuna.Trial) -> FreezePlan:
        """Ask ``trial`` for one freeze plan (parameter names as in ``FreezePlan.to_params``)."""
        schedule = self.schedule.suggest(trial, "schedule")
        return FreezePlan(
            boundary=self.boundary.suggest(trial, "boundary"),
            schedule=schedule,
            schedule_params={
                name: dim.suggest(trial, f"{schedule}.{name}")
                for name, dim in self.knobs[schedule].items()
            },
            head_lr=self.head_lr.suggest(trial, "head_lr"),
            backbone_lr_ratio=self.backbone_lr_ratio.suggest(trial, "backbone_lr_ratio"),
            layer_decay=self.layer_decay.suggest(trial, "layer_decay"),
            weight_decay=self.weight_decay.suggest(trial, "weight_decay"),
            bn_mode=self.bn_mode.suggest(trial, "bn_mode"),
            init=self.init.suggest(trial, "init"),
            augment=self.augment.suggest(trial, "augment"),
        )

    def clamp(self, plan: FreezePlan) -> FreezePlan | None:
        """The plan moved into the space, or ``None`` if its structure is outside it.

        The structure (boundary, schedule, init) is what a recipe is; it is kept or the plan
        is rejected. Numbers and the BatchNorm mode move to the nearest allowed value.
        """
        structure = (
            (self.boundary, plan.boundary),
            (self.schedule, plan.schedule),
            (self.init, plan.init),
        )
        if not all(value in dim for dim, value in structure):
            return None
        knobs = {}
        for name, dim in self.knobs[plan.schedule].items():
            if name in plan.schedule_params:
                knobs[name] = dim.clamp(plan.schedule_params[name])
            elif isinstance(dim, Fixed):  # a knob the recipe leaves open, fixed by the config
                knobs[name] = dim.value
        return FreezePlan(
            boundary=plan.boundary,
            schedule=plan.schedule,
            schedule_params=knobs,
            head_lr=self.head_lr.clamp(plan.head_lr),
            backbone_lr_ratio=self.backbone_lr_ratio.clamp(plan.backbone_lr_ratio),
            layer_decay=self.layer_decay.clamp(plan.layer_decay),
            weight_decay=self.weight_decay.clamp(plan.weight_decay),
            bn_mode=self.bn_mode.clamp(plan.bn_mode),
            init=plan.init,
            augment=self.augment.clamp(plan.augment),  # a recipe takes the first policy listed
        )
