"""How each torchvision family is cut: stages of blocks of module prefixes, plus the head.

A cut is a list of stages, input side first. Each stage is a list of blocks and each block a list
of module-name prefixes. ``granularity="block"`` makes every block a freeze unit;
``granularity="stage"`` merges the blocks of each stage. The stem is always a stage of its own,
so both granularities start with it, and a stage is always a run of consecutive blocks.

Norms and pre-logits layers between the last block and the classifier join the last block; the
head is only the final linear layer, the one torchvision sizes to ``num_classes``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from autofreeze.hookspecs import Block

Prefixes = list[str]
Stage = list[Prefixes]


@dataclass(frozen=True)
class Cut:
    """Stages (each a list of blocks, each a list of prefixes) and the head's prefixes."""

    stages: list[Stage]
    head: Prefixes

    def blocks(self, granularity: str) -> list[Prefixes]:
        """The prefixes of each freeze unit: one per block, or one per stage."""
        if granularity == "stage":
            return [[p for block in stage for p in block] for stage in self.stages]
        return [block for stage in self.stages for block in stage]

    def freeze_blocks(self, model: nn.Module, granularity: str) -> list[Block]:
        return [
            Block(i, label(model, prefixes), params_under(model, prefixes))
            for i, prefixes in enumerate(self.blocks(granularity))
        ]

    def head_params(self, model: nn.Module) -> tuple[str, ...]:
        return params_under(model, self.head)


def params_under(model: nn.Module, prefixes: Prefixes) -> tuple[str, ...]:
    """Parameter names equal to a prefix or under it (``p`` or ``p.*``), in model order."""
    return tuple(
        n
        for n, _ in model.named_parameters()
        if any(n == p or n.startswith(p + ".") for p in prefixes)
    )


def label(model: nn.Module, prefixes: Prefixes) -> str:
    """A short, unique name for a block: complete sets of siblings become their parent
    (``layer1.0+layer1.1`` is ``layer1``), runs of numbered siblings a range (``features.4..8``).
    """
    parts = list(prefixes)
    while True:
        by_parent: dict[str, list[str]] = {}
        for p in parts:
            if "." in p:
                by_parent.setdefault(p.rsplit(".", 1)[0], []).append(p)
        complete = [
            parent
            for parent, kids in by_parent.items()
            if sorted(kids) == sorted(children(model, parent))
        ]
        if not complete:
            break
        parent = complete[0]
        first = min(i for i, p in enumerate(parts) if p.startswith(parent + "."))
        parts = [p for p in parts if not p.startswith(parent + ".")]
        parts.insert(first, parent)
    return "+".join(_ranges(parts))


def _ranges(parts: Prefixes) -> Prefixes:
    """``features.4+features.5+features.6`` -> ``features.4..6`` (three or more in a row)."""
    out: Prefixes = []
    run: list[tuple[str, int]] = []  # (prefix without the trailing number, number)

    def flush() -> None:
        if len(run) >= 3:
            out.append(f"{run[0][0]}{run[0][1]}..{run[-1][1]}")
        else:
            out.extend(f"{stem}{i}" for stem, i in run)
        run.clear()

    for p in parts:
        numbered = re.fullmatch(r"(.*\.\D*?)(\d+)", p)
        if numbered is None:
            flush()
            out.append(p)
            continue
        stem, i = numbered[1], int(numbered[2])
        if run and (run[-1][0] != stem or run[-1][1] + 1 != i):
            flush()
        run.append((stem, i))
    flush()
    return out


def children(model: nn.Module, path: str) -> list[str]:
    """The prefixes of the direct children of the module at ``path``, in declaration order."""
    return [f"{path}.{name}" for name, _ in model.get_submodule(path).named_children()]


def _last_joins(stages: list[Stage], prefixes: Prefixes) -> list[Stage]:
    """Add ``prefixes`` (a final norm, pre-logits layers) to the last block."""
    stages[-1][-1] = stages[-1][-1] + prefixes
    return stages


def _downsamples(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in module.modules())


def resnet(model: nn.Module) -> Cut:
    layers = [f"layer{i}" for i in range(1, 5)]
    stages = [[["conv1", "bn1"]]] + [[[b] for b in children(model, layer)] for layer in layers]
    return Cut(stages, ["fc"])


def mobilenet(model: nn.Module) -> Cut:
    """MobileNet V2/V3: a flat ``features``; a block that downsamples starts a new stage."""
    features = children(model, "features")
    stages: list[Stage] = [[[features[0]]]]
    for prefix in features[1:-1]:
        if _downsamples(model.get_submodule(prefix)) or len(stages) == 1:
            stages.append([])
        stages[-1].append([prefix])
    classifier = children(model, "classifier")
    linears = [p for p in classifier if isinstance(model.get_submodule(p), nn.Linear)]
    stages[-1].append([features[-1]] + linears[:-1])  # the last 1x1 conv (and V3's pre-logits)
    return Cut(stages, [linears[-1]])


def efficientnet(model: nn.Module) -> Cut:
    """EfficientNet B0-B7 and V2: torchvision's stage modules; the last 1x1 conv is a block."""
    features = children(model, "features")
    stages: list[Stage] = [[[features[0]]]]
    stages += [[[b] for b in children(model, stage)] for stage in features[1:-1]]
    stages[-1].append([features[-1]])
    return Cut(stages, ["classifier.1"])


def _staged(model: nn.Module, features: list[str]) -> list[Stage]:
    """ConvNeXt and Swin: ``features`` is stem, stage, downsample, stage, ... (stages at odd
    indices); a downsample joins the first block of the stage after it."""
    stages: list[Stage] = [[[features[0]]]]
    for i in range(1, len(features), 2):
        blocks = children(model, features[i])
        downsample = [features[i - 1]] if i > 1 else []
        stages.append([downsample + blocks[:1]] + [[b] for b in blocks[1:]])
    return stages


def convnext(model: nn.Module) -> Cut:
    stages = _staged(model, children(model, "features"))
    return Cut(_last_joins(stages, ["classifier.0"]), ["classifier.2"])


def swin(model: nn.Module) -> Cut:
    stages = _staged(model, children(model, "features"))
    return Cut(_last_joins(stages, ["norm"]), ["head"])


def regnet(model: nn.Module) -> Cut:
    stages = [[["stem"]]]
    stages += [[[b] for b in children(model, s)] for s in children(model, "trunk_output")]
    return Cut(stages, ["fc"])


VIT_STAGES = 4


def vit(model: nn.Module) -> Cut:
    """ViT has no stages: its encoder layers are split into four runs of equal depth."""
    layers = children(model, "encoder.layers")
    per_stage = -(-len(layers) // VIT_STAGES)
    stages: list[Stage] = [[["conv_proj", "class_token", "encoder.pos_embedding"]]]
    stages += [[[b] for b in layers[i : i + per_stage]] for i in range(0, len(layers), per_stage)]
    pre_logits = [p for p in children(model, "heads") if p != "heads.head"]
    return Cut(_last_joins(stages, ["encoder.ln"] + pre_logits), ["heads.head"])


def densenet(model: nn.Module) -> Cut:
    """Each dense layer a block; a transition joins the last layer before it (as timm does)."""
    stages: list[Stage] = [[["features.conv0", "features.norm0"]]]
    for prefix in children(model, "features"):
        name = prefix.removeprefix("features.")
        if name.startswith("denseblock"):
            stages.append([[b] for b in children(model, prefix)])
        elif name.startswith("transition"):
            stages[-1][-1].append(prefix)
    return Cut(_last_joins(stages, ["features.norm5"]), ["classifier"])


def maxvit(model: nn.Module) -> Cut:
    stages: list[Stage] = [[["stem"]]]
    stages += [[[b] for b in children(model, f"{s}.layers")] for s in children(model, "blocks")]
    # classifier: pool, flatten, LayerNorm, Linear, Tanh, Linear (the head)
    return Cut(_last_joins(stages, ["classifier.2", "classifier.3"]), ["classifier.5"])


def shufflenet(model: nn.Module) -> Cut:
    stages: list[Stage] = [[["conv1"]]]
    stages += [[[b] for b in children(model, f"stage{i}")] for i in (2, 3, 4)]
    stages[-1].append(["conv5"])
    return Cut(stages, ["fc"])


FAMILIES: dict[str, Callable[[nn.Module], Cut]] = {
    "resnet": resnet,
    "mobilenet": mobilenet,
    "efficientnet": efficientnet,
    "convnext": convnext,
    "swin": swin,
    "regnet": regnet,
    "vit": vit,
    "densenet": densenet,
    "maxvit": maxvit,
    "shufflenet": shufflenet,
}
