"""Built-in datasets that need no files and no network: ``digits`` (scikit-learn's bundled
8 x 8 handwritten digits) and ``synthetic`` (generated stripes)."""

from __future__ import annotations

import colorsys
from typing import Annotated

import numpy as np
from pydantic import AfterValidator, Field, Strict

from autofreeze.data.images import ImageDataset, ImageSet, stratified_split
from autofreeze.data.options import Count, Seed, validate_options
from autofreeze.errors import ConfigError
from autofreeze.plugins.builtin._files import subset


def _digits(value: list[int]) -> list[int]:
    out_of_range = [c for c in value if not 0 <= c <= 9]
    if out_of_range:
        raise ValueError(f"holds {out_of_range} but digits are 0..9 (e.g. classes = [0, 1])")
    duplicates = sorted({c for c in value if value.count(c) > 1})
    if duplicates:
        raise ValueError(f"lists {duplicates} more than once")
    if len(value) < 2:
        raise ValueError(f"needs at least two digits, not {value}")
    return value


Digits = Annotated[list[Annotated[int, Strict()]], AfterValidator(_digits)]


def _check_count(name: str, value: int, most: int, why: str) -> None:
    """A count whose upper limit depends on the data."""
    if value > most:
        raise ConfigError(f"option {name!r} must be an integer 1..{most}, not {value!r} ({why})")


# -- digits --------------------------------------------------------------------------------------
@validate_options
def digits(
    *,
    classes: Digits = list(range(10)),  # noqa: B006 (validated into a new list per call)
    train_per_class: Count | None = None,
    val_per_class: Count | None = None,
    test_per_class: Annotated[int, Strict(), Field(ge=0)] = 0,
    seed: Seed = 0,
) -> ImageDataset:
    """scikit-learn's bundled handwritten digits: 1797 grayscale 8 x 8 images, offline.

    Args:
        classes: digits to keep, e.g. ``[5, 6, 7, 8, 9]`` (default all ten); labels follow this
            order and the class names are the digit strings.
        train_per_class: labelled training images per class, sampled with ``seed``; the rest
            of each class is validation. Default: a stratified 80/20 split.
        val_per_class: validation images per class, sampled from the rest (default: all of it).
        test_per_class: images per class held out first as a test split the search never
            sees (default 0: no test split); train and validation come from the others.
        seed: seed of the sampling.
    """
    from sklearn.datasets import load_digits

    digits_kept = list(classes)
    bunch = load_digits()
    images = np.asarray(bunch.images)
    target = np.asarray(bunch.target)
    members = [np.flatnonzero(target == d) for d in digits_kept]
    smallest = min(len(m) for m in members)
    why = f"the smallest kept class has {smallest} images and each split needs one"
    if test_per_class:
        _check_count("test_per_class", test_per_class, smallest - 2, why)
    smallest -= test_per_class
    if train_per_class is not None:
        _check_count("train_per_class", train_per_class, smallest - 1, why)
    room = smallest - (1 if train_per_class is None else train_per_class)
    if val_per_class is not None:
        _check_count("val_per_class", val_per_class, room, why)

    # 0..16 -> 0..255, so the arrays are ordinary 8-bit images for load_image
    pixels = (images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
    rng = np.random.default_rng(seed)
    train_idx: list[int] = []
    val_idx: list[int] = []
    test_idx: list[int] = []
    pools = []
    new_label = np.full(10, -1)
    for label, (digit, idx) in enumerate(zip(digits_kept, members, strict=True)):
        new_label[digit] = label
        order = rng.permutation(idx)
        if test_per_class:  # the last ones of the permutation: train/val draws stay the same
            test_idx.extend(order[len(order) - test_per_class :])
            order = order[: len(order) - test_per_class]
        pools.append(order)
        if train_per_class is None and val_per_class is None:
            continue
        if train_per_class is None:
            assert val_per_class is not None
            val_idx.extend(order[:val_per_class])
            train_idx.extend(order[val_per_class:])
        else:
            rest = order[train_per_class:]
            train_idx.extend(order[:train_per_class])
            val_idx.extend(rest if val_per_class is None else rest[:val_per_class])
    kept = np.concatenate([np.sort(p) for p in pools])  # without a test split: all, in order
    if train_per_class is None and val_per_class is None:
        tr, va = stratified_split(target[kept], 0.2, seed)
        train_idx, val_idx = list(kept[tr]), list(kept[va])
    labels = new_label[target]
    return ImageDataset(
        name="digits",
        classes=[str(d) for d in digits_kept],
        train=subset(pixels, labels, sorted(train_idx)),
        val=subset(pixels, labels, sorted(val_idx)),
        test=subset(pixels, labels, sorted(test_idx)) if test_idx else None,
    )


# -- synthetic -----------------------------------------------------------------------------------
@validate_options
def synthetic(
    *,
    num_classes: Annotated[int, Strict(), Field(ge=2, le=100)] = 3,
    train_per_class: Count = 16,
    val_per_class: Count = 8,
    image_size: Annotated[int, Strict(), Field(ge=4, le=512)] = 32,
    seed: Seed = 0,
) -> ImageDataset:
    """Generated RGB images for smoke tests: each class has its own hue and stripe pattern.

    Brightness, stripe phase and pixel noise vary per image, so a small model can learn the
    classes but not trivially memorise one image. The same options always give the same images.

    Args:
        num_classes: number of classes (2..100).
        train_per_class: training images per class.
        val_per_class: validation images per class.
        image_size: height and width in pixels (4..512).
        seed: seed of the generator.
    """
    rng = np.random.default_rng(seed)
    sets = []
    for per_class in (train_per_class, val_per_class):
        images, labels = [], []
        for _ in range(per_class):
            for c in range(num_classes):
                images.append(_stripes(c, num_classes, image_size, rng))
                labels.append(c)
        sets.append(ImageSet(images, labels))
    return ImageDataset(
        name="synthetic",
        classes=[f"class_{c}" for c in range(num_classes)],
        train=sets[0],
        val=sets[1],
    )


def _stripes(c: int, num_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    colour = np.array(colorsys.hsv_to_rgb(c / num_classes, 0.8, 1.0), dtype=np.float32)
    period = 2 + 2 * (c % 4)  # pixels per stripe cycle, from 2 to 8
    coords = np.arange(size, dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * coords / period + phase)
    pattern = np.tile(wave, (size, 1)) if c % 2 else np.tile(wave[:, None], (1, size))
    brightness = rng.uniform(0.6, 1.0)
    img = pattern[..., None] * colour * brightness * 255.0
    img += rng.normal(0.0, 20.0, size=img.shape)
    return img.clip(0, 255).astype(np.uint8)
