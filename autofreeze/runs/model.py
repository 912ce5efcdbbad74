"""The delivered model: a checkpoint loaded with its preprocessing, to predict and to evaluate.

Three lines for a user::

    import autofreeze
    model = autofreeze.load("best.safetensors")
    model.predict(["cat.jpg", "dog.png"])  # [("cat", 0.97), ("dog", 0.88)]

One image (a path, a PIL image, or an array H x W, H x W x C or C x H x W) gives one answer,
``model.predict("cat.jpg")  # ("cat", 0.97)``; a list of them, or an array N x H x W x C or
N x C x H x W, a list of answers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autofreeze.core.backbones import Backbone
from autofreeze.data.images import ImageSet, to_tensors
from autofreeze.errors import DatasetError, WeightsError


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def read_sidecar(path: Path) -> dict[str, Any]:
    side = sidecar_path(Path(path))
    if not side.is_file():
        raise WeightsError(
            f"checkpoint sidecar {str(side)!r} not found (written by `autofreeze train`)"
        )
    return json.loads(side.read_text())


def load_checkpoint(path: Path) -> tuple[Backbone, dict[str, Any]]:
    """Rebuild the trained backbone of a checkpoint with its sidecar's description."""
    from autofreeze.plugins.registry import get_registry

    info = read_sidecar(path)
    backbone = get_registry().create_backbone(
        info["backbone"],
        num_classes=len(info["classes"]),
        weights=str(path),
        granularity=info.get("granularity", "block"),
    )
    backbone.model.eval()
    return backbone, info


CHANNELS = (1, 3, 4)  # grey, RGB, RGBA
SHAPES = (
    "one image H x W, H x W x C or C x H x W (C = 1, 3 or 4), a batch N x H x W x C or "
    "N x C x H x W, or a list of images (paths, PIL images, arrays)"
)


def _channels_last(arr: np.ndarray) -> np.ndarray:
    """One image's array as H x W or H x W x C (a C x H x W array is turned round)."""
    if arr.ndim == 3 and arr.shape[-1] not in CHANNELS and arr.shape[0] in CHANNELS:
        return arr.transpose(1, 2, 0)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in CHANNELS):
        return arr
    raise DatasetError(f"an image array of shape {tuple(arr.shape)}: expected {SHAPES}")


def as_images(images: Any) -> tuple[list[Any], bool]:
    """``images`` as a list of single images, and whether one image was given (see
    :data:`SHAPES`); torch tensors are read as arrays."""
    from PIL import Image

    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if isinstance(images, str | os.PathLike | Image.Image):
        return [images], True
    if isinstance(images, np.ndarray):
        if images.ndim in (2, 3):
            return [_channels_last(images)], True
        if images.ndim == 4 and (images.shape[-1] in CHANNELS or images.shape[1] in CHANNELS):
            return [_channels_last(a) for a in images], False
        raise DatasetError(f"an image array of shape {tuple(images.shape)}: expected {SHAPES}")
    if not isinstance(images, Sequence):
        raise DatasetError(f"images of type {type(images).__name__}: expected {SHAPES}")
    return [_channels_last(a) if isinstance(a, np.ndarray) else a for a in images], False


@dataclass(repr=False)
class Model:
    """A trained backbone with the classes and the preprocessing it was trained with."""

    module: nn.Module
    classes: list[str]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: dict[str, Any]
    path: Path | None = None  # the checkpoint it was loaded from

    def __repr__(self) -> str:
        """A few lines: backbone, classes, input, plan, where it came from (``model.module``
        is the whole torch module)."""
        info, shown = self.info, ", ".join(self.classes[:8])
        more = f", … ({len(self.classes)} in all)" if len(self.classes) > 8 else ""
        plan = info.get("plan") or {}
        frozen = ", ".join(info.get("frozen_blocks") or []) or "none"
        where = f"{self.path}" if self.path else "memory"
        study = f", study {info['study']!r}" if info.get("study") else ""
        return (
            f"Model({info.get('backbone', type(self.module).__name__)}, "
            f"{len(self.classes)} classes: {shown}{more}; input {self.image_size}x"
            f"{self.image_size} RGB\n"
            f"  plan: boundary {plan.get('boundary', '?')} (frozen: {frozen}), schedule "
            f"{plan.get('schedule', '?')}; trained on {info.get('trained_on', '?')}\n"
            f"  from {where}{study})"
        )

    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        """Images (paths, PIL images or arrays) as the normalised batch the model expects."""
        split = to_tensors(
            ImageSet(list(images), [0] * len(images)),
            mean=self.mean,
            std=self.std,
            size=self.image_size,
        )
        return split.batch(slice(None))

    @torch.no_grad()
    def probabilities(self, images: Sequence[Any], batch_size: int = 64) -> torch.Tensor:
        """Class probabilities, one row per image."""
        self.module.eval()
        rows = [
            self.module(self.preprocess(images[i : i + batch_size])).float().softmax(1)
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(rows) if rows else torch.zeros(0, len(self.classes))

    def predict(self, images: Any) -> Any:
        """The most likely class of each image and its probability: ``(class, probability)``
        for one image, a list of them for several (the shapes taken: :data:`SHAPES`)."""
        batch, one = as_images(images)
        probs = self.probabilities(batch)
        best = probs.argmax(1)
        out = [(self.classes[int(i)], float(probs[n, i])) for n, i in enumerate(best)]
        return out[0] if one else out

    def evaluate(self, images: ImageSet) -> dict[str, Any]:
        """Accuracy, per-class accuracy and the confusion matrix (rows: true, columns:
        predicted) on labelled images whose labels index :attr:`classes`."""
        predicted = self.probabilities(images.images).argmax(1).tolist()
        k = len(self.classes)
        confusion = [[0] * k for _ in range(k)]
        for truth, guess in zip(images.labels, predicted, strict=True):
            confusion[truth][guess] += 1
        per_class = {
            c: {"images": sum(row), "accuracy": row[i] / sum(row) if sum(row) else None}
            for i, (c, row) in enumerate(zip(self.classes, confusion, strict=True))
        }
        correct = sum(confusion[i][i] for i in range(k))
        return {
            "images": len(images),
            "accuracy": correct / max(1, len(images)),
            "per_class": per_class,
            "confusion": confusion,
            "classes": self.classes,
        }


def load(path: str | Path) -> Model:
    """Load a checkpoint written by ``autofreeze train`` (its ``.json`` sidecar beside it)."""
    backbone, info = load_checkpoint(Path(path))
    return Model(
        module=backbone.model,
        classes=list(info["classes"]),
        image_size=int(info["image_size"]),
        mean=tuple(info["mean"]),
        std=tuple(info["std"]),
        info=info,
        path=Path(path),
    )


def seen_in_training(model: Model, split: str) -> bool:
    """Whether the images of ``split`` trained the model (its sidecar's ``trained_on``:
    ``train`` or ``train+val``): its accuracy there is not a measure on new images."""
    return split in str(model.info.get("trained_on") or "train").split("+")


def evaluation_images(model: Model, split: str = "test", data: str | None = None) -> ImageSet:
    """Labelled images to evaluate on: a folder of class sub-folders (``data``), or a split of
    the dataset the model was trained on (recorded in its sidecar)."""
    from autofreeze.plugins.registry import get_registry

    if data is not None:
        from autofreeze.data.folders import IMAGE_EXTENSIONS, scan_classes

        folder = Path(data).expanduser()
        if not folder.is_dir():
            raise DatasetError(f"--data {data}: not a folder of class sub-folders")
        classes, files = scan_classes(folder, IMAGE_EXTENSIONS)
        unknown = sorted(set(classes) - set(model.classes))
        if unknown:
            raise DatasetError(
                f"{data}: class folders the model does not know: {', '.join(unknown)} "
                f"(its classes: {', '.join(model.classes)})"
            )
        index = {c: i for i, c in enumerate(model.classes)}
        return ImageSet([f for f, _ in files], [index[classes[y]] for _, y in files])
    spec = dict(model.info.get("dataset") or {})
    if "name" not in spec:
        raise DatasetError("the checkpoint records no dataset; give --data PATH")
    dataset = get_registry().create_dataset(spec.pop("name"), **spec)
    images = getattr(dataset, split, None)
    if images is None:
        raise DatasetError(
            f"dataset {dataset.name!r} has no {split} split (imagefolder: a test/ folder beside "
            "train/ and val/; csv: rows with split = test; digits: test_per_class); "
            "or give --data PATH"
        )
    return images
