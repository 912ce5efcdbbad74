"""Apply a freeze plan to a backbone: ``requires_grad``, BatchNorm/dropout modes, param groups.

Semantics (DESIGN.md section 5): blocks below the trainable range get ``requires_grad=False``
and ``grad=None``; modules inside frozen blocks run in eval mode (dropout and drop-path off),
except BatchNorm, which follows the plan's ``bn_mode``; every optimizer param group carries its
own learning rate (``lr = head_lr * scale``) in ``planned_lr``, never an implicit ``lr_scale``,
and its block index in ``block`` (``None`` for the head). :class:`GradNorms` measures the
trainable blocks' gradient norms for schedules that ask for them.
The plan itself (:class:`~autofreeze.plan.FreezePlan`) is defined in :mod:`autofreeze.plan`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from autofreeze.core.backbones import Backbone
from autofreeze.errors import PlanError
from autofreeze.plan import FreezePlan

log = logging.getLogger("autofreeze.core.freezing")


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

    def _groups_for(
        self, label: str, names: tuple[str, ...], lr: float, block: int | None = None
    ) -> list[dict[str, Any]]:
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
                        "block": block,  # the block index, None for the head
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

    @staticmethod
    def write_lrs(
        groups: list[dict[str, Any]],
        factor: float,
        blocks: dict[int, float] | None = None,
        block_factor: float = 1.0,
    ) -> None:
        """One step's LRs: ``planned_lr * factor`` in every group, except in a block named in
        ``blocks`` (``Schedule.block_lr_scales``): ``planned_lr * block_factor * blocks[i]``."""
        for group in groups:
            own = None if blocks is None else blocks.get(group.get("block"))
            group["lr"] = group["planned_lr"] * (factor if own is None else block_factor * own)

    def grad_norms(self) -> GradNorms:
        """A fresh per-epoch gradient-norm accumulator over the blocks trainable now."""
        return GradNorms(self)

    def block_groups(self, index: int) -> list[dict[str, Any]]:
        block = self.backbone.blocks[index]
        return self._groups_for(f"block{index}", block.param_names, self.planned_lr(index), index)


class GradNorms:
    """Each trainable block's squared gradient norm, summed over the steps of one epoch.

    :meth:`add` after every backward pass stays on the device (no host sync per step);
    :meth:`read` syncs once and gives ``{block index: sqrt(sum of squares)}``.
    """

    def __init__(self, freezer: Freezer) -> None:
        backbone = freezer.backbone
        self.blocks = [
            (b.index, backbone.parameters_of(b.param_names))
            for b in backbone.blocks[freezer.first_trainable :]
        ]
        self.total: torch.Tensor | None = None

    def add(self) -> None:
        squares = []
        for _, params in self.blocks:
            grads = [p.grad.detach() for p in params if p.grad is not None]
            device = params[0].device
            squares.append(
                torch.nn.utils.get_total_norm(grads).float().to(device).square()
                if grads
                else torch.zeros((), device=device)
            )
        if squares:
            step = torch.stack(squares)
            self.total = step if self.total is None else self.total + step

    def read(self) -> dict[int, float]:
        values = [0.0] * len(self.blocks) if self.total is None else self.total.sqrt().tolist()
        return {index: value for (index, _), value in zip(self.blocks, values, strict=True)}


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup then cosine decay to zero, as a multiplier of each group's planned LR."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(cfg: Any, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """The ``[training]`` optimizer (``cfg``: a TrainConfig) over the freezer's groups, with
    torch's fused kernels where it has them (:func:`fusable`)."""
    fused = fusable(groups)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=groups[0]["lr"], momentum=cfg.momentum, nesterov=True, fused=fused
        )
    return torch.optim.AdamW(groups, lr=groups[0]["lr"], fused=fused)


def fusable(groups: list[dict[str, Any]]) -> bool | None:
    """Whether the optimizer can step with torch's fused kernel: every parameter a float on the
    CPU or a CUDA device (torch's own default is a loop over the tensors on the CPU, and on CUDA
    ``foreach``). The update is the same AdamW or SGD; only how it runs changes: one kernel per
    step instead of a Python loop over every tensor (docs/benchmarks.md, "Trainer overhead").
    Elsewhere (MPS, XLA, ...) None: torch's default."""
    params = [p for g in groups for p in g["params"]]
    ok = bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params
    )
    return True if ok else None


def follow(
    optimizer: torch.optim.Optimizer, freezer: Freezer, before: int, phase_optimizer: str, cfg: Any
) -> tuple[torch.optim.Optimizer, str]:
    """After ``freezer`` moved the first trainable block from ``before``: the optimizer over
    the blocks that train now (reset, or with newly unfrozen blocks added with fresh state and
    newly frozen ones dropped with theirs) and what happened, in words."""
    first = freezer.first_trainable
    if phase_optimizer == "reset":
        return make_optimizer(
            cfg, freezer.param_groups()
        ), f"blocks {first}.. train, optimizer state reset"
    if first < before:
        for index in range(first, before):
            for group in freezer.block_groups(index):
                optimizer.add_param_group(group)
        return optimizer, (
            f"unfroze blocks {first}..{before - 1}; they join the optimizer with fresh state, "
            "existing groups keep theirs"
        )
    keep = {id(p) for g in freezer.param_groups() for p in g["params"]}
    kept = []
    for group in optimizer.param_groups:
        if any(id(p) in keep for p in group["params"]):
            kept.append(group)
        else:
            for p in group["params"]:
                optimizer.state.pop(p, None)
    # rebuilt by identity: list.remove() would compare the groups' tensors with ==
    optimizer.param_groups[:] = kept
    return optimizer, f"froze blocks {before}..{first - 1}; their state dropped"
