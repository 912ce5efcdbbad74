"""The backbone contract on real timm models (random init), and local weight files.

Every model is cut by ``group_matcher()`` into blocks ordered from the input plus a head; the
checks here are what the freezing, the search space and the activation cache rely on.
"""

from __future__ import annotations

import functools
import time

import pytest
import torch
from safetensors.torch import save_file

from autofreeze.core.backbones import Backbone
from autofreeze.errors import BackboneError, WeightsError
from autofreeze.plugins.registry import Registry
from autofreeze.testing import check_backbone, first_calls

NUM_CLASSES = 7  # no stem or stage width equals it, so a shape check finds only the head

# name -> timm model class (the family): 24 small models of 23 classes
ARCHITECTURES = {
    "resnet10t": "ResNet",
    "convnext_atto": "ConvNeXt",
    "efficientnet_b0": "EfficientNet",
    "mobilenetv3_small_050": "MobileNetV3",
    "mobilenetv4_conv_small_035": "MobileNetV3",
    "regnetx_002": "RegNet",
    "vit_tiny_patch16_224": "VisionTransformer",
    "deit_tiny_distilled_patch16_224": "VisionTransformerDistilled",
    "swin_tiny_patch4_window7_224": "SwinTransformer",
    "densenet121": "DenseNet",
    "levit_128s": "LevitDistilled",
    "ghostnet_050": "GhostNet",
    "efficientvit_m0": "EfficientVitMsra",
    "efficientvit_b0": "EfficientVit",
    "mobilevit_xxs": "ByobNet",
    "test_maxvit": "MaxxVit",
    "test_nfnet": "NormFreeNet",
    "test_mambaout": "MambaOut",
    "coat_lite_tiny": "CoaT",  # its parameters are declared in another order than they run
    "pvt_v2_b0": "PyramidVisionTransformerV2",
    "edgenext_xx_small": "EdgeNeXt",
    "crossvit_tiny_240": "CrossVit",  # two heads
    "inception_next_atto": "MetaNeXt",  # an MLP head: only its last layer is reset
    "fastvit_t8": "FastVit",
}
# stage (coarse) granularity is checked on a subset whose stages differ from their blocks
STAGE_SUBSET = [
    "convnext_atto",
    "efficientnet_b0",
    "mobilenetv4_conv_small_035",
    "regnetx_002",
    "swin_tiny_patch4_window7_224",
    "densenet121",
    "levit_128s",
    "ghostnet_050",
    "efficientvit_b0",
    "mobilevit_xxs",
    "test_mambaout",
    "edgenext_xx_small",
]
CASES = [(name, "block") for name in ARCHITECTURES] + [(name, "stage") for name in STAGE_SUBSET]

REGISTRY = Registry()


@functools.cache
def backbone(name: str, granularity: str = "block") -> Backbone:
    """Built once per module; tests that change ``requires_grad`` set it completely."""
    torch.manual_seed(0)
    return REGISTRY.create_backbone(name, num_classes=NUM_CLASSES, granularity=granularity)


# models whose position embeddings, attention biases or windows fix their input size
FIXED_INPUT_SIZE = {
    "vit_tiny_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "swin_tiny_patch4_window7_224",
    "levit_128s",
    "test_maxvit",
    "coat_lite_tiny",
}
SMALL_INPUT = 64  # the others run at 64 x 64 to keep the forward passes cheap


def sample_input(bb: Backbone, batch: int = 2) -> torch.Tensor:
    c, h, w = bb.data_config["input_size"]
    if bb.name not in FIXED_INPUT_SIZE:
        h = w = SMALL_INPUT
    return torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(0))


def classifier_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    head = model.get_classifier()
    return list(head) if isinstance(head, tuple | list) else [head]


archs = pytest.mark.parametrize("name", list(ARCHITECTURES))
cases = pytest.mark.parametrize(("name", "granularity"), CASES)


@archs
def test_model_family_is_the_expected_one(name):
    bb = backbone(name)
    assert bb.meta["family"] == ARCHITECTURES[name]
    assert bb.name == name and bb.weights == "none" and bb.num_classes == NUM_CLASSES


def test_the_architectures_span_many_families():
    assert len(ARCHITECTURES) >= 16
    assert len(set(ARCHITECTURES.values())) >= 13


@cases
def test_the_backbone_contract(name, granularity):
    """Partition, unique names, stem in block 0, freezing, forward order, head-only logits
    (autofreeze.testing.check_backbone). timm's stage cut is its own coarse grouping, not always
    a run of fine blocks (Swin's fine cut puts the final norm in its last block, the coarse cut
    in a stage of its own), so it is not checked as one."""
    bb = backbone(name, granularity)
    assert bb.n_blocks >= 2
    check_backbone(bb, sample_input(bb, batch=2))


@pytest.mark.parametrize("name", STAGE_SUBSET)
def test_stages_are_coarser_than_blocks(name):
    blocks, stages = backbone(name, "block"), backbone(name, "stage")
    assert 2 <= stages.n_blocks < blocks.n_blocks
    assert set(stages.head_param_names) == set(blocks.head_param_names)
    assert stages.blocks[0].param_names[0] == blocks.blocks[0].param_names[0]


def test_the_order_check_catches_a_reversed_cut():
    bb = backbone("resnet10t")
    groups = [b.param_names for b in reversed(bb.blocks)]
    reversed_cut = Backbone.from_groups(
        "reversed",
        bb.model,
        groups,
        bb.head_param_names,
        data_config=bb.data_config,
        num_classes=NUM_CLASSES,
    )
    first, _ = first_calls(reversed_cut, sample_input(bb, batch=2))
    order = [first[b.index] for b in reversed_cut.blocks]
    assert order == sorted(order, reverse=True)


@archs
def test_head_is_the_fresh_classifier(name):
    bb = backbone(name)
    params = dict(bb.model.named_parameters())
    head = [params[n] for n in bb.head_param_names]
    # the output layers: within timm's classifier (a norm before it may stay in the last block)
    assert {id(p) for p in head} <= {
        id(p) for m in classifier_modules(bb.model) for p in m.parameters()
    }
    outputs = {n for n, p in params.items() if p.ndim and p.shape[0] == NUM_CLASSES}
    assert outputs == set(bb.head_param_names)
    # (that the logits come from the head alone is part of test_the_backbone_contract)


def test_unknown_granularity_is_rejected():
    from autofreeze.errors import ConfigError

    with pytest.raises(ConfigError, match="granularity must be 'block' or 'stage'"):
        REGISTRY.create_backbone("test_resnet", num_classes=3, granularity="layer")


def test_model_without_stage_grouping_fails_cleanly():
    with pytest.raises(BackboneError, match="'rdnet_tiny' cannot be cut by stage.*'block'"):
        REGISTRY.create_backbone("rdnet_tiny", num_classes=3, granularity="stage")


def test_hf_hub_name_offline_fails_fast():
    start = time.perf_counter()
    with pytest.raises(BackboneError, match="cannot build timm model 'hf-hub:timm/resnet10t"):
        REGISTRY.create_backbone("hf-hub:timm/resnet10t.a1_in1k", num_classes=3)
    assert time.perf_counter() - start < 10


# -- local weights -----------------------------------------------------------------------------
def save_weights(model: torch.nn.Module, path, wrap: bool = False) -> dict[str, torch.Tensor]:
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    elif wrap:  # a training checkpoint of a DataParallel model
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        torch.save(state, path)
    return state


@pytest.mark.parametrize("name", ["resnet10t", "test_vit"])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_load_and_the_head_is_reset(tmp_path, name, suffix):
    torch.manual_seed(1)
    source = REGISTRY.create_backbone(name, num_classes=5)
    path = tmp_path / f"{name}{suffix}"
    saved = save_weights(source.model, path)

    torch.manual_seed(2)
    bb = REGISTRY.create_backbone(name, num_classes=3, weights=str(path))
    assert bb.weights == str(path)
    head = set(bb.head_param_names)
    loaded = bb.model.state_dict()
    body = [k for k in saved if k not in head]
    assert body and all(torch.equal(loaded[k], saved[k]) for k in body)
    for k in head:
        assert loaded[k].shape[0] == 3 and saved[k].shape[0] == 5

    same = REGISTRY.create_backbone(name, num_classes=5, weights=str(path))
    kept = same.model.state_dict()
    assert all(torch.equal(kept[k], saved[k]) for k in saved)  # same classes: head loaded too


def test_wrapped_checkpoint_with_module_prefix_loads(tmp_path):
    torch.manual_seed(1)
    source = REGISTRY.create_backbone("test_resnet", num_classes=3)
    path = tmp_path / "checkpoint.pt"
    saved = save_weights(source.model, path, wrap=True)
    bb = REGISTRY.create_backbone("test_resnet", num_classes=3, weights=str(path))
    loaded = bb.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_of_another_architecture_do_not_match(tmp_path, suffix):
    path = tmp_path / f"other{suffix}"
    save_weights(REGISTRY.create_backbone("test_resnet", num_classes=3).model, path)
    with pytest.raises(WeightsError, match="does not match backbone 'resnet10t'") as info:
        REGISTRY.create_backbone("resnet10t", num_classes=3, weights=str(path))
    assert str(path) in str(info.value)
    assert "shape mismatches" in str(info.value)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_garbage_weights_file_cannot_be_read(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(b"this is not a checkpoint\n" * 4)
    with pytest.raises(WeightsError, match="cannot read weights file") as info:
        REGISTRY.create_backbone("test_resnet", num_classes=3, weights=str(path))
    assert str(path) in str(info.value)


def test_torch_file_without_a_state_dict_is_rejected(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(WeightsError, match="does not hold a state dict of tensors"):
        REGISTRY.create_backbone("test_resnet", num_classes=3, weights=str(path))


def test_missing_weights_file(tmp_path):
    path = tmp_path / "nowhere.safetensors"
    with pytest.raises(WeightsError, match="does not exist") as info:
        REGISTRY.create_backbone("test_resnet", num_classes=3, weights=str(path))
    assert str(path) in str(info.value)


def test_default_weights_offline_point_to_a_local_file():
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="pass a local file instead"):
        REGISTRY.create_backbone("resnet10t", num_classes=3, weights="default")
    assert time.perf_counter() - start < 10
