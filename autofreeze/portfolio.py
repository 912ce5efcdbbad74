"""The shipped portfolio of first plans: a few plans chosen together on the equal-compute
benchmark's tasks (each task counting its best member), stored as data in ``portfolio.json``
beside this module with the command that rebuilt it and the date.

A member is a plan in a form that transfers across backbones and runs:

- the boundary as a share of the backbone's blocks (``depth``: 0 trains every block, 1 the
  head alone);
- the head LR as a multiple of the run's head-LR floor (``head_lr_floors``; see
  :func:`autofreeze.search.space.head_lr_floor`: it follows the run's optimizer steps and the
  head's fan-in), never below :data:`HEAD_LR_LOW`, with an absolute ``head_lr`` where a run
  has no floor (SGD, or ``[search] fit_to_budget = false``);
- schedule knobs counted in epochs as a share of the run's epochs (``epoch_shares``), the
  other knobs as they are (``schedule_params``);
- the backbone LR ratio, layer decay, weight decay, BatchNorm mode and init as they are.

Torch-free, beside :mod:`autofreeze.recipes`: the search enqueues the members as first trials
(:mod:`autofreeze.search.baselines`, moved into the search space) and the benchmark
(``benchmarks/portfolio.py``) writes them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from autofreeze.errors import PlanError
from autofreeze.plan import FreezePlan

DATA = Path(__file__).with_name("portfolio.json")
# the lowest head LR a member takes from a floor: the textbook's lowest recipe LR. The members'
# multiples were measured on runs of 6 to 48 optimizer steps, where they all lie above it; a
# run of thousands of steps has a floor so low that a multiple of it would leave the head
# where the benchmark never looked
HEAD_LR_LOW = 1e-3


@dataclass(frozen=True)
class Member:
    """One plan of the portfolio, relative to the backbone's depth and the run's length."""

    name: str
    depth: float  # the boundary as a share of the blocks: 0 (full fine-tuning) .. 1 (head only)
    head_lr_floors: float  # the head LR as a multiple of the run's head-LR floor
    head_lr: float  # the head LR of a run without a floor (SGD, fit_to_budget = false)
    schedule: str = "static"
    schedule_params: dict[str, Any] = field(default_factory=dict)  # knobs as they are
    epoch_shares: dict[str, float] = field(default_factory=dict)  # knobs counted in epochs
    backbone_lr_ratio: float = 0.1
    layer_decay: float = 1.0
    weight_decay: float = 0.05
    bn_mode: str = "eval"
    init: str = "pretrained"
    origin: str = ""  # where the plan came from (the benchmark task whose search found it)

    def boundary(self, n_blocks: int) -> int:
        """The nearest boundary of a backbone of ``n_blocks`` blocks; only a depth of 1 trains
        the head alone (a plan that trains blocks keeps one trainable block at least)."""
        boundary = int(self.depth * n_blocks + 0.5)
        return boundary if self.depth >= 1 else min(boundary, n_blocks - 1)

    def plan(self, n_blocks: int, epochs: int, floor: float | None) -> FreezePlan:
        """The member as a plan for a backbone of ``n_blocks`` blocks trained ``epochs``
        epochs, whose head-LR floor is ``floor``: the head LR is :attr:`head_lr_floors` times
        it, :data:`HEAD_LR_LOW` at least (None: no floor, the absolute :attr:`head_lr`)."""
        knobs = dict(self.schedule_params)
        knobs.update({k: max(1, int(s * epochs + 0.5)) for k, s in self.epoch_shares.items()})
        return FreezePlan(
            boundary=self.boundary(n_blocks),
            schedule=self.schedule,
            schedule_params=knobs,
            head_lr=self.head_lr
            if floor is None
            else max(HEAD_LR_LOW, self.head_lr_floors * floor),
            backbone_lr_ratio=self.backbone_lr_ratio,
            layer_decay=self.layer_decay,
            weight_decay=self.weight_decay,
            bn_mode=self.bn_mode,  # type: ignore[arg-type]
            init=self.init,  # type: ignore[arg-type]
        )

    @classmethod
    def of_plan(
        cls,
        name: str,
        plan: FreezePlan,
        run: tuple[int, int, float],
        epoch_knobs: frozenset[str] = frozenset(),
        origin: str = "",
    ) -> Member:
        """The inverse of :meth:`plan`: ``plan`` as it ran on ``run`` = (blocks, epochs, head-LR
        floor); the knobs named in ``epoch_knobs`` count epochs."""
        n_blocks, epochs, floor = run
        knobs = plan.schedule_params
        return cls(
            name=name,
            depth=round(plan.boundary / n_blocks, 4),
            head_lr_floors=float(f"{plan.head_lr / floor:.4g}"),
            head_lr=float(f"{plan.head_lr:.4g}"),
            schedule=plan.schedule,
            schedule_params={k: v for k, v in knobs.items() if k not in epoch_knobs},
            epoch_shares={k: round(v / epochs, 4) for k, v in knobs.items() if k in epoch_knobs},
            backbone_lr_ratio=float(f"{plan.backbone_lr_ratio:.4g}"),
            layer_decay=float(f"{plan.layer_decay:.4g}"),
            weight_decay=float(f"{plan.weight_decay:.4g}"),
            bn_mode=plan.bn_mode,
            init=plan.init,
            origin=origin,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Member:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise PlanError(f"portfolio member: unknown field {unknown[0]!r}")
        return cls(**data)


def load(path: Path = DATA) -> dict[str, Any]:
    """The portfolio file: ``members`` (as :class:`Member`) and how it was built (``command``,
    ``date``, ``chosen_on``, ``objective``)."""
    data = json.loads(Path(path).read_text())
    return {**data, "members": [Member.from_dict(m) for m in data["members"]]}


@cache
def members() -> tuple[Member, ...]:
    """The shipped members, in the order they were chosen (each adds the most to the ones
    before it)."""
    return tuple(load()["members"])


def save(path: Path, chosen: list[Member], built: dict[str, Any]) -> None:
    """Write a portfolio file: ``built`` says how (command, date, tasks, objective)."""
    data = {**built, "members": [m.to_dict() for m in chosen]}
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
