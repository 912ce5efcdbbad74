"""Image datasets: what dataset plugins return, and their conversion to tensors.

A dataset factory returns an :class:`ImageDataset`: class names plus a train and a validation
:class:`ImageSet`. Images may be PIL images, ``numpy`` arrays (H x W or H x W x C) or file paths;
they are decoded, converted to RGB and resized by :func:`to_tensors` (or, for datasets of files,
once into a file by :mod:`autofreeze.data.decode`) and normalised per batch following the backbone's
pretrained config (mean, std, input size; the size can be overridden).

Arrays must already be in the 8-bit range: ``uint8`` (or another integer type) in ``0..255``, or
floats in ``[0, 1]``. Datasets with other ranges (scikit-learn's digits are ``0..16``) scale
their arrays in their factory, where the range is known. torch is imported only inside
functions, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autofreeze.data.options import ValFraction, check_option
from autofreeze.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    from PIL import Image

    from autofreeze.data.tensors import TensorSplit


@dataclass
class ImageSet:
    """Images and integer labels (indices into :attr:`ImageDataset.classes`).

    ``identity`` says what the images are when they are not files, so that their decoded
    pixels can be kept on disk and shared (e.g. a Hugging Face dataset's fingerprint); images
    that are files are identified by path, size and modification time. Others (arrays, PIL
    images in memory) are decoded in memory by each process.
    """

    images: Sequence[Any]
    labels: Sequence[int]
    identity: str | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ImageDataset:
    """A classification dataset split into train and validation, and maybe a held-out test set."""

    name: str
    classes: list[str]
    train: ImageSet
    val: ImageSet
    test: ImageSet | None = None  # held out: never seen by the search (evaluate --split test)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> dict[str, Any]:
        """Classes, split sizes and images per class and split (what `autofreeze dataset` shows)."""
        splits = {"train": self.train, "val": self.val}
        if self.test is not None:
            splits["test"] = self.test
        per_class = {split: dict.fromkeys(self.classes, 0) for split in splits}
        for split, images in splits.items():
            for label in images.labels:
                per_class[split][self.classes[label]] += 1
        sizes = {split: len(images) for split, images in splits.items()}
        return {"classes": self.classes, **sizes, "per_class": per_class}


# -- decoding ------------------------------------------------------------------------------------
def load_image(item: Any) -> Image.Image:
    """Decode one image to an RGB PIL image.

    Args:
        item: a PIL image; a numpy array of shape H x W or H x W x C (C in 1, 3, 4), either
            integer in ``0..255`` or float in ``[0, 1]``; or a ``str``/``Path`` to an image file.

    Raises:
        DatasetError: the file is missing or cannot be decoded (the message names the file), or
            the array has an unsupported shape or value range.
    """
    from PIL import Image

    if isinstance(item, Image.Image):
        return _to_rgb(item)
    if isinstance(item, np.ndarray):
        return _array_to_image(item)
    if isinstance(item, str | os.PathLike):
        return _open_file(Path(item))
    raise DatasetError(
        f"unsupported image type {type(item).__name__}; "
        "expected a PIL image, a numpy array or a file path"
    )


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):  # 16-bit grayscale: PIL's convert would clip at 255
        arr = np.asarray(img, dtype=np.float32) / 257.0
        return _array_to_image(arr.round().astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def _array_to_image(arr: np.ndarray) -> Image.Image:
    from PIL import Image

    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise DatasetError(
            f"image array of shape {tuple(arr.shape)} is not H x W or H x W x C "
            "(channels last, C = 1, 3 or 4)"
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if arr.size and (not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0):
            raise DatasetError(
                "float image arrays must hold values in [0, 1]; "
                f"got {np.nanmin(arr):g}..{np.nanmax(arr):g} (scale them in the dataset factory)"
            )
        arr = (arr * 255.0).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.dtype != np.uint8:
            if arr.size and (arr.min() < 0 or arr.max() > 255):
                raise DatasetError(
                    "integer image arrays must hold values in 0..255; "
                    f"got {arr.min()}..{arr.max()} (scale them in the dataset factory)"
                )
            arr = arr.astype(np.uint8)
    else:
        raise DatasetError(f"unsupported image array dtype {arr.dtype}")
    img = Image.fromarray(np.ascontiguousarray(arr))
    return img if img.mode == "RGB" else img.convert("RGB")


def _open_file(path: Path) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise DatasetError(f"image file not found: {path}")
    if path.is_dir():
        raise DatasetError(f"expected an image file, found a directory: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return _to_rgb(img).copy()
    except UnidentifiedImageError:
        reason = "not a recognised image format"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
    raise DatasetError(f"cannot decode image file {path} ({reason}); replace or remove it")


# -- tensors -------------------------------------------------------------------------------------
def decode_image(item: Any, size: int) -> np.ndarray:
    """One image as uint8 3 x ``size`` x ``size``: RGB, its shorter side resized to ``size``
    (bicubic, antialiased) and centre-cropped. Raises :class:`DatasetError` naming a file."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    img = load_image(item)
    if img.size != (size, size):
        img = F.resize(img, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
        img = F.center_crop(img, [size, size])
    return np.asarray(img).transpose(2, 0, 1)


def check_size(size: Any) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"image size must be a positive integer, not {size!r}")


def to_tensors(
    images: ImageSet, *, mean: Sequence[float], std: Sequence[float], size: int
) -> TensorSplit:
    """Decode and resize every image of ``images`` into memory, to be normalised per batch.

    Each image is converted to RGB, its shorter side resized to ``size`` (bicubic, antialiased)
    and centre-cropped to ``size x size`` (:func:`decode_image`); the split keeps the uint8
    pixels with ``mean`` and ``std``, and :meth:`TensorSplit.batch` gives ``(x / 255 - mean) /
    std``. Large datasets are decoded once into a file instead (:mod:`autofreeze.data.decode`).

    Args:
        images: the images and labels to convert.
        mean: per-channel mean (3 values), as in the backbone's pretrained config.
        std: per-channel standard deviation (3 values).
        size: output height and width in pixels.

    Returns:
        ``x`` uint8 of shape (N, 3, size, size) and ``y`` int64 of shape (N,).
    """
    import torch

    from autofreeze.data.tensors import TensorSplit

    check_size(size)
    mean, std = check_norm(mean, std)
    if len(images.images) != len(images.labels):
        raise DatasetError(
            f"{len(images.images)} images but {len(images.labels)} labels; they must match"
        )
    batch = np.empty((len(images.images), 3, size, size), dtype=np.uint8)
    for i, item in enumerate(images.images):
        try:
            batch[i] = decode_image(item, size)
        except DatasetError as exc:
            if isinstance(item, str | os.PathLike):
                raise  # the message already names the file
            raise DatasetError(f"image {i}: {exc}") from exc
    y = torch.as_tensor(np.asarray(images.labels, dtype=np.int64).reshape(-1))
    return TensorSplit(torch.from_numpy(batch), y, mean=mean, std=std)


def check_norm(
    mean: Sequence[float], std: Sequence[float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    for key, values in (("mean", mean), ("std", std)):
        if len(values) != 3:
            raise ConfigError(f"{key} needs 3 values (one per RGB channel), not {list(values)}")
    if any(s <= 0 for s in std):
        raise ConfigError(f"std values must be positive, not {list(std)}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# -- splitting -----------------------------------------------------------------------------------
def stratified_split(
    labels: Sequence[Any], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into train and validation, keeping each class's share.

    About ``val_fraction`` of all examples go to validation, allotted to the classes in
    proportion to their size (largest remainders first), and every class keeps at least one
    training example. The same labels, fraction and seed always give the same split.

    Args:
        labels: one label per example (any hashable, sortable values).
        val_fraction: share of examples to hold out, ``0 < val_fraction < 1``
            (:data:`ValFraction`, the same rule as the datasets' option).
        seed: seed of the random choice of examples within each class.

    Returns:
        ``(train_idx, val_idx)``: sorted int64 index arrays, disjoint, covering all examples.
    """
    val_fraction = check_option("val_fraction", ValFraction, val_fraction)
    y = np.asarray(labels)
    n = len(y)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    classes, inverse = np.unique(y, return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    sizes = np.array([len(m) for m in members])
    caps = sizes - 1  # each class keeps one training example

    ideal = sizes * val_fraction
    n_val = np.minimum(np.floor(ideal).astype(np.int64), caps)
    total = min(int(round(n * val_fraction)), int(caps.sum()))
    if total == 0:
        total = min(1, int(caps.sum()))
    order = sorted(range(len(classes)), key=lambda c: (-(ideal[c] - np.floor(ideal[c])), c))
    while n_val.sum() < total:
        for c in order:
            if n_val.sum() >= total:
                break
            if n_val[c] < caps[c]:
                n_val[c] += 1

    rng = np.random.default_rng(seed)
    val_parts = [rng.permutation(m)[: n_val[c]] for c, m in enumerate(members)]
    val_idx = np.sort(np.concatenate(val_parts)).astype(np.int64)
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask).astype(np.int64), val_idx
