"""The target tasks of benchmarks/search_quality.py: offline datasets with a held-out test split,
registered by a benchmark plugin (``digits_variant``, ``photo_patches``).

The source backbone of every task is the quickstart's resnet10t trained on scikit-learn's
digits 0-4. The tasks move away from it in different directions: fewer labels, more classes,
changed inputs, changed labels, natural images instead of digits, larger images.

``photo_patches`` needs scikit-image (the photographs and textures bundled in ``skimage.data``,
no download); :func:`missing` names what a task needs that is not installed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DIGITS = [5, 6, 7, 8, 9]  # the source saw 0-4
# photographs and textures bundled with scikit-image (``chelsea`` and ``cat`` are one photo)
PICTURES = [
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "moon",
    "rocket",
]
GRID = 3  # each picture is cut into GRID x GRID regions, each region in one split only
REGIONS = {"train": 5, "val": 2, "test": 2}  # of the GRID * GRID regions per picture


@dataclass(frozen=True)
class Task:
    """One target task: its dataset table, its image size and what it tests.

    ``trials`` is the vanilla loop's trial count at the default settings, chosen so that its
    search takes about 20 s on the benchmark machine (the other methods get that wall time).
    """

    dataset: dict[str, Any]
    what: str
    image_size: int = 32
    trials: int = 15
    needs: tuple[str, ...] = field(default=())

    def options(self, seed: int) -> dict[str, Any]:
        """The ``[dataset]`` table for one seed: the seed draws the images (and regions)."""
        return {**self.dataset, "seed": seed}


def _digits(what: str, trials: int = 15, **options: Any) -> Task:
    base = {"name": "digits_variant", "classes": DIGITS, "train_per_class": 15}
    return Task({**base, **options}, what, trials=trials)


TASKS: dict[str, Task] = {
    "small_similar": _digits("digits 5-9, 15 images per class: a small target like the source"),
    "larger_similar": _digits(
        "digits 5-9, 40 images per class: a larger target (scratch may do well)",
        trials=7,
        train_per_class=40,
    ),
    "few_labels": _digits(
        "digits 5-9, 5 images per class: very few labels", trials=20, train_per_class=5
    ),
    "inverted": _digits(
        "digits 5-9 with inverted intensities: inputs differ from the source", transform="invert"
    ),
    "rotated": _digits(
        "digits 5-9 rotated by 90 degrees: inputs differ from the source", transform="rotate"
    ),
    "parity": _digits(
        "digits 5-9 labelled even/odd: the labels differ from any digit identity",
        transform="parity",
    ),
    "all_digits": _digits(
        "all ten digits, 15 images per class: the source's five classes and five new ones",
        trials=8,
        classes=list(range(10)),
        val_per_class=20,
    ),
    "photos": Task(
        {"name": "photo_patches", "patch": 64, "train_per_class": 10},
        f"patches of {len(PICTURES)} scikit-image photographs and textures, 10 per class, "
        "test patches from regions no search saw: natural images, unlike the source",
        trials=12,
        needs=("skimage",),
    ),
    "photos_64": Task(
        {"name": "photo_patches", "patch": 64, "train_per_class": 10},
        "the same patches at 64 px instead of 32: four times the pixels, where caching the "
        "frozen prefix pays most",
        image_size=64,
        trials=6,
        needs=("skimage",),
    ),
}


def missing(names: list[str]) -> list[str]:
    """The modules the tasks ``names`` need that are not installed."""
    needed = {m for n in names for m in TASKS[n].needs}
    return sorted(m for m in needed if importlib.util.find_spec(m) is None)


# -- datasets ------------------------------------------------------------------------------------
def digits_variant(
    *,
    classes: list[int],
    train_per_class: int,
    val_per_class: int = 30,
    test_per_class: int = 60,
    transform: str = "none",
    seed: int = 0,
) -> Any:
    """Digits with a held-out test split, their inputs or labels changed."""
    from autofreeze.data.images import ImageDataset, ImageSet
    from autofreeze.plugins.builtin.datasets import digits

    ds = digits(
        classes=classes,
        train_per_class=train_per_class,
        val_per_class=val_per_class,
        test_per_class=test_per_class,
        seed=seed,
    )

    def change(images: ImageSet) -> ImageSet:
        pictures = list(images.images)
        labels = list(images.labels)
        if transform == "invert":
            pictures = [255 - p for p in pictures]
        elif transform == "rotate":
            pictures = [np.ascontiguousarray(np.rot90(p)) for p in pictures]
        elif transform == "parity":
            labels = [classes[y] % 2 for y in labels]
        return ImageSet(pictures, labels)

    names = ["even", "odd"] if transform == "parity" else ds.classes
    return ImageDataset("digits_variant", names, change(ds.train), change(ds.val), change(ds.test))


def _regions(shape: tuple[int, ...], rng: np.random.Generator) -> dict[str, list[tuple]]:
    """The picture's GRID x GRID regions (top, left, height, width), dealt to the splits."""
    h, w = shape[0] // GRID, shape[1] // GRID
    cells = [(r * h, c * w, h, w) for r in range(GRID) for c in range(GRID)]
    order = rng.permutation(len(cells))
    out, start = {}, 0
    for split, n in REGIONS.items():
        out[split] = [cells[i] for i in order[start : start + n]]
        start += n
    return out


def _patches(
    picture: np.ndarray, regions: list[tuple], n: int, patch: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """``n`` square patches, each inside one of ``regions`` (so never across two splits)."""
    out = []
    for i in range(n):
        top, left, h, w = regions[i % len(regions)]
        side = min(patch, h, w)
        y = top + int(rng.integers(0, h - side + 1))
        x = left + int(rng.integers(0, w - side + 1))
        out.append(np.ascontiguousarray(picture[y : y + side, x : x + side]))
    return out


def photo_patches(
    *,
    patch: int = 64,
    train_per_class: int = 10,
    val_per_class: int = 15,
    test_per_class: int = 40,
    pictures: list[str] = PICTURES,  # noqa: B006 (never changed)
    seed: int = 0,
) -> Any:
    """Which photograph or texture of ``skimage.data`` a patch comes from.

    Each picture is cut into a 3 x 3 grid of regions, dealt (by ``seed``) to train (5), val (2)
    and test (2): a test patch never overlaps a patch that any search saw. Patches are
    ``patch`` pixels square (smaller where a region is smaller), resized by the pipeline.
    """
    import skimage.data

    from autofreeze.data.images import ImageDataset, ImageSet

    rng = np.random.default_rng(seed)
    wanted = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    splits: dict[str, tuple[list, list]] = {s: ([], []) for s in wanted}
    for label, name in enumerate(pictures):
        picture = np.asarray(getattr(skimage.data, name)())
        if picture.dtype != np.uint8:  # e.g. a float or boolean picture: to 8 bits
            picture = (255 * (picture.astype(float) / max(float(picture.max()), 1e-9))).astype(
                np.uint8
            )
        for split, regions in _regions(picture.shape, rng).items():
            cut = _patches(picture, regions, wanted[split], patch, rng)
            splits[split][0].extend(cut)
            splits[split][1].extend([label] * len(cut))
    sets = {s: ImageSet(images, labels) for s, (images, labels) in splits.items()}
    return ImageDataset("photo_patches", list(pictures), sets["train"], sets["val"], sets["test"])


class Plugin:
    """The benchmark's datasets, registered for the duration of a run."""

    from autofreeze.hookspecs import hookimpl

    @hookimpl
    def register_datasets(self, register: Any) -> None:
        register("digits_variant", digits_variant, "benchmark: digits with a changed task")
        register("photo_patches", photo_patches, "benchmark: patches of skimage's photographs")
