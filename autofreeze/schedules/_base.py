from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

from autofreeze.errors import PlanError


class Budget(NamedTuple):
    """What a knob's useful range depends on: the training epochs, the backbone's block count
    and the lowest boundary the search space allows."""

    epochs: int
    n_blocks: int
    boundary: int = 0


@dataclass(frozen=True)
class Knob:
    """One hyperparameter a schedule declares: its type, range and default.

    ``low``/``high`` bound ints and floats (``log`` for a log-uniform search); ``choices`` lists a
    categorical knob's values. ``useful(budget)`` narrows a numeric range to the values that can
    make a difference under a training budget (an LP phase shorter than training, say); the
    search space searches only there and clamps a configured range into it, with a warning.
    """

    name: str
    kind: Literal["int", "float", "categorical"]
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    help: str = ""
    useful: Callable[[Budget], tuple[float, float]] | None = None

    def useful_range(self, budget: Budget) -> tuple[float, float]:
        """``[low, high]`` narrowed to what makes a difference under ``budget``."""
        assert self.low is not None and self.high is not None
        if self.useful is None:
            return self.low, self.high
        lo, hi = self.useful(budget)
        lo, hi = max(self.low, lo), min(self.high, hi)
        return (lo, max(lo, hi)) if lo <= self.high else (self.high, self.high)

    def check(self, value: Any, where: str) -> Any:
        if self.kind == "categorical":
            if value not in self.choices:
                raise PlanError(
                    f"{where}: {self.name} must be one of {list(self.choices)}, not {value!r}"
                )
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PlanError(f"{where}: {self.name} must be a number, not {value!r}")
        if self.kind == "int" and int(value) != value:
            raise PlanError(f"{where}: {self.name} must be an integer, not {value!r}")
        value = int(value) if self.kind == "int" else float(value)
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            raise PlanError(f"{where}: {self.name}={value} is outside [{self.low}, {self.high}]")
        return value


@dataclass(frozen=True)
class Phase:
    """What trains during one epoch: blocks ``first_trainable..`` and the head, LRs scaled."""

    first_trainable: int
    lr_scale: float = 1.0
    label: str = ""


class Schedule:
    """Base class of unfreezing schedules.

    Subclasses set ``name``, ``description`` and ``knobs`` and implement :meth:`phase`. An
    instance is made per trial with the plan's boundary, the block count, the epoch budget and
    the knob values; :meth:`phase` is asked once per epoch, before the epoch trains.

    Two optional hooks, for schedules that need more than one decision per epoch (both off by
    default, and free when off):

    - :meth:`block_lr_scales` is asked at every optimizer step with the run's progress; a block
      it names trains at its planned LR x the phase's ``lr_scale`` x the warmup ramp x the
      returned scale, *instead of* the trainer's cosine decay (blocks it leaves out, and the
      head, keep the cosine). A scale of 0 means no update; the block leaves the backward pass
      and the optimizer only when :meth:`phase` moves ``first_trainable`` past it, at the next
      epoch boundary.
    - with ``wants_grad_norms = True``, the trainer sums each trainable block's squared gradient
      norm over the epoch's steps on the device (read once per epoch, no host sync per step)
      and calls :meth:`observe` after the epoch's last step, before the next :meth:`phase`.

    - with ``freezes_forward = True`` the schedule promises ``first_trainable`` never moves
      back toward the input: blocks it freezes stay frozen, so the trainer caches their output
      from then on (where the model can be split there). Only such schedules may set it.

    Whatever they return, the trainer clamps ``first_trainable`` into ``boundary..n_blocks``:
    no schedule trains below the plan's boundary.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    knobs: ClassVar[tuple[Knob, ...]] = ()
    wants_grad_norms: ClassVar[bool] = False
    freezes_forward: ClassVar[bool] = False

    def __init__(self, *, boundary: int, n_blocks: int, epochs: int, **knobs: Any) -> None:
        if not 0 <= boundary <= n_blocks:
            raise PlanError(
                f"boundary {boundary} is outside 0..{n_blocks} (the backbone has {n_blocks} blocks)"
            )
        self.boundary = boundary
        self.n_blocks = n_blocks
        self.epochs = epochs
        self.params = self.resolve_knobs(knobs)

    @classmethod
    def resolve_knobs(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults filled in, unknown names and out-of-range values rejected."""
        known = {k.name: k for k in cls.knobs}
        for key in given:
            if key not in known:
                allowed = ", ".join(known) or "none"
                raise PlanError(f"schedule {cls.name!r} has no knob {key!r} (knobs: {allowed})")
        where = f"schedule {cls.name!r}"
        return {k.name: k.check(given.get(k.name, k.default), where) for k in cls.knobs}

    def phase(self, epoch: int) -> Phase:
        raise NotImplementedError

    def block_lr_scales(self, progress: float) -> dict[int, float] | None:
        """LR multipliers of blocks (by index) at ``progress``, the fraction of the run's
        optimizer steps done before this step (0 at the first step, below 1 at the last).
        ``None``: no block is scaled, every group follows the trainer's cosine (the default)."""
        return None

    def observe(self, epoch: int, grad_norms: dict[int, float]) -> None:
        """With ``wants_grad_norms``: each block trainable in ``epoch`` (0-based) and its
        gradient norm over that epoch, ``sqrt(sum over steps of ||grad||^2)`` (before any
        clipping). Called once per epoch, after its last step; ignored by default."""

    def clamp(self, first_trainable: int) -> int:
        """Never below the boundary, never past head-only."""
        return max(self.boundary, min(self.n_blocks, first_trainable))
