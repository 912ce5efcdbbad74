"""Helpers for plugin authors: tiny data and the backbone contract, as one call each.

A backbone plugin's test suite can be as short as::

    from autofreeze.testing import check_backbone
    from autofreeze.registry import Registry

    def test_my_backbone():
        check_backbone(Registry().create_backbone("my_net", num_classes=3))
"""

from __future__ import annotations

from typing import Any

import torch

from autofreeze.backbones import Backbone
from autofreeze.data import TensorSplit
from autofreeze.freezing import FreezePlan, Freezer


def tiny_split(n: int = 12, num_classes: int = 3, size: int = 32, seed: int = 0) -> TensorSplit:
    """Random but learnable images: the class shifts the mean of the first channel."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = torch.randn(n, 3, size, size, generator=g) * 0.5
    x[:, 0] += y.float().view(-1, 1, 1) - 1.0
    return TensorSplit(x, y)


def block_execution_order(backbone: Backbone, x: torch.Tensor) -> list[int]:
    """Block indices in the order a forward pass first runs them (via forward pre-hooks)."""
    owners = backbone.module_blocks()
    first_call: dict[int, int] = {}
    calls = 0
    handles = []

    def hook(block: int) -> Any:
        def record(*_: Any) -> None:
            nonlocal calls
            calls += 1
            first_call.setdefault(block, calls)

        return record

    for name, module in backbone.model.named_modules():
        block = owners.get(name)
        if block is not None and next(module.parameters(recurse=False), None) is not None:
            handles.append(module.register_forward_pre_hook(hook(block)))
    try:
        with torch.no_grad():
            backbone.model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return sorted(first_call, key=first_call.__getitem__)


def check_backbone(backbone: Backbone, x: torch.Tensor | None = None) -> None:
    """Assert the backbone contract; raises ``AssertionError`` naming what is wrong.

    Checks: blocks partition the parameters with the head apart (counts add up); a forward pass
    gives ``(batch, num_classes)`` logits; blocks run in index order from the input; freezing
    ``k`` blocks freezes exactly their parameters, for ``k`` at 0, the middle and the end.
    """
    backbone.check()
    model = backbone.model
    total = sum(p.numel() for p in model.parameters())
    counted = sum(backbone.block_param_count(b) for b in backbone.blocks)
    assert counted + backbone.head_param_count() == total, "block + head params != model params"
    if x is None:
        c, h, w = backbone.data_config.get("input_size", (3, 224, 224))
        x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    logits = model.eval()(x)
    assert tuple(logits.shape) == (x.shape[0], backbone.num_classes), (
        f"logits {tuple(logits.shape)}, expected {(x.shape[0], backbone.num_classes)}"
    )
    order = block_execution_order(backbone, x)
    assert order == sorted(order), f"blocks run in the order {order}, not from the input"
    params = dict(model.named_parameters())
    for k in sorted({0, backbone.n_blocks // 2, backbone.n_blocks}):
        freezer = Freezer(backbone, FreezePlan(boundary=k))
        freezer.set_first_trainable(k)
        frozen = {n for b in backbone.blocks[:k] for n in b.param_names}
        wrong = [n for n, p in params.items() if p.requires_grad == (n in frozen)]
        assert not wrong, f"boundary {k}: {wrong[0]!r} has the wrong requires_grad"
    for p in model.parameters():
        p.requires_grad_(True)
