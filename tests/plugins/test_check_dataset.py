"""``autofreeze.testing.check_dataset``: every built-in dataset passes it, and it names what a
broken dataset gets wrong (the same call the dataset plugins' suites make)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from autofreeze.data.images import ImageDataset, ImageSet
from autofreeze.plugins.registry import Registry
from autofreeze.testing import check_dataset


def folder_of_images(root, classes=("cat", "dog", "owl"), per_class=4):
    for c, name in enumerate(classes):
        for i in range(per_class):
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (10, 7), (40 * c, 10 * i, 99)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("name", "options", "test_split"),
    [
        ("digits", {}, None),
        ("digits", {"test_per_class": 2}, True),
        ("synthetic", {"num_classes": 3, "train_per_class": 4, "val_per_class": 2}, None),
        ("imagefolder", {"path": "{dir}/images"}, False),
        ("csv", {"path": "{dir}/labels.csv"}, False),
    ],
)
def test_every_built_in_dataset_passes_the_contract(tmp_path, name, options, test_split):
    folder_of_images(tmp_path / "images")
    rows = [f"images/{c}/{i}.png,{c}" for c in ("cat", "dog", "owl") for i in range(4)]
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    options = {k: v.format(dir=tmp_path) if isinstance(v, str) else v for k, v in options.items()}
    summary = check_dataset(Registry().create_dataset(name, **options), expect_test=test_split)
    assert summary["train"] > 0 and summary["val"] > 0


def good() -> ImageDataset:
    img = np.zeros((6, 6, 3), dtype=np.uint8)
    return ImageDataset(
        "toy", ["a", "b"], ImageSet([img] * 4, [0, 1, 0, 1]), ImageSet([img] * 2, [0, 1])
    )


@pytest.mark.parametrize(
    ("breaks", "words"),
    [
        (lambda d: setattr(d, "classes", ["a", "a"]), "same name"),
        (lambda d: setattr(d, "classes", ["a"]), "at least two"),
        (lambda d: setattr(d.train, "labels", [0, 1, 0, 2]), "outside 0..1"),
        (lambda d: setattr(d.train, "labels", [0, 1, 0, "b"]), "not an integer"),
        (lambda d: setattr(d.train, "labels", [0, 0, 0, 0]), "'b' has no training image"),
        (lambda d: setattr(d.val, "labels", [0]), "2 images, 1 labels"),
        (lambda d: setattr(d.val, "images", ["/nonexistent/x.png"] * 2), "does not decode"),
        (lambda d: setattr(d, "val", ImageSet([], [])), "val split is empty"),
    ],
)
def test_it_names_what_a_broken_dataset_gets_wrong(breaks, words):
    dataset = good()
    check_dataset(dataset)
    breaks(dataset)
    with pytest.raises(AssertionError, match=words):
        check_dataset(dataset)


def test_a_test_split_is_checked_when_expected():
    with pytest.raises(AssertionError, match="a test split was expected"):
        check_dataset(good(), expect_test=True)
