"""The search space: every entry of ``[search]`` parsed once into a dimension, and one method
that turns an Optuna trial into a freeze plan.

A dimension is a fixed value, a numeric range or a list of choices; each knows how to suggest
itself, whether it contains a value, and the nearest value it allows (what a baseline recipe is
clamped to). :class:`SearchSpace` reads like docs/search_space.md: the boundary, the schedule
and its own knobs (conditional on the schedule), the learning rates per group, BatchNorm
handling and the initialisation. Fixed entries are not suggested; they are still in the plan.

The space is conditional on the boundary (Optuna's define-by-run): the boundary is suggested
first, then only what can change training at that boundary. A parameter that cannot (the
backbone LR ratio when no block trains, say) is not suggested and takes its value in
:data:`DEFAULT` moved into the configured range; with every block frozen the plan is static and
pretrained (:meth:`SearchSpace.structure`), so no plan contradicts itself.

The space also widens with the evidence. The first ``[search] core_trials`` sampled trials
(default 10) vary only the core: the boundary and the two learning rates (:data:`CORE`), the
space a user's own loop searches, and whatever ``[search]`` names explicitly (:data:`NAMED`:
what a user asks for by name is searched at once). The others (the schedule and its knobs, the
init, layer decay, weight decay, the BatchNorm mode, the augmentation, at their defaults) keep
:data:`DEFAULT`'s values until then; the recipes, queued before them, try the other schedules
and the scratch init. A short budget then searches three dimensions instead of nine: in the
equal-time benchmark a search of about ten sampled trials spread over every dimension spent
most of them on corners (a random init on a similar task, a layer decay of 0.5) that its three
core dimensions never visit (docs/benchmarks.md, "Search quality").
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

# what a plan says where a parameter cannot change its training: the plan's own defaults
# (static, pretrained, eval, no layer decay), numbers moved into the configured ranges
DEFAULT = FreezePlan(boundary=0)
# what the first sampled trials vary (see the module's text), with every dimension that
# [search] names (the key -> the parameter): what a user asks for by name is searched at once
CORE = ("boundary", "head_lr", "backbone_lr_ratio")
NAMED = {
    "schedules": "schedule",
    "knobs": "schedule",
    "init": "init",
    "layer_decay": "layer_decay",
    "weight_decay": "weight_decay",
    "bn_mode": "bn_mode",
    "augment": "augment",
}


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


# a range whose low end the floor raised keeps at least this factor between its ends
LR_SPAN = 10.0


def lr_dimension(
    r: FloatRange, floor: float | None, where: str, notes: list[str], why: str
) -> Dimension:
    """A log-uniform LR range, its low end raised to ``floor`` (a fixed value is kept).

    Where the raised range spans less than :data:`LR_SPAN` its high end moves up to keep that
    span: a run so short that its floor nears the configured top wants larger steps still. On
    the benchmark's few-label task (6 optimizer steps, floor 0.0074) the best plans of every
    method sat at the default top of 0.03 (``benchmarks/search_quality.py``).
    """
    if floor is None or r.low == r.high or r.low >= floor:
        return _float(r)
    low = min(floor, r.high)
    high = max(r.high, low * LR_SPAN) if floor < r.high else r.high
    widened = f" and its top raised to keep a {LR_SPAN:g}x span" if high > r.high else ""
    notes.append(
        f"{where} = [{r.low:g}, {r.high:g}]: {why}{widened}; searching [{low:.2g}, {high:.2g}]"
    )
    return numbers(low, high, log=True)


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


def below_head_only(boundary: Dimension, n_blocks: int, notes: list[str]) -> Dimension:
    """``boundary`` without ``n_blocks``, for a space whose only init is ``scratch``: a head
    trained on random frozen blocks learns nothing the backbone could transfer."""
    high = getattr(boundary, "high", getattr(boundary, "value", 0))
    low = getattr(boundary, "low", high)
    if high < n_blocks:
        return boundary
    if low >= n_blocks:
        raise ConfigError(
            f'[search] boundary = {n_blocks} freezes every block and init = "scratch" makes them '
            f'random: the head would train on random features; allow init = "pretrained" or a '
            f"boundary below {n_blocks}"
        )
    notes.append(
        f'[search] init = "scratch": boundary {n_blocks} (every block frozen) would train the '
        f"head on random features; searching boundary {low}..{n_blocks - 1}"
    )
    return numbers(low, n_blocks - 1, integer=True)


@dataclass(frozen=True)
class SearchSpace:
    """The search space of one study on one backbone, every entry parsed and checked."""

    n_blocks: int  # boundary n_blocks freezes every block: the head trains alone
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
    lr_floor: float | None = None  # the head LR floor of this run's steps (:func:`head_lr_floor`)
    core_trials: int = 0  # sampled trials asked only the core (``[search] core_trials``)
    core: frozenset[str] = frozenset(CORE)  # what those ask: CORE and what [search] names

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
        notes: list[str] = []
        boundary = boundary_dimension(search.boundary, n_blocks)
        init = choices(search.init)
        if DEFAULT.init not in init:
            boundary = below_head_only(boundary, n_blocks, notes)
        lowest = int(getattr(boundary, "low", getattr(boundary, "value", 0)))
        budget = Budget(epochs, n_blocks, lowest) if epochs else None
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
            n_blocks=n_blocks,
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
            init=init,
            augment=Fixed(None) if search.augment is None else choices(search.augment),
            notes=tuple(notes),
            lr_floor=head_lr_floor,
            core_trials=search.core_trials,
            core=frozenset(CORE) | {NAMED[f] for f in search.model_fields_set if f in NAMED},
        )

    def structure(self, boundary: int, wide: bool = True) -> tuple[Dimension, Dimension]:
        """The schedule and init dimensions at ``boundary`` (``wide``: past the first sampled
        trials, see the module's text; narrow, both take :data:`DEFAULT`'s values).

        With every block frozen there is nothing to unfreeze: whatever the schedule, the head
        trains alone, so the plan is the static one (an LP-FT here is a linear probe with an LR
        drop, gradual unfreezing or FreezeOut a static probe). And a head on random frozen
        blocks learns nothing the backbone could transfer, so the init is pretrained.
        """
        if boundary == self.n_blocks:
            return Fixed(DEFAULT.schedule), Fixed(DEFAULT.init)
        schedule, init = self.schedule, self.init
        if not (wide or "schedule" in self.core):
            schedule = Fixed(schedule.clamp(DEFAULT.schedule))
        if not (wide or "init" in self.core):
            init = Fixed(init.clamp(DEFAULT.init))
        return schedule, init

    def knobs_of(self, schedule: str) -> dict[str, Dimension]:
        """The knobs of ``schedule`` (none for the static plan of a head-only boundary, also
        where ``static`` is not among the configured schedules)."""
        return self.knobs.get(schedule, {})

    def numbers(self, boundary: int, schedule: str, wide: bool = True) -> dict[str, Dimension]:
        """The LRs, weight decay, BatchNorm mode and augmentation at ``boundary`` under
        ``schedule``; one that cannot change training there is fixed at :data:`DEFAULT`'s value
        moved into its dimension, and so is every one outside :attr:`core` unless ``wide``.

        No block trains at ``n_blocks``: the backbone LR ratio has nothing to scale. With one
        trainable block, layer decay has no second block to decay toward. At boundary 0 under
        the static schedule no block is ever frozen, so the BatchNorm mode of frozen blocks has
        nothing to apply to (elsewhere it matters, also with every block frozen: ``train`` and
        ``frozen`` normalise with batch statistics, ``eval`` with the running ones).
        """
        dims = {
            "head_lr": self.head_lr,
            "backbone_lr_ratio": self.backbone_lr_ratio,
            "layer_decay": self.layer_decay,
            "weight_decay": self.weight_decay,
            "bn_mode": self.bn_mode,
            "augment": self.augment,
        }
        trained = self.n_blocks - boundary  # blocks that ever train
        idle = {
            "backbone_lr_ratio": trained == 0,
            "layer_decay": trained <= 1,
            "bn_mode": boundary == 0 and schedule == DEFAULT.schedule,
        }
        return {
            name: Fixed(dim.clamp(getattr(DEFAULT, name)))
            if idle.get(name) or not (wide or name in self.core)
            else dim
            for name, dim in dims.items()
        }

    def suggest(self, trial: optuna.Trial, wide: bool = True) -> FreezePlan:
        """Ask ``trial`` for one freeze plan (parameter names as in ``FreezePlan.to_params``):
        the boundary first, then only what can change training at that boundary; not ``wide``,
        only :attr:`core` (see :meth:`searches_wide`)."""
        boundary = self.boundary.suggest(trial, "boundary")
        schedules, inits = self.structure(boundary, wide)
        schedule = schedules.suggest(trial, "schedule")
        return FreezePlan(
            boundary=boundary,
            schedule=schedule,
            schedule_params={
                name: dim.suggest(trial, f"{schedule}.{name}")
                for name, dim in self.knobs_of(schedule).items()
            },
            init=inits.suggest(trial, "init"),
            **{
                name: dim.suggest(trial, name)
                for name, dim in self.numbers(boundary, schedule, wide).items()
            },
        )

    def searches_wide(self, queued: dict[str, Any] | None, sampled: int) -> bool:
        """Whether a trial is asked the whole space or only :attr:`core`.

        ``queued``: the parameters it was enqueued with (a recipe, the probe's plan, a retry),
        or None for a trial the sampler proposes. A queued trial is asked as it was queued: a
        recipe names its schedule and init (the whole space), a retry of a narrow trial only
        the core. A sampled one is asked the whole space once ``sampled`` trials (the
        sampler's, finished) reach :attr:`core_trials`.
        """
        if queued is not None:
            # a schedule's knob (``gradual.every``) is asked with the schedule
            asked = {"schedule" if "." in name else name for name in queued}
            return not asked <= self.core
        return sampled >= self.core_trials

    def clamp(self, plan: FreezePlan) -> FreezePlan | None:
        """The plan moved into the space, or ``None`` if its structure is outside it.

        The structure (boundary, schedule, init) is what a recipe is; it is kept or the plan
        is rejected (a head-only plan must be static and pretrained). Numbers and the BatchNorm
        mode move to the nearest allowed value, or to the value :meth:`suggest` fixes where
        they cannot change training: enqueued, the plan runs exactly as returned.
        """
        if plan.boundary not in self.boundary:
            return None
        schedules, inits = self.structure(plan.boundary)
        if plan.schedule not in schedules or plan.init not in inits:
            return None
        knobs = {}
        for name, dim in self.knobs_of(plan.schedule).items():
            if name in plan.schedule_params:
                knobs[name] = dim.clamp(plan.schedule_params[name])
            elif isinstance(dim, Fixed):  # a knob the recipe leaves open, fixed by the config
                knobs[name] = dim.value
        return FreezePlan(
            boundary=plan.boundary,
            schedule=plan.schedule,
            schedule_params=knobs,
            init=plan.init,
            **{  # a recipe takes the first augmentation policy listed
                name: dim.clamp(getattr(plan, name))
                for name, dim in self.numbers(plan.boundary, plan.schedule).items()
            },
        )
