"""autofreeze plugin: torchvision classification models as backbones named ``tv_<model>``.

Each model is cut from the input: the stem, then its stages (``granularity="stage"``) or their
blocks (``"block"``); the head is the final linear layer, freshly sized to ``num_classes``.
``weights`` is ``"none"``, ``"default"`` (torchvision's DEFAULT weights, from the torch hub cache
or downloaded) or a local ``.safetensors`` / ``.pth`` file. torch and torchvision are imported
only when a backbone is built, so registering the names costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from autofreeze.hookspecs import hookimpl

if TYPE_CHECKING:
    from autofreeze.hookspecs import Backbone, BackboneRegister

PREFIX = "tv_"

# torchvision model -> (family in autofreeze_torchvision.cuts.FAMILIES, description);
# params and ImageNet-1k top-1 are those of torchvision's DEFAULT weights
MODELS: dict[str, tuple[str, str]] = {
    "resnet18": ("resnet", "ResNet-18, 11.7M params, top-1 69.8%"),
    "resnet34": ("resnet", "ResNet-34, 21.8M params, top-1 73.3%"),
    "resnet50": ("resnet", "ResNet-50, 25.6M params, top-1 80.9%"),
    "resnet101": ("resnet", "ResNet-101, 44.5M params, top-1 81.9%"),
    "resnet152": ("resnet", "ResNet-152, 60.2M params, top-1 82.3%"),
    "resnext50_32x4d": ("resnet", "ResNeXt-50 32x4d, 25.0M params, top-1 81.2%"),
    "mobilenet_v2": ("mobilenet", "MobileNetV2, 3.5M params, top-1 72.2%"),
    "mobilenet_v3_small": ("mobilenet", "MobileNetV3-Small, 2.5M params, top-1 67.7%"),
    "mobilenet_v3_large": ("mobilenet", "MobileNetV3-Large, 5.5M params, top-1 75.3%"),
    "efficientnet_b0": ("efficientnet", "EfficientNet-B0, 5.3M params, top-1 77.7%"),
    "efficientnet_b1": ("efficientnet", "EfficientNet-B1, 7.8M params, top-1 79.8%, 240 px"),
    "efficientnet_b2": ("efficientnet", "EfficientNet-B2, 9.1M params, top-1 80.6%, 288 px"),
    "efficientnet_v2_s": ("efficientnet", "EfficientNetV2-S, 21.5M params, top-1 84.2%, 384 px"),
    "convnext_tiny": ("convnext", "ConvNeXt-Tiny, 28.6M params, top-1 82.5%"),
    "regnet_x_400mf": ("regnet", "RegNetX-400MF, 5.5M params, top-1 74.9%"),
    "regnet_y_400mf": ("regnet", "RegNetY-400MF, 4.3M params, top-1 75.8%"),
    "regnet_y_800mf": ("regnet", "RegNetY-800MF, 6.4M params, top-1 78.8%"),
    "vit_b_16": ("vit", "ViT-B/16, 86.6M params, top-1 81.1%, 224 px only"),
    "vit_b_32": ("vit", "ViT-B/32, 88.2M params, top-1 75.9%, 224 px only"),
    "swin_t": ("swin", "Swin-T, 28.3M params, top-1 81.5%"),
    "swin_v2_t": ("swin", "Swin-V2-T, 28.4M params, top-1 82.1%, 256 px"),
    "densenet121": ("densenet", "DenseNet-121, 8.0M params, top-1 74.4%"),
    "maxvit_t": ("maxvit", "MaxViT-T, 30.9M params, top-1 83.7%, 224 px only"),
    "shufflenet_v2_x1_0": ("shufflenet", "ShuffleNetV2 x1.0, 2.3M params, top-1 69.4%"),
}


def create_torchvision_backbone(
    name: str, *, num_classes: int, weights: str | None = None, granularity: str = "block"
) -> Backbone:
    """Build torchvision model ``name`` (``tv_<model>``) with a fresh head, cut into blocks."""
    from torchvision.models import get_model

    from autofreeze.hookspecs import Backbone, UnknownNameError, read_state_dict
    from autofreeze_torchvision.cuts import FAMILIES
    from autofreeze_torchvision.weights import (
        default_state_dict,
        default_weights,
        load_state_dict,
    )

    arch = name.removeprefix(PREFIX)
    if arch not in MODELS:
        raise UnknownNameError(f"autofreeze-torchvision has no backbone {name!r}")
    family = MODELS[arch][0]
    weights = weights or "none"
    state, path = None, None  # read before building the model, so a bad file fails at once
    if weights == "default":
        state, path = default_state_dict(name, arch)
    elif weights != "none":
        path = Path(weights)
        state = read_state_dict(path)
    # torchvision's constructor replaces the classifier: a fresh, torchvision-initialised head
    model = get_model(arch, weights=None, num_classes=num_classes)
    cut = FAMILIES[family](model)
    if state is not None:  # DEFAULT weights hold ImageNet's classifier: the head stays fresh
        keep_head = weights != "default"
        load_state_dict(model, state, cut.head, source=str(path), name=name, keep_head=keep_head)

    transforms = default_weights(arch).transforms()
    size = int(transforms.crop_size[0])
    return Backbone(
        name,
        model,
        cut.freeze_blocks(model, granularity),
        cut.head_params(model),
        data_config={
            "mean": tuple(transforms.mean),
            "std": tuple(transforms.std),
            "input_size": (3, size, size),
        },
        num_classes=num_classes,
        weights=weights,
        meta={"granularity": granularity, "family": type(model).__name__, "source": "torchvision"},
    )


@hookimpl
def register_backbones(register: BackboneRegister) -> None:
    for arch, (_, description) in MODELS.items():
        register(f"{PREFIX}{arch}", create_torchvision_backbone, f"torchvision {description}")
