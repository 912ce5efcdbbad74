"""Built-in datasets, decoding, tensor conversion and the stratified split."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
from PIL import Image
from pydantic import Field

from autofreeze.data.images import ImageSet, load_image, stratified_split, to_tensors
from autofreeze.errors import ConfigError, DatasetError
from autofreeze.plugins.builtin.datasets import csv, digits, imagefolder, synthetic

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def write_image(path: Path, colour: tuple[int, int, int] = (10, 20, 30), size=(8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def make_folder(root: Path, counts: dict[str, int], suffix: str = ".png") -> Path:
    for name, n in counts.items():
        for i in range(n):
            write_image(root / name / f"{i}{suffix}", colour=(i, 2 * i, 3 * i))
    return root


# -- load_image ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "item",
    [
        Image.new("L", (5, 4), 7),
        Image.new("RGBA", (5, 4), (1, 2, 3, 4)),
        np.zeros((4, 5), dtype=np.uint8),
        np.zeros((4, 5, 1), dtype=np.uint8),
        np.zeros((4, 5, 4), dtype=np.uint8),
        np.full((4, 5, 3), 0.5, dtype=np.float32),
        np.full((4, 5), 200, dtype=np.int64),
    ],
)
def test_load_image_gives_rgb(item):
    img = load_image(item)
    assert img.mode == "RGB"
    assert img.size == (5, 4)


def test_load_image_scales_arrays():
    assert load_image(np.full((2, 2), 1.0)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.full((2, 2), 0.5)).getpixel((0, 0)) == (128, 128, 128)
    assert load_image(np.full((2, 2, 3), 9, dtype=np.uint8)).getpixel((1, 1)) == (9, 9, 9)


def test_load_image_reads_files(tmp_path):
    path = write_image(tmp_path / "a.png", colour=(1, 2, 3))
    assert load_image(path).getpixel((0, 0)) == (1, 2, 3)
    assert load_image(str(path)).size == (8, 6)


@pytest.mark.parametrize(
    ("item", "words"),
    [
        (np.zeros((3, 4, 5), dtype=np.uint8), "shape (3, 4, 5)"),
        (np.full((2, 2), 16.0), "[0, 1]"),
        (np.full((2, 2), 300), "0..255"),
        (42, "unsupported image type int"),
    ],
)
def test_load_image_rejects_bad_arrays(item, words):
    with pytest.raises(DatasetError, match=re.escape(words)):
        load_image(item)


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="image file not found") as info:
        load_image(tmp_path / "nope.png")
    assert str(tmp_path / "nope.png") in str(info.value)

    bad = tmp_path / "cat" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not a jpeg at all" * 10)
    with pytest.raises(DatasetError) as info:
        load_image(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)

    with pytest.raises(DatasetError) as info:
        to_tensors(ImageSet([str(bad)], [0]), mean=MEAN, std=STD, size=8)
    assert str(bad) in str(info.value)


def test_truncated_file_names_the_file(tmp_path):
    good = write_image(tmp_path / "good.jpg", size=(64, 64))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DatasetError, match="cut.jpg"):
        load_image(cut)


# -- to_tensors ----------------------------------------------------------------------------------
def test_to_tensors_shape_dtype_and_normalisation(tmp_path):
    images = [
        Image.new("RGB", (30, 20), (255, 0, 128)),
        np.full((8, 8), 255, dtype=np.uint8),
        str(write_image(tmp_path / "c.png", colour=(0, 0, 0), size=(7, 11))),
    ]
    split = to_tensors(ImageSet(images, [2, 0, 1]), mean=MEAN, std=STD, size=16)
    assert split.x.shape == (3, 3, 16, 16)  # kept as decoded: 1 byte per value, not 4
    assert str(split.x.dtype) == "torch.uint8" and str(split.y.dtype) == "torch.int64"
    assert split.y.tolist() == [2, 0, 1]
    assert len(split) == 3
    x = split.batch(slice(None))  # normalised per batch
    assert str(x.dtype) == "torch.float32" and x.shape == (3, 3, 16, 16)
    expected = [(1 - 0.5) / 0.25, (0 - 0.5) / 0.25, (128 / 255 - 0.5) / 0.25]
    for channel, value in enumerate(expected):
        assert x[0, channel].min().item() == pytest.approx(value, abs=1e-5)
        assert x[0, channel].max().item() == pytest.approx(value, abs=1e-5)
    assert x[1].mean().item() == pytest.approx(2.0, abs=1e-5)
    assert x[2].mean().item() == pytest.approx(-2.0, abs=1e-5)


def test_uint8_batches_equal_the_float_images_normalised_once():
    """What the trainer gets from the uint8 store, batch by batch and in any order, equals
    the float32 images ``(x / 255 - mean) / std`` computed once in float64 and rounded, to
    1e-6 (float32 rounding of one scale and one shift); the normalised copy too."""
    import torch

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(10)]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    split = to_tensors(ImageSet(arrays, list(range(10))), mean=mean, std=std, size=12)
    u8 = torch.from_numpy(np.stack([a.transpose(2, 0, 1) for a in arrays]))
    assert torch.equal(split.x, u8)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    reference = ((u8.double() / 255 - m.double()) / s.double()).float()
    rows = torch.tensor([7, 0, 3, 3, 9])
    assert torch.allclose(split.batch(rows), reference[rows], atol=1e-6, rtol=0)
    assert torch.allclose(torch.cat(list(split.chunks(4))), reference, atol=1e-6, rtol=0)
    assert torch.allclose(split.normalised().x, reference, atol=1e-6, rtol=0)


def test_to_tensors_resizes_shorter_side_then_centre_crops():
    arr = np.zeros((20, 60, 3), dtype=np.uint8)  # red | green | blue thirds
    arr[:, :20, 0] = arr[:, 20:40, 1] = arr[:, 40:, 2] = 255
    split = to_tensors(ImageSet([arr], [0]), mean=(0, 0, 0), std=(1, 1, 1), size=10)
    centre = split.batch(slice(None))[0, :, 2:8, 2:8]
    assert centre[1].min().item() > 0.9  # green survives the crop
    assert centre[0].max().item() < 0.1 and centre[2].max().item() < 0.1


def test_to_tensors_rejects_bad_arguments():
    images = ImageSet([np.zeros((4, 4), dtype=np.uint8)], [0])
    with pytest.raises(ConfigError, match="size"):
        to_tensors(images, mean=MEAN, std=STD, size=0)
    with pytest.raises(ConfigError, match="mean"):
        to_tensors(images, mean=(0.5,), std=STD, size=4)
    with pytest.raises(DatasetError, match="image 0"):
        to_tensors(ImageSet([np.zeros((4, 4, 2))], [0]), mean=MEAN, std=STD, size=4)


# -- stratified_split ----------------------------------------------------------------------------
def test_stratified_split_is_seeded_and_stratified():
    labels = [0] * 50 + [1] * 30 + [2] * 20
    train, val = stratified_split(labels, 0.2, seed=3)
    again_train, again_val = stratified_split(labels, 0.2, seed=3)
    assert train.tolist() == again_train.tolist() and val.tolist() == again_val.tolist()
    assert sorted(train.tolist() + val.tolist()) == list(range(100))
    assert np.bincount(np.asarray(labels)[val]).tolist() == [10, 6, 4]
    other_train, _ = stratified_split(labels, 0.2, seed=4)
    assert other_train.tolist() != train.tolist()


def test_stratified_split_keeps_a_training_example_per_class():
    labels = ["a"] * 2 + ["b"] * 1 + ["c"] * 3
    train, val = stratified_split(labels, 0.9, seed=0)
    train_labels = {labels[i] for i in train}
    assert train_labels == {"a", "b", "c"}
    assert len(val) == 3  # a: 1, b: 0, c: 2


def test_stratified_split_holds_out_something_for_small_sets():
    train, val = stratified_split([0, 0, 1, 1], 0.2, seed=0)
    assert len(val) == 1 and len(train) == 3


def test_stratified_split_rejects_bad_fraction():
    with pytest.raises(ConfigError, match="val_fraction"):
        stratified_split([0, 1], 1.0, seed=0)


# -- imagefolder ---------------------------------------------------------------------------------
def test_imagefolder_splits_class_folders(tmp_path):
    root = make_folder(tmp_path / "data", {"dog": 10, "cat": 5, "bird": 5})
    (root / "cat" / "notes.txt").write_text("not an image")
    write_image(root / "cat" / ".hidden.png")
    ds = imagefolder(root, val_fraction=0.2, seed=1)
    assert ds.classes == ["bird", "cat", "dog"]
    assert (len(ds.train), len(ds.val)) == (16, 4)
    assert sorted(ds.val.labels) == [0, 1, 2, 2]
    assert all(isinstance(p, str) and Path(p).exists() for p in ds.train.images)
    assert ds == imagefolder(root, val_fraction=0.2, seed=1)


def test_imagefolder_uses_train_and_val_folders(tmp_path):
    make_folder(tmp_path / "train", {"a": 4, "b": 3})
    make_folder(tmp_path / "val", {"a": 1, "b": 2})
    ds = imagefolder(tmp_path)
    assert ds.classes == ["a", "b"]
    assert sorted(ds.train.labels) == [0, 0, 0, 0, 1, 1, 1]
    assert sorted(ds.val.labels) == [0, 1, 1]
    assert all("/val/" in p for p in ds.val.images)


def test_imagefolder_extensions(tmp_path):
    make_folder(tmp_path, {"a": 3, "b": 3}, suffix=".png")
    for name in ("a/x.JPG", "a/y.jpg", "b/x.jpg", "b/y.jpeg"):
        write_image(tmp_path / name)
    ds = imagefolder(tmp_path, extensions=["jpg", ".JPEG"])
    assert sorted(Path(p).name for p in ds.train.images + ds.val.images) == [
        "x.JPG",
        "x.jpg",
        "y.jpeg",
        "y.jpg",
    ]
    assert len(imagefolder(tmp_path, extensions=".jpg").val) == 1
    with pytest.raises(ConfigError, match="extensions"):
        imagefolder(tmp_path, extensions=[])


def test_imagefolder_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match="not found") as info:
        imagefolder(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(info.value)

    file = write_image(tmp_path / "one.png")
    with pytest.raises(DatasetError, match="is a file") as info:
        imagefolder(file)
    assert str(file) in str(info.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="expected class sub-folders like") as info:
        imagefolder(empty)
    assert f"{empty}/cat/" in str(info.value)

    loose = tmp_path / "loose"
    write_image(loose / "a.png")
    with pytest.raises(DatasetError, match="holds images directly"):
        imagefolder(loose)

    no_images = tmp_path / "noimg"
    (no_images / "cat").mkdir(parents=True)
    (no_images / "cat" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="has no images") as info:
        imagefolder(no_images)
    assert str(no_images / "cat") in str(info.value)


def test_imagefolder_mismatched_train_and_val(tmp_path):
    make_folder(tmp_path / "train", {"a": 2, "b": 2})
    make_folder(tmp_path / "val", {"a": 1, "c": 1})
    with pytest.raises(DatasetError, match="only in train: b; only in val: c"):
        imagefolder(tmp_path)


def test_imagefolder_train_without_val(tmp_path):
    make_folder(tmp_path / "train", {"a": 2, "b": 2})
    with pytest.raises(DatasetError, match="no val/"):
        imagefolder(tmp_path)


def test_imagefolder_too_small_to_split(tmp_path):
    make_folder(tmp_path, {"a": 1, "b": 1})
    with pytest.raises(DatasetError, match="validation"):
        imagefolder(tmp_path)


@pytest.mark.parametrize(
    ("options", "name"), [({"val_fraction": 1.5}, "val_fraction"), ({"seed": -1}, "seed")]
)
def test_imagefolder_bad_option_values(tmp_path, options, name):
    make_folder(tmp_path, {"a": 2, "b": 2})
    with pytest.raises(ConfigError, match=name):
        imagefolder(tmp_path, **options)


# -- csv -----------------------------------------------------------------------------------------
def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_csv_relative_paths_and_random_split(tmp_path):
    lines = ["path,label"]
    for i in range(10):
        write_image(tmp_path / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,{'zebra' if i < 6 else 'ant'}")
    ds = csv(write_csv(tmp_path / "data.csv", "\n".join(lines) + "\n"), val_fraction=0.2)
    assert ds.classes == ["ant", "zebra"]
    assert (len(ds.train), len(ds.val)) == (8, 2)
    assert sorted(ds.val.labels) == [0, 1]
    assert all(Path(p).is_file() for p in ds.train.images)


def test_csv_root_columns_and_split_column(tmp_path):
    images = tmp_path / "pictures"
    for i in range(5):
        write_image(images / f"{i}.png")
    text = (
        "file,kind,split\n0.png,1,train\n1.png,2,train\n2.png,1,val\n3.png,2,VAL\n4.png,1,train\n"
    )
    ds = csv(
        write_csv(tmp_path / "meta" / "list.csv", text),
        root=images,
        path_column="file",
        label_column="kind",
    )
    assert ds.classes == ["1", "2"]
    assert len(ds.train) == 3 and len(ds.val) == 2
    assert ds.val.images == [str(images / "2.png"), str(images / "3.png")]
    assert ds.val.labels == [0, 1]


def test_csv_errors_name_the_file_and_columns(tmp_path):
    with pytest.raises(DatasetError, match="not found") as info:
        csv(tmp_path / "missing.csv")
    assert "missing.csv" in str(info.value)

    empty = write_csv(tmp_path / "empty.csv", "")
    with pytest.raises(DatasetError, match="empty") as info:
        csv(empty)
    assert str(empty) in str(info.value)

    header_only = write_csv(tmp_path / "header.csv", "path,label\n")
    with pytest.raises(DatasetError, match="no rows"):
        csv(header_only)

    wrong = write_csv(tmp_path / "wrong.csv", "image,class\na.png,x\n")
    with pytest.raises(DatasetError) as info:
        csv(wrong)
    message = str(info.value)
    assert "'path' or 'label'" in message and "columns: image, class" in message
    assert str(wrong) in message


def test_csv_missing_image_and_bad_split(tmp_path):
    write_image(tmp_path / "a.png")
    missing = write_csv(tmp_path / "m.csv", "path,label\na.png,x\nb.png,y\n")
    with pytest.raises(DatasetError, match="line 3: image file not found") as info:
        csv(missing)
    assert str(tmp_path / "b.png") in str(info.value)

    bad_split = write_csv(tmp_path / "s.csv", "path,label,split\na.png,x,holdout\n")
    with pytest.raises(
        DatasetError, match="'split' must be 'train', 'val' or 'test', not 'holdout'"
    ):
        csv(bad_split)

    with pytest.raises(DatasetError, match="option 'root'"):
        csv(missing, root=tmp_path / "nowhere")


# -- digits --------------------------------------------------------------------------------------
def test_digits_few_shot():
    ds = digits(classes=[5, 6, 7, 8, 9], train_per_class=10)
    assert ds.classes == ["5", "6", "7", "8", "9"]
    assert len(ds.train) == 50
    assert np.bincount(ds.train.labels).tolist() == [10] * 5
    assert set(ds.val.labels) == {0, 1, 2, 3, 4}
    assert len(ds.val) == sum(np.bincount(digits_targets())[5:]) - 50
    image = ds.train.images[0]
    assert image.dtype == np.uint8 and image.shape == (8, 8) and image.max() > 16
    assert [a.tobytes() for a in ds.train.images] == [
        a.tobytes() for a in digits(classes=[5, 6, 7, 8, 9], train_per_class=10).train.images
    ]


def digits_targets() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().target


def test_digits_labels_follow_the_given_order():
    from sklearn.datasets import load_digits

    ds = digits(classes=[7, 2], train_per_class=3, val_per_class=4)
    assert ds.classes == ["7", "2"]
    assert (len(ds.train), len(ds.val)) == (6, 8)
    raw = load_digits()
    scaled = np.round(raw.images * 255 / 16).astype(np.uint8)
    pairs = list(zip(ds.train.images, ds.train.labels, strict=True))
    pairs += zip(ds.val.images, ds.val.labels, strict=True)
    for digit, label in ((7, 0), (2, 1)):
        known = {scaled[i].tobytes() for i in np.flatnonzero(raw.target == digit)}
        assert all(image.tobytes() in known for image, y in pairs if y == label)


def test_digits_default_split_and_val_per_class():
    ds = digits()
    assert ds.classes == [str(d) for d in range(10)]
    assert len(ds.train) + len(ds.val) == 1797
    assert len(ds.val) == pytest.approx(1797 * 0.2, abs=5)
    assert len(digits(classes=[0, 1], val_per_class=5).val) == 10


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"classes": [3, 10]}, "'classes' holds [10]"),
        ({"classes": [1, 1, 2]}, "'classes' lists [1]"),
        ({"classes": "012"}, "'classes' must be a list"),
        ({"classes": [4]}, "at least two"),
        ({"train_per_class": 0}, "'train_per_class'"),
        ({"train_per_class": 500}, "'train_per_class' must be an integer 1..173"),
        ({"train_per_class": 170, "val_per_class": 10}, "'val_per_class'"),
        ({"train_per_class": True}, "'train_per_class'"),
        ({"seed": "x"}, "'seed'"),
    ],
)
def test_digits_bad_options(options, words):
    with pytest.raises(ConfigError) as info:
        digits(**options)
    assert words in str(info.value)


# -- synthetic -----------------------------------------------------------------------------------
def test_synthetic_sizes_and_determinism():
    ds = synthetic(num_classes=4, train_per_class=5, val_per_class=2, image_size=12, seed=7)
    assert ds.classes == ["class_0", "class_1", "class_2", "class_3"]
    assert (len(ds.train), len(ds.val)) == (20, 8)
    assert np.bincount(ds.val.labels).tolist() == [2, 2, 2, 2]
    assert ds.train.images[0].shape == (12, 12, 3) and ds.train.images[0].dtype == np.uint8
    same = synthetic(num_classes=4, train_per_class=5, val_per_class=2, image_size=12, seed=7)
    other = synthetic(num_classes=4, train_per_class=5, val_per_class=2, image_size=12, seed=8)
    assert all(
        np.array_equal(a, b) for a, b in zip(ds.train.images, same.train.images, strict=True)
    )
    assert not np.array_equal(ds.train.images[0], other.train.images[0])


def test_synthetic_classes_are_learnable():
    ds = synthetic(num_classes=5, train_per_class=10, val_per_class=10, image_size=16)
    train = to_tensors(ds.train, mean=MEAN, std=STD, size=16)
    val = to_tensors(ds.val, mean=MEAN, std=STD, size=16)
    feats = lambda x: x.mean(dim=(2, 3))  # noqa: E731  mean colour per image
    train_x = feats(train.batch(slice(None)))
    centroids = np.stack([train_x[train.y == c].mean(0).numpy() for c in range(5)])
    dists = ((feats(val.batch(slice(None))).numpy()[:, None] - centroids[None]) ** 2).sum(-1)
    accuracy = (dists.argmin(1) == val.y.numpy()).mean()
    assert accuracy >= 0.9


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"train_per_class": 0}, "train_per_class"),
        ({"image_size": 2}, "image_size"),
        ({"val_per_class": 1.5}, "val_per_class"),
    ],
)
def test_synthetic_bad_options(options, name):
    with pytest.raises(ConfigError, match=f"'{name}'"):
        synthetic(**options)


# -- through the registry ------------------------------------------------------------------------
@pytest.fixture
def registry(monkeypatch):
    from autofreeze.plugins.manager import DISABLE_ENV
    from autofreeze.plugins.registry import Registry

    # only the dataset built-ins: this file tests them, not the backbones or schedules
    monkeypatch.setenv(
        DISABLE_ENV,
        "autofreeze.plugins.builtin.timm_backbones,autofreeze.plugins.builtin.schedules",
    )
    return Registry()


def test_registry_creates_builtin_datasets(registry):
    assert {"csv", "digits", "imagefolder", "synthetic"} <= set(registry.list_datasets())
    ds = registry.create_dataset("digits", classes=[0, 1], train_per_class=3)
    assert ds.classes == ["0", "1"]
    assert len(ds.train) == 6 and len(ds.val) > 300
    assert registry.dataset_entries()["digits"].description


def test_registry_rejects_unknown_and_missing_options(registry):
    with pytest.raises(ConfigError, match="no option 'clases'"):
        registry.create_dataset("digits", clases=[0, 1])
    with pytest.raises(ConfigError, match="needs option 'path'"):
        registry.create_dataset("imagefolder")


TILES_CALLS: list[int] = []


def tiles(*, size: Annotated[int, Field(ge=8)] = 16, names: list[str] | None = None):
    """A third-party factory with no validation code of its own (module-level, as in a plugin)."""
    TILES_CALLS.append(size)
    return synthetic(image_size=size)


def test_a_plugin_dataset_gets_option_errors_from_its_type_hints_alone(registry):
    from autofreeze.hookspecs import hookimpl

    TILES_CALLS.clear()

    class Plugin:
        @hookimpl
        def register_datasets(self, register):
            register("tiles", tiles)

    with registry.plugin(Plugin(), name="tiles-plugin"):
        assert registry.create_dataset("tiles", size=8).num_classes == 3
        for options, words in (
            ({"size": 4}, "dataset 'tiles': option 'size' must be >= 8, not 4"),
            ({"size": "big"}, "dataset 'tiles': option 'size' must be an integer, not 'big'"),
            ({"names": "a"}, "dataset 'tiles': option 'names' must be a list, not 'a'"),
            ({"sise": 9}, "dataset 'tiles' has no option 'sise' (allowed: size, names)"),
        ):
            with pytest.raises(ConfigError) as info:
                registry.create_dataset("tiles", **options)
            assert str(info.value) == words
        assert TILES_CALLS == [8]  # bad options never reach the factory


def test_builtin_option_errors_are_one_line_through_the_cli():
    from click.testing import CliRunner

    from autofreeze.cli import cli

    for args in (["digits", "-o", "classes=[3,10]"], ["synthetic", "-o", "num_classes=1"]):
        result = CliRunner().invoke(cli, ["dataset", *args])
        assert result.exit_code == 1
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "option" in lines[0]


# -- held-out test splits ----------------------------------------------------------------------
def test_imagefolder_reads_a_test_folder_beside_train_and_val(tmp_path):
    for split, counts in (
        ("train", {"a": 3, "b": 3}),
        ("val", {"a": 1, "b": 1}),
        ("test", {"b": 2}),
    ):
        make_folder(tmp_path / split, counts)
    ds = imagefolder(tmp_path)
    assert ds.classes == ["a", "b"] and ds.test is not None
    assert ds.test.labels == [1, 1]  # labels follow train's classes, even with one class only
    assert ds.summary()["test"] == 2 and ds.summary()["per_class"]["test"] == {"a": 0, "b": 2}
    make_folder(tmp_path / "test", {"c": 1})
    with pytest.raises(DatasetError, match="test has class folders that train/ lacks: c"):
        imagefolder(tmp_path)


def test_csv_rows_may_be_held_out_as_test(tmp_path):
    for name in "abcd":
        write_image(tmp_path / f"{name}.png")
    rows = "path,label,split\na.png,x,train\nb.png,y,train\nc.png,x,val\nd.png,y,test\n"
    ds = csv(write_csv(tmp_path / "t.csv", rows))
    assert ds.test is not None and ds.test.labels == [1] and ds.test.images[0].endswith("d.png")
    assert csv(write_csv(tmp_path / "n.csv", rows.replace("test", "val"))).test is None


def test_digits_test_split_is_disjoint_and_leaves_train_unchanged():
    base = digits(classes=[0, 1], train_per_class=5, val_per_class=20, seed=3)
    held = digits(classes=[0, 1], train_per_class=5, val_per_class=20, test_per_class=30, seed=3)
    assert base.test is None and held.test is not None and len(held.test) == 60
    as_bytes = lambda s: {img.tobytes() for img in s.images}  # noqa: E731
    assert as_bytes(held.train) == as_bytes(base.train)  # the search's data do not move
    assert not as_bytes(held.test) & (as_bytes(held.train) | as_bytes(held.val))
    everything = digits(classes=[0, 1], test_per_class=10)
    assert len(everything.train) + len(everything.val) + len(everything.test) == 360
    with pytest.raises(ConfigError, match="'test_per_class' must be an integer 1..176"):
        digits(classes=[0, 1], test_per_class=177)
