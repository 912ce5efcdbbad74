"""Helpers for plugin authors: tiny data and the backbone contract, as one call each.

A backbone plugin's test suite can be as short as::

    from autofreeze.testing import check_backbone
    from autofreeze.registry import Registry

    def test_my_backbone():
        check_backbone(Registry().create_backbone("my_net", num_classes=3))
"""

from __future__ import annotations

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


def first_calls(backbone: Backbone, x: torch.Tensor) -> tuple[dict[int, int], torch.Tensor]:
    """One forward pass: the position of each block's first module call (``-1`` = the head),
    and the logits.

    A module is hooked when all of its own (non-recursive) parameters have one owner.
    """
    owner = {n: b.index for b in backbone.blocks for n in b.param_names}
    owner.update({n: -1 for n in backbone.head_param_names})
    calls: list[int] = []
    handles = []
    for mod_name, module in backbone.model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        owners = {owner[prefix + n] for n, _ in module.named_parameters(recurse=False)}
        if len(owners) == 1:
            (o,) = owners
            handles.append(module.register_forward_pre_hook(lambda *_, o=o: calls.append(o)))
    backbone.model.eval()
    try:
        with torch.no_grad():
            logits = backbone.model(x)
    finally:
        for h in handles:
            h.remove()
    first: dict[int, int] = {}
    for i, o in enumerate(calls):
        first.setdefault(o, i)
    return first, logits


def block_execution_order(backbone: Backbone, x: torch.Tensor) -> list[int]:
    """Owners (block indices, ``-1`` = head) in the order a forward pass first runs them."""
    first, _ = first_calls(backbone, x)
    return sorted(first, key=first.__getitem__)


def check_backbone(backbone: Backbone, x: torch.Tensor | None = None) -> None:
    """Assert the backbone contract; raises ``AssertionError`` naming what is wrong.

    Checks: blocks partition the parameters with the head apart (counts add up); a forward pass
    gives ``(batch, num_classes)`` logits; blocks run in index order from the input and the head
    after the last block; freezing
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
    first, logits = first_calls(backbone, x)
    assert tuple(logits.shape) == (x.shape[0], backbone.num_classes), (
        f"logits {tuple(logits.shape)}, expected {(x.shape[0], backbone.num_classes)}"
    )
    order = [o for o in sorted(first, key=first.__getitem__) if o >= 0]
    assert order == sorted(order), f"blocks run in the order {order}, not from the input"
    if -1 in first and order:
        assert first[-1] > first[order[-1]], "the head runs before the last block"
    params = dict(model.named_parameters())
    for k in sorted({0, backbone.n_blocks // 2, backbone.n_blocks}):
        freezer = Freezer(backbone, FreezePlan(boundary=k))
        freezer.set_first_trainable(k)
        frozen = {n for b in backbone.blocks[:k] for n in b.param_names}
        wrong = [n for n, p in params.items() if p.requires_grad == (n in frozen)]
        assert not wrong, f"boundary {k}: {wrong[0]!r} has the wrong requires_grad"
    for p in model.parameters():
        p.requires_grad_(True)
