"""The plugin author's helpers check the contract for real and catch a broken cut."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autofreeze.backbones import Backbone
from autofreeze.registry import Registry
from autofreeze.testing import block_execution_order, check_backbone, tiny_split


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def cut(prefixes) -> Backbone:
    return Backbone.from_prefixes(
        "small", small_net(), prefixes, ["6"], data_config={"input_size": (3, 8, 8)}, num_classes=3
    )


def test_check_backbone_passes_a_real_timm_model():
    torch.manual_seed(0)
    bb = Registry().create_backbone("resnet10t", num_classes=3)
    check_backbone(bb, tiny_split(2).x)


def test_check_backbone_catches_blocks_listed_out_of_order():
    good = cut([["0"], ["2"]])
    check_backbone(good)
    assert block_execution_order(good, torch.randn(1, 3, 8, 8)) == [0, 1, -1]  # head last
    with pytest.raises(AssertionError, match="not from the input"):
        check_backbone(cut([["2"], ["0"]]))
