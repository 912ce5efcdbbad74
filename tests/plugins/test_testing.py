"""The plugin author's helpers check the contract for real and catch a broken cut."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autofreeze.core.backbones import Backbone
from autofreeze.plugins.registry import Registry
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


def test_check_backbone_catches_a_logit_that_bypasses_the_head():
    class Leaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            feats = self.body(x).mean(dim=(2, 3))
            return self.fc(feats) + feats  # a skip around the head

    leaky = Backbone.from_prefixes(
        "leaky", Leaky(), [["body"]], ["fc"], data_config={"input_size": (3, 8, 8)}, num_classes=3
    )
    with pytest.raises(AssertionError, match="do not come from the head alone"):
        check_backbone(leaky)


def test_check_backbone_catches_a_block_that_never_runs():
    class Dead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 4, 3, padding=1)
            self.unused = nn.Conv2d(4, 4, 1)  # declared, never called by forward
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.body(x).mean(dim=(2, 3)))

    dead = Backbone.from_prefixes(
        "dead",
        Dead(),
        [["body"], ["unused"]],
        ["fc"],
        data_config={"input_size": (3, 8, 8)},
        num_classes=3,
    )
    with pytest.raises(AssertionError, match=r"never ran: \[1\]"):
        check_backbone(dead)


def test_check_backbone_catches_stages_that_are_not_runs_of_blocks():
    blocks = cut([["0"], ["2"]])
    check_backbone(blocks, stages=cut([["0", "2"]]))  # one stage holding both blocks
    swapped = Backbone.from_groups(
        "small",
        blocks.model,
        [blocks.blocks[1].param_names, blocks.blocks[0].param_names],
        blocks.head_param_names,
        data_config=blocks.data_config,
        num_classes=3,
    )
    with pytest.raises(AssertionError, match="not a run of consecutive blocks"):
        check_backbone(blocks, stages=swapped)
