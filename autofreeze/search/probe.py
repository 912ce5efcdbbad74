"""The transferability probe: how useful are the pretrained features after each block?

Before the first trial, one forward pass of the pretrained backbone over the training and
validation images gives each block's output (pooled over space or tokens). A linear probe is
fitted on every block's features in closed form: ridge regression on one-hot labels, the
least-squares classifier used as the cheap "linear probe" of intermediate layers (Alain &
Bengio, *Understanding intermediate layers using linear classifier probes*, 2016), scored on
validation. Both are done batch by batch (:class:`RidgeProbe`): the fit from each block's
running sums, so that the probe's memory does not grow with the images. The curve, with the
images per class, places the task in the classic size/similarity quadrant (Yosinski et al.,
*How transferable are features in deep neural networks?*, 2014; the CS231n transfer-learning
rule of thumb) and predicts a freeze boundary, around which the search enqueues plans right
after the baselines.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
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


PROBE_BATCH = 32  # images per forward pass of the probe


@torch.no_grad()
def block_batches(
    backbone: Backbone, x: torch.Tensor | TensorSplit, batch: int = PROBE_BATCH
) -> Iterator[list[torch.Tensor]]:
    """Per batch of ``x`` (normalised images, or a split normalised batch by batch), in order:
    the pooled output of each block (its last top-level module to run), one row per image."""
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
    backbone.model.eval()
    try:
        batches = x.chunks(batch) if isinstance(x, TensorSplit) else x.split(batch)
        for images in batches:
            latest.clear()
            backbone.model(images)
            yield [latest.get(i, torch.zeros(len(images), 1)) for i in range(backbone.n_blocks)]
    finally:
        for h in handles:
            h.remove()


def block_features(
    backbone: Backbone, x: torch.Tensor | TensorSplit, batch: int = PROBE_BATCH
) -> list[torch.Tensor]:
    """Pooled output of each block, one row per image of ``x`` (every image at once: the probe
    itself reduces them batch by batch, see :class:`RidgeProbe`)."""
    return [torch.cat(c) for c in zip(*block_batches(backbone, x, batch), strict=True)]


class RidgeProbe:
    """A ridge least-squares classifier on standardised features (one-hot targets, centred),
    fitted and scored batch by batch, so that no block's features are held for every image.

    From the training batches it keeps the features' sums about a shift (the first batch's
    mean, for precision): count, sum, the Gram matrix and the sums per class, from which the
    standardised normal equations follow exactly; where the Gram matrix (``d x d`` float64)
    would be larger than the features themselves (``n x d`` float32: ``d > n / 2``), it keeps
    the features and solves as :func:`ridge_probe` always did (the dual form when ``n < d``).
    Validation batches are scored as they come.
    """

    def __init__(self, n: int, num_classes: int, alpha: float = 1.0) -> None:
        self.n, self.k, self.alpha = n, num_classes, alpha
        self.d = 0
        self.seen = 0
        self.rows: torch.Tensor | None = None  # the features (wide blocks), else None
        self.labels: list[torch.Tensor] = []  # of the features kept (wide blocks)
        self.counts = torch.zeros(0, dtype=torch.int64)  # images per class
        self.shift = self.total = self.gram = self.per_class = torch.zeros(0, dtype=torch.float64)
        self.mean = self.std = self.w = torch.zeros(0, dtype=torch.float64)
        self.correct = self.scored = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Training features ``x`` (rows of images) and their labels ``y``."""
        if not self.seen:
            self.d = x.shape[1]
            if 2 * self.d > self.n:
                self.rows = torch.empty((self.n, self.d), dtype=torch.float32)
            else:
                self.shift = x.double().mean(0)
                self.total = torch.zeros(self.d, dtype=torch.float64)
                self.gram = torch.zeros((self.d, self.d), dtype=torch.float64)
                self.per_class = torch.zeros((self.d, self.k), dtype=torch.float64)
                self.counts = torch.zeros(self.k, dtype=torch.int64)
        if self.rows is not None:
            self.rows[self.seen : self.seen + len(x)] = x
            self.labels.append(y)
        else:
            c = x.double() - self.shift
            self.total += c.sum(0)
            # in place: a d x d temporary a batch fragmented the heap (RSS grew with batches)
            self.gram.addmm_(c.T, c)
            self.per_class.index_add_(1, y, c.T)
            self.counts += torch.bincount(y, minlength=self.k)
        self.seen += len(x)

    def fit(self) -> None:
        """Solve for the weights once every training image was added."""
        n = self.seen
        if self.rows is not None:
            y = torch.cat(self.labels)
            mean, std = self.rows.mean(0), self.rows.std(0).clamp_min(1e-6)
            a = ((self.rows - mean) / std).double()
            targets = torch.nn.functional.one_hot(y, self.k).double()
            self.w = _ridge(a, targets - targets.mean(0), self.alpha)
            self.mean, self.std, self.rows = mean, std, None  # float32, as the features
            return
        counts = self.counts.double()
        offset = self.total / n  # the mean's distance from the shift
        scatter = self.gram - n * torch.outer(offset, offset)
        std = (scatter.diagonal() / max(1, n - 1)).clamp_min(0).sqrt().clamp_min(1e-6)
        gram = scatter / torch.outer(std, std)
        cross = (self.per_class - torch.outer(offset, counts)) / std[:, None]
        eye = torch.eye(self.d, dtype=torch.float64)
        self.w = torch.linalg.solve(gram + self.alpha * eye, cross)
        self.mean, self.std = self.shift + offset, std
        self.gram = self.per_class = torch.zeros(0, dtype=torch.float64)

    def score(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Validation features ``x`` and their labels ``y``."""
        b = ((x.to(self.mean.dtype) - self.mean) / self.std).double()
        self.correct += int(((b @ self.w).argmax(1) == y).sum())
        self.scored += len(y)

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.scored)


def _ridge(a: torch.Tensor, targets: torch.Tensor, alpha: float) -> torch.Tensor:
    """Ridge weights of the standardised features ``a`` (float64): the dual form (an ``n x n``
    system) when there are fewer images than features."""
    n, d = a.shape
    if n < d:
        return a.T @ torch.linalg.solve(a @ a.T + alpha * torch.eye(n, dtype=a.dtype), targets)
    return torch.linalg.solve(a.T @ a + alpha * torch.eye(d, dtype=a.dtype), a.T @ targets)


def ridge_probe(
    train: torch.Tensor,
    y: torch.Tensor,
    val: torch.Tensor,
    y_val: torch.Tensor,
    num_classes: int,
    alpha: float = 1.0,
) -> float:
    """Validation accuracy of a ridge least-squares classifier on standardised features."""
    probe = RidgeProbe(len(train), num_classes, alpha)
    probe.add(train, y)
    probe.fit()
    probe.score(val, y_val)
    return probe.accuracy


def _fitted(backbone: Backbone, train: TensorSplit, num_classes: int) -> list[RidgeProbe]:
    """One probe per block, fitted on the training images' features batch by batch."""
    probes = [RidgeProbe(len(train), num_classes) for _ in backbone.blocks]
    labels = train.y.split(PROBE_BATCH)
    for features, y in zip(block_batches(backbone, train), labels, strict=True):
        for probe, x in zip(probes, features, strict=True):
            probe.add(x, y)
    for probe in probes:
        probe.fit()
    return probes


def run_probe(prepared: Prepared) -> ProbeResult:
    """Probe every block of the config's pretrained backbone on the study's data: one pass
    over the training images (each block's probe fitted from its running sums), then one over
    the validation images (scored as they come); no block's features are held for every
    image."""
    backbone = prepared.backbone(FreezePlan(boundary=prepared.n_blocks))
    train, val = prepared.train, prepared.val
    k = prepared.num_classes
    probes = _fitted(backbone, train, k)
    for features, y in zip(block_batches(backbone, val), val.y.split(PROBE_BATCH), strict=True):
        for probe, x in zip(probes, features, strict=True):
            probe.score(x, y)
    blocks = [
        {
            "index": b.index,
            "name": b.name,
            "features": p.d,
            "val_accuracy": round(p.accuracy, 4),
        }
        for b, p in zip(backbone.blocks, probes, strict=True)
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
