"""The freeze plan: one trial's full choice, its allowed values and limits, defined once.

Torch-free, so the config, the search space and the records can all use it: ``freezing.py``
applies a plan to a model, ``space.py`` suggests one, ``config.py`` checks a search space
against the same limits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from autofreeze.errors import PlanError

BnMode = Literal["eval", "train", "frozen"]
Init = Literal["pretrained", "scratch"]
BN_MODES: tuple[str, ...] = get_args(BnMode)
Augment = Literal["none", "flip", "crop", "trivial"]  # see autofreeze.data.augment
AUGMENTS: tuple[str, ...] = get_args(Augment)
INITS: tuple[str, ...] = get_args(Init)


@dataclass(frozen=True)
class Interval:
    """Where a plan's number may lie: ``low < x`` (or ``<=``) and ``x <= high``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


# the numbers of a plan and where each may lie (the search space's ranges must lie there too)
LIMITS: dict[str, Interval] = {
    "head_lr": Interval(0.0, low_open=True),
    "backbone_lr_ratio": Interval(0.0, low_open=True),
    "layer_decay": Interval(0.0, 1.0, low_open=True),
    "weight_decay": Interval(0.0),
}


@dataclass(frozen=True)
class FreezePlan:
    """One trial's full choice of how to fine-tune.

    Attributes:
        boundary: blocks ``0..boundary-1`` (counted from the input) never train. ``0`` is full
            fine-tuning, ``n_blocks`` trains the head only (linear probe).
        schedule: name of the unfreezing schedule; ``schedule_params`` are its knobs.
        head_lr: learning rate of the head.
        backbone_lr_ratio: the block nearest the head trains at ``head_lr * backbone_lr_ratio``.
        layer_decay: each block further from the head multiplies its LR by this (LLRD).
        weight_decay: weight decay (decoupled with AdamW; not applied to biases, norms, tokens).
        bn_mode: BatchNorm in frozen blocks: ``eval`` (running stats used and kept), ``train``
            (batch stats, running stats updated) or ``frozen`` (batch stats, running stats kept).
        init: ``pretrained`` (the backbone's weights) or ``scratch`` (random init).
        augment: the augmentation policy of the training images (``[search] augment``); None
            leaves it to ``[training] augment``.
    """

    boundary: int
    schedule: str = "static"
    schedule_params: dict[str, Any] = field(default_factory=dict)
    head_lr: float = 1e-3
    backbone_lr_ratio: float = 0.1
    layer_decay: float = 1.0
    weight_decay: float = 0.05
    bn_mode: BnMode = "eval"
    init: Init = "pretrained"
    augment: Augment | None = None

    def check(self, n_blocks: int) -> None:
        """Reject values no backbone could accept, naming the field."""
        if not isinstance(self.boundary, int) or not 0 <= self.boundary <= n_blocks:
            raise PlanError(
                f"boundary must be an integer in 0..{n_blocks} for this backbone, not "
                f"{self.boundary!r}"
            )
        for name, interval in LIMITS.items():
            value = getattr(self, name)
            if value not in interval:
                raise PlanError(f"{name} must be {interval}, not {value}")
        if self.bn_mode not in BN_MODES:
            raise PlanError(f"bn_mode must be one of {list(BN_MODES)}, not {self.bn_mode!r}")
        if self.init not in INITS:
            raise PlanError(f"init must be one of {list(INITS)}, not {self.init!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_params(self) -> dict[str, Any]:
        """Flat trial parameters (knobs as ``schedule.knob``), what the search space suggests."""
        params = {k: v for k, v in self.to_dict().items() if k != "schedule_params"}
        if params["augment"] is None:  # not searched: not a parameter of the trial
            del params["augment"]
        params.update({f"{self.schedule}.{k}": v for k, v in self.schedule_params.items()})
        return params

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> FreezePlan:
        """The inverse of :meth:`to_params`: ``schedule.knob`` keys become the knobs."""
        params = dict(params)
        knobs = {k.split(".", 1)[1]: params.pop(k) for k in list(params) if "." in k}
        if "boundary" not in params:
            raise PlanError("a plan needs a boundary (e.g. boundary=3)")
        return cls.from_dict({**params, "schedule_params": knobs})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FreezePlan:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise PlanError(
                f"unknown plan field {unknown[0]!r} (fields: {', '.join(sorted(known))})"
            )
        return cls(**data)
