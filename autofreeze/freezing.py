"""Apply a freeze plan to a backbone: ``requires_grad``, BatchNorm/dropout modes, param groups.

Semantics (DESIGN.md section 5): blocks below the trainable range get ``requires_grad=False``
and ``grad=None``; modules inside frozen blocks run in eval mode (dropout and drop-path off),
except BatchNorm, which follows the plan's ``bn_mode``; every optimizer param group carries its
own learning rate (``lr = head_lr * scale``) in ``planned_lr``, never an implicit ``lr_scale``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from torch import nn

from autofreeze.backbones import Backbone
from autofreeze.errors import PlanError

log = logging.getLogger("autofreeze.freezing")

BN_MODES = ("eval", "train", "frozen")
INITS = ("pretrained", "scratch")


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
    """

    boundary: int
    schedule: str = "static"
    schedule_params: dict[str, Any] = field(default_factory=dict)
    head_lr: float = 1e-3
    backbone_lr_ratio: float = 0.1
    layer_decay: float = 1.0
    weight_decay: float = 0.05
    bn_mode: Literal["eval", "train", "frozen"] = "eval"
    init: Literal["pretrained", "scratch"] = "pretrained"

    def check(self, n_blocks: int) -> None:
        """Reject values no backbone could accept, naming the field."""
        if not isinstance(self.boundary, int) or not 0 <= self.boundary <= n_blocks:
            raise PlanError(
                f"boundary must be an integer in 0..{n_blocks} for this backbone, not "
                f"{self.boundary!r}"
            )
        if self.head_lr <= 0:
            raise PlanError(f"head_lr must be > 0, not {self.head_lr}")
        if self.backbone_lr_ratio <= 0:
            raise PlanError(f"backbone_lr_ratio must be > 0, not {self.backbone_lr_ratio}")
        if not 0 < self.layer_decay <= 1:
            raise PlanError(f"layer_decay must be in (0, 1], not {self.layer_decay}")
        if self.weight_decay < 0:
            raise PlanError(f"weight_decay must be >= 0, not {self.weight_decay}")
        if self.bn_mode not in BN_MODES:
            raise PlanError(f"bn_mode must be one of {list(BN_MODES)}, not {self.bn_mode!r}")
        if self.init not in INITS:
            raise PlanError(f"init must be one of {list(INITS)}, not {self.init!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FreezePlan:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise PlanError(
                f"unknown plan field {unknown[0]!r} (fields: {', '.join(sorted(known))})"
            )
        return cls(**data)


def block_lr_scale(plan: FreezePlan, block_index: int, n_blocks: int) -> float:
    """LR of block ``i`` relative to the head: ratio x decay^(distance from the head)."""
    distance = n_blocks - 1 - block_index
    return plan.backbone_lr_ratio * plan.layer_decay**distance


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


class Freezer:
    """Keeps a backbone in line with a plan while the trainable range moves over epochs."""

    def __init__(self, backbone: Backbone, plan: FreezePlan) -> None:
        plan.check(backbone.n_blocks)
        self.backbone = backbone
        self.plan = plan
        self.first_trainable = backbone.n_blocks  # set properly by set_first_trainable
        self._params = dict(backbone.model.named_parameters())
        self._module_block = backbone.module_blocks()
        self._modules = dict(backbone.model.named_modules())
        self._bn_momentum = {
            name: m.momentum for name, m in self._modules.items() if _is_batchnorm(m)
        }
        no_wd = getattr(backbone.model, "no_weight_decay", None)
        self._no_decay_names = set(no_wd()) if callable(no_wd) else set()

    # -- requires_grad ------------------------------------------------------------------------
    def set_first_trainable(self, first: int) -> None:
        """Blocks ``first..`` and the head train; everything below is frozen (grad dropped)."""
        if not self.plan.boundary <= first <= self.backbone.n_blocks:
            raise PlanError(
                f"first trainable block {first} is below the boundary {self.plan.boundary}"
            )
        self.first_trainable = first
        for block in self.backbone.blocks:
            trainable = block.index >= first
            for name in block.param_names:
                p = self._params[name]
                p.requires_grad_(trainable)
                if not trainable:
                    p.grad = None
        for name in self.backbone.head_param_names:
            self._params[name].requires_grad_(True)

    def is_frozen_block(self, index: int | None) -> bool:
        return index is not None and index < self.first_trainable

    # -- module modes -------------------------------------------------------------------------
    def train_mode(self) -> None:
        """``model.train()``, then frozen blocks back to eval (BatchNorm per ``bn_mode``).

        Called at the start of every training epoch: a plain ``model.train()`` would silently
        switch frozen BatchNorm layers back to updating their running statistics.
        """
        self.backbone.model.train()
        for name, module in self._modules.items():
            frozen = self.is_frozen_block(self._module_block.get(name))
            if _is_batchnorm(module):
                module.momentum = self._bn_momentum[name]
                module.training = not (frozen and self.plan.bn_mode == "eval")
                if frozen and self.plan.bn_mode == "frozen":
                    module.momentum = 0.0  # batch statistics, running buffers unchanged
            elif frozen:
                # one module at a time (not .eval(), which recurses into BatchNorm children):
                # dropout, drop-path and anything stochastic in the frozen prefix is off
                module.training = False

    # -- optimizer groups -----------------------------------------------------------------------
    def planned_lr(self, block_index: int | None) -> float:
        """The LR the plan gives a block (``None`` = the head)."""
        if block_index is None:
            return self.plan.head_lr
        return self.plan.head_lr * block_lr_scale(self.plan, block_index, self.backbone.n_blocks)

    def _groups_for(self, label: str, names: tuple[str, ...], lr: float) -> list[dict[str, Any]]:
        decay, no_decay = [], []
        for n in names:
            p = self._params[n]
            if p.ndim <= 1 or n in self._no_decay_names or n.endswith(".bias"):
                no_decay.append(p)
            else:
                decay.append(p)
        groups = []
        for params, wd, suffix in ((decay, self.plan.weight_decay, ""), (no_decay, 0.0, ":no_wd")):
            if params:
                groups.append(
                    {
                        "params": params,
                        "lr": lr,
                        "planned_lr": lr,
                        "weight_decay": wd,
                        "name": label + suffix,
                    }
                )
        return groups

    def param_groups(self, first: int | None = None) -> list[dict[str, Any]]:
        """Param groups of the head and of blocks ``first..`` with their planned LRs."""
        first = self.first_trainable if first is None else first
        groups = self._groups_for("head", self.backbone.head_param_names, self.planned_lr(None))
        for block in self.backbone.blocks[first:]:
            groups += self.block_groups(block.index)
        return groups

    def block_groups(self, index: int) -> list[dict[str, Any]]:
        block = self.backbone.blocks[index]
        return self._groups_for(f"block{index}", block.param_names, self.planned_lr(index))
