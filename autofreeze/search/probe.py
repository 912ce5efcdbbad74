"""The transferability probe: how useful are the pretrained features after each block?

Before the first trial, one forward pass of the pretrained backbone over the training and
validation images records each block's output (pooled over space or tokens). A linear probe is
fitted on every block's features in closed form: ridge regression on one-hot labels, the
least-squares classifier used as the cheap "linear probe" of intermediate layers (Alain &
Bengio, *Understanding intermediate layers using linear classifier probes*, 2016), scored on
validation. The curve, with the images per class, places the task in the classic size/similarity
quadrant (Yosinski et al., *How transferable are features in deep neural networks?*, 2014;
the CS231n transfer-learning rule of thumb) and predicts a freeze boundary, around which the
search enqueues plans right after the baselines.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from autofreeze.core.backbones import Backbone
from autofreeze.data.tensors import TensorSplit
from autofreeze.plan import FreezePlan
from autofreeze.runs.prepare import Prepared

SMALL_PER_CLASS = 100  # fewer training images per class than this is a small target
SIMILAR_GAP = 0.05  # "within the noise" when the validation size is unknown


@dataclass
class ProbeResult:
    """The per-block curve, the quadrant, the recommendation and the predicted boundary."""

    blocks: list[dict[str, Any]]  # index, name, val_accuracy, features
    per_class: float  # mean training images per class
    chance: float
    size: str  # "small" or "large"
    similarity: str  # "similar" or "different"
    boundary: int  # predicted freeze boundary
    recommendation: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pool(out: Any) -> torch.Tensor | None:
    out = out[0] if isinstance(out, tuple | list) and out else out
    if not isinstance(out, torch.Tensor) or out.ndim < 2:
        return None
    if out.ndim == 4:  # N, C, H, W
        return out.float().mean(dim=(2, 3))
    if out.ndim == 3:  # N, tokens, C
        return out.float().mean(dim=1)
    return out.float().flatten(1)


@torch.no_grad()
def block_features(
    backbone: Backbone, x: torch.Tensor | TensorSplit, batch: int = 32
) -> list[torch.Tensor]:
    """Pooled output of each block (its last top-level module to run), one row per image of
    ``x`` (normalised images, or a split normalised batch by batch)."""
    owners = backbone.module_blocks()
    tops = {
        name: owner
        for name, owner in owners.items()
        if owner is not None and owners.get(name.rpartition(".")[0] if "." in name else "") != owner
    }
    modules = dict(backbone.model.named_modules())
    latest: dict[int, torch.Tensor] = {}

    def keep(i: int) -> Any:
        def hook(_module: Any, _inputs: Any, out: Any) -> None:
            pooled = _pool(out)
            if pooled is not None:
                latest[i] = pooled

        return hook

    handles = [modules[name].register_forward_hook(keep(i)) for name, i in tops.items()]
    chunks: list[list[torch.Tensor]] = [[] for _ in backbone.blocks]
    backbone.model.eval()
    try:
        batches = x.chunks(batch) if isinstance(x, TensorSplit) else x.split(batch)
        for images in batches:
            latest.clear()
            backbone.model(images)
            for i in range(backbone.n_blocks):
                chunks[i].append(latest.get(i, torch.zeros(len(images), 1)))
    finally:
        for h in handles:
            h.remove()
    return [torch.cat(c) for c in chunks]


def ridge_probe(
    train: torch.Tensor,
    y: torch.Tensor,
    val: torch.Tensor,
    y_val: torch.Tensor,
    num_classes: int,
    alpha: float = 1.0,
) -> float:
    """Validation accuracy of a ridge least-squares classifier on standardised features."""
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    a = ((train - mean) / std).double()
    b = ((val - mean) / std).double()
    targets = torch.nn.functional.one_hot(y, num_classes).double()
    targets = targets - targets.mean(0)
    n, d = a.shape
    if n < d:  # the dual form: an n x n system
        w = a.T @ torch.linalg.solve(a @ a.T + alpha * torch.eye(n, dtype=a.dtype), targets)
    else:
        w = torch.linalg.solve(a.T @ a + alpha * torch.eye(d, dtype=a.dtype), a.T @ targets)
    return float(((b @ w).argmax(1) == y_val).double().mean())


def run_probe(prepared: Prepared) -> ProbeResult:
    """Probe every block of the config's pretrained backbone on the study's data."""
    backbone = prepared.backbone(FreezePlan(boundary=prepared.n_blocks))
    train, val = prepared.train, prepared.val
    k = prepared.num_classes
    feats_train = block_features(backbone, train)
    feats_val = block_features(backbone, val)
    blocks = [
        {
            "index": b.index,
            "name": b.name,
            "features": int(ft.shape[1]),
            "val_accuracy": round(ridge_probe(ft, train.y, fv, val.y, k), 4),
        }
        for b, ft, fv in zip(backbone.blocks, feats_train, feats_val, strict=True)
    ]
    return assess(blocks, len(train) / k, 1.0 / k, prepared.n_blocks, len(val))


def noise(accuracy: float, n_val: int | None) -> float:
    """What a difference of accuracy must exceed to mean anything on ``n_val`` images: two
    binomial standard errors (at least 0.01); ``SIMILAR_GAP`` when the size is unknown."""
    if not n_val:
        return SIMILAR_GAP
    return max(0.01, 2 * math.sqrt(max(accuracy * (1 - accuracy), 1e-4) / n_val))


def assess(
    blocks: list[dict[str, Any]],
    per_class: float,
    chance: float,
    n_blocks: int,
    n_val: int | None = None,
) -> ProbeResult:
    """The quadrant and the recommended boundary from the probe curve.

    Blocks whose features transfer as well as the best block's, within the noise of the
    validation split, are alike to the probe. The last block among them decides similarity to
    the source; the shallowest one (``j``) is where a small target's features are already as
    good as they get: freeze ``0..j``, fine-tune the rest. When only the last block is that good
    it is the textbook linear probe; when shallow blocks already match it, the deeper pretrained
    blocks add nothing the probe can see and training them is the better bet (Yosinski et al.
    2014: features grow specific to the source with depth).
    """
    accuracies = [b["val_accuracy"] for b in blocks]
    best = max(range(len(blocks)), key=lambda i: (accuracies[i], i))
    gap = noise(accuracies[best], n_val)
    alike = [i for i, a in enumerate(accuracies) if a >= accuracies[best] - gap]
    size = "small" if per_class < SMALL_PER_CLASS else "large"
    last = accuracies[-1]
    similar = last >= accuracies[best] - gap and last > chance + gap
    similarity = "similar" if similar else "different"
    shallowest = alike[0]
    if size == "small" and shallowest == len(blocks) - 1:
        boundary = n_blocks
        advice = "train the head on the frozen backbone (linear probe), or LP-FT"
    elif size == "small":
        boundary = min(n_blocks, shallowest + 1)
        advice = (
            f"freeze blocks 0..{shallowest} (deeper blocks transfer no better, within the "
            "noise) and fine-tune those above"
        )
    elif similar:
        boundary = n_blocks // 2
        advice = "fine-tune the upper half of the backbone at a reduced LR"
    else:
        boundary = 0
        advice = "fine-tune the whole backbone (or compare with training from scratch)"
    return ProbeResult(
        blocks, round(per_class, 1), round(chance, 4), size, similarity, boundary, advice
    )


def prior_plans(
    result: ProbeResult, n_blocks: int, taken: set[int] | frozenset[int] = frozenset()
) -> list[tuple[str, FreezePlan]]:
    """Static plans at the predicted boundary and its neighbours, enqueued after the baselines;
    boundaries in ``taken`` (a baseline already runs a static plan there) are left to the
    sampler rather than spending a second trial on them."""
    around = sorted({max(0, min(n_blocks, result.boundary + d)) for d in (-1, 0, 1)} - taken)
    return [
        (f"probe_k{k}", FreezePlan(boundary=k, head_lr=3e-3, backbone_lr_ratio=0.3)) for k in around
    ]


def probe_lines(result: ProbeResult) -> list[str]:
    """The probe's curve as a bar chart, then the quadrant and the recommendation."""
    blocks = result.blocks
    width = max(len(b["name"]) for b in blocks)
    lines = [
        "transferability probe: a linear probe on each block's features "
        f"(validation accuracy; chance {result.chance:.2f})"
    ]
    for b in blocks:
        bar = "#" * round(b["val_accuracy"] * 30)
        lines.append(f"  {b['index']:>3} {b['name']:<{width}} {b['val_accuracy']:.3f} {bar}")
    lines.append(
        f"  {result.size} target ({result.per_class:g} images per class), "
        f"{result.similarity} to the source: {result.recommendation} (boundary {result.boundary})"
    )
    return lines
