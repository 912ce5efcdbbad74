"""timm models without a ``group_matcher()`` are cut by their ``feature_info`` stages, else by
their top-level modules (``autofreeze.plugins.builtin._timm_cut``); models with one still use it.
"""

from __future__ import annotations

import functools
import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from autofreeze.cli import cli
from autofreeze.core.backbones import Backbone, state_checksum
from autofreeze.core.train import TrainConfig, Trainer
from autofreeze.errors import BackboneError
from autofreeze.plan import FreezePlan
from autofreeze.plugins.builtin._timm_cut import cut_model, stage_modules
from autofreeze.plugins.registry import Registry
from autofreeze.schedules import Static
from autofreeze.testing import check_backbone, tiny_split

NUM_CLASSES = 7
# name -> input side for the forward passes: the smallest each model runs at (PiT's position
# embeddings fix 224; CSATv2's DCT stem and strides need 64)
MODELS = {
    "poolformerv2_s12": 32,
    "caformer_s18": 32,
    "convformer_s18": 32,
    "pit_ti_distilled_224": 224,  # two heads: both stay out of the blocks
    "csatv2": 64,  # its stem is a feature point of its own
}
REGISTRY = Registry()
models = pytest.mark.parametrize("name", list(MODELS))


@functools.cache
def backbone(name: str) -> Backbone:
    torch.manual_seed(0)
    return REGISTRY.create_backbone(name, num_classes=NUM_CLASSES)


@models
def test_the_stages_of_feature_info_are_the_blocks(name):
    bb = backbone(name)
    assert bb.meta["cut"] == "feature_info" and bb.describe()["cut"] == "feature_info"
    assert bb.n_blocks >= 2 and all(b.param_names for b in bb.blocks)
    # block i holds the whole i-th stage module (in timm's input order) and nothing of another
    params = [n for n, _ in bb.model.named_parameters()]
    stages = [m for m in stage_modules(bb.model) if any(n.startswith(m + ".") for n in params)]
    assert len(stages) == bb.n_blocks
    for block, stage in zip(bb.blocks, stages, strict=True):
        inside = {n for n in params if n.startswith(stage + ".")}
        assert inside <= set(block.param_names)
        others = [s for s in stages if s != stage]
        assert not any(n.startswith(s + ".") for n in block.param_names for s in others)
    # the stem (the first declared parameter) is in block 0; the head is in no block
    assert params[0] in bb.blocks[0].param_names
    classifier = bb.model.get_classifier()
    modules = classifier if isinstance(classifier, tuple | list) else [classifier]
    named = dict(bb.model.named_parameters())
    assert {id(named[n]) for n in bb.head_param_names} <= {
        id(p) for m in modules for p in m.parameters()
    }  # an MLP head (CAFormer) keeps its first layers in the last block; only the output resets
    outputs = {n for n, p in named.items() if p.ndim and p.shape[0] == NUM_CLASSES}
    assert outputs == set(bb.head_param_names)
    assert not {n for b in bb.blocks for n in b.param_names} & set(bb.head_param_names)


@models
def test_the_backbone_contract(name):
    """Partition, stem in block 0, freezing, blocks run in index order, head-only logits."""
    bb = backbone(name)
    size = MODELS[name]
    check_backbone(bb, torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)))


@models
def test_stage_granularity_gives_the_same_cut(name):
    bb = backbone(name)
    blocks = cut_model(bb.model, bb.head_param_names, name=name, granularity="block")
    stages = cut_model(bb.model, bb.head_param_names, name=name, granularity="stage")
    assert blocks == stages and blocks[1] == "feature_info"
    assert [sorted(g) for g in blocks[0]] == [sorted(b.param_names) for b in bb.blocks]


def block_sums(bb: Backbone) -> list[str]:
    return [state_checksum(bb.parameters_of(b.param_names)) for b in bb.blocks]


@models
def test_a_training_step_leaves_the_frozen_blocks_unchanged(name):
    bb = backbone(name)
    size = MODELS[name]
    k = bb.n_blocks // 2
    plan = FreezePlan(boundary=k, head_lr=1e-2)
    trainer = Trainer(
        bb, plan, Static(boundary=k, n_blocks=bb.n_blocks, epochs=1), TrainConfig(epochs=1)
    )
    before = block_sums(bb)
    try:  # one step on 4 images
        trainer.fit(tiny_split(4, size=size), tiny_split(2, size=size, seed=1))
    finally:
        for p in bb.model.parameters():
            p.requires_grad_(True)
    after = block_sums(bb)
    assert after[:k] == before[:k]
    assert all(a != b for a, b in zip(after[k:], before[k:], strict=True))


def test_a_model_with_a_group_matcher_still_uses_it():
    from timm.models._manipulate import group_parameters

    torch.manual_seed(0)
    bb = REGISTRY.create_backbone("resnet10t", num_classes=3)
    assert bb.meta["cut"] == "group_matcher" and bb.describe()["cut"] == "group_matcher"
    grouped = group_parameters(bb.model, bb.model.group_matcher())
    expected = [[n for n in grouped[k] if n not in bb.head_param_names] for k in sorted(grouped)]
    assert [list(b.param_names) for b in bb.blocks] == [g for g in expected if g]


def test_inspect_json_says_which_cut():
    result = CliRunner().invoke(cli, ["inspect", "pit_ti_224", "--num-classes", "3", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["cut"] == "feature_info" and info["n_blocks"] == 3
    assert info["head"]["param_names"] == ["head.weight", "head.bias"]


# -- the last fallback, on tiny modules timm does not know ----------------------------------
class Net(nn.Module):
    """Declared in forward order: a stem, two stages, a final norm and the head."""

    def __init__(self, feature_info: list[dict] | None = None) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 4, 1, 1))
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stages = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)
        if feature_info is not None:
            self.feature_info = feature_info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.stages(self.stem(x) + self.token))
        return self.head(x.mean((2, 3)))


def cut(model: nn.Module) -> tuple[list[list[str]], str]:
    return cut_model(model, ["head.weight", "head.bias"], name="net")


def as_backbone(model: nn.Module) -> Backbone:
    groups, source = cut(model)
    return Backbone.from_groups(
        "net",
        model,
        groups,
        ["head.weight", "head.bias"],
        data_config={"input_size": (3, 8, 8)},
        num_classes=3,
        meta={"cut": source},
    )


def test_feature_info_cut_on_a_tiny_model():
    model = Net([{"module": "stages.0"}, {"module": "stages.1"}])
    groups, source = cut(model)
    assert source == "feature_info"
    assert groups == [
        ["token", "stem.weight", "stem.bias", "stages.0.weight", "stages.0.bias"],
        ["stages.1.weight", "stages.1.bias", "norm.weight", "norm.bias"],
    ]
    check_backbone(as_backbone(model))


@pytest.mark.parametrize(
    "feature_info",
    [
        None,  # missing
        [{"module": "stages.0"}, {"module": "neck"}],  # a module the model does not hold
        [{"module": "stem"}, {"module": "norm"}],  # the stages would be in no block
        [{"module": "stages"}, {"module": "stages.1"}],  # stages.1 would be in two blocks
        [{"module": "stages.1"}, {"module": "stages.0"}],  # not the declaration order
        [{"module": "stages"}],  # one stage only
    ],
)
def test_unusable_feature_info_falls_back_to_the_top_level_modules(feature_info):
    model = Net(feature_info)
    groups, source = cut(model)
    assert source == "children"
    assert [g[0] for g in groups] == ["token", "stages.0.weight", "norm.weight"]
    assert groups[0] == ["token", "stem.weight", "stem.bias"]
    check_backbone(as_backbone(model))


def test_a_model_with_no_usable_cut_is_one_clear_error():
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))
            self.head = nn.Linear(3, 3)

    with pytest.raises(BackboneError) as info:
        cut(Flat())
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        "timm model 'net' cannot be cut into blocks: it defines no group_matcher(), its "
        "feature_info is missing, and no top-level module but the head holds parameters"
    )
