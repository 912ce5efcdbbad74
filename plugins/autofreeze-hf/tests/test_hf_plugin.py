"""The autofreeze-hf plugin, loaded from its entry point, on small datasets built in tmp_path.

Every format (a ``save_to_disk`` DatasetDict and Dataset, an image folder, Parquet files) is
read through the real ``datasets`` library and checked against the dataset contract
(:func:`autofreeze.testing.check_dataset`); each image's pixels encode its class and number, so
labels and splits are checked image by image. Images must stay lazy, nothing may reach the
network, every user mistake is one line, and a real study runs on the dataset through the CLI.
"""

from __future__ import annotations

import io
import re
import socket
import sys

import datasets
import numpy as np
import optuna
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from autofreeze_hf.source import LazyImages
from click.testing import CliRunner
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from optuna.trial import TrialState
from PIL import Image as PILImage

from autofreeze.cli import cli
from autofreeze.errors import ConfigError, DatasetError
from autofreeze.plugins.registry import Registry
from autofreeze.testing import check_dataset
from tests.studies import write_study

CLASSES = ["cat", "dog", "fox"]
REGISTRY = Registry()  # the default plugin manager: built-ins plus installed entry points


@pytest.fixture(autouse=True)
def _local_only(tmp_path, monkeypatch):
    """Offline, and the Arrow cache of load_dataset inside tmp_path (datasets read both at
    import, so the loaded module's config is patched too)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    datasets.disable_progress_bars()


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(2)


# -- tiny data: the red channel encodes the class, the green one the image's number -------------
def picture(label: int, number: int) -> PILImage.Image:
    return PILImage.fromarray(np.full((16, 16, 3), (40 + 80 * label, number, 0), np.uint8))


def identity(img: PILImage.Image) -> tuple[int, int]:
    """(class, number) read back from a picture's pixels."""
    r, g, _ = np.asarray(img.convert("RGB"))[0, 0]
    return (int(r) - 40) // 80, int(g)


def png(img: PILImage.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def rows(per_class: int, start: int = 0) -> dict[str, list]:
    """``per_class`` pictures of each class, classes interleaved, numbered from ``start``."""
    labels = [c for _ in range(per_class) for c in range(len(CLASSES))]
    numbers = range(start, start + len(labels))
    return {"image": [picture(y, n) for y, n in zip(labels, numbers, strict=True)], "label": labels}


FEATURES = Features({"image": Image(), "label": ClassLabel(names=CLASSES)})


def dataset_dict(folder, per_class=(4, 2, 2)) -> str:
    """A DatasetDict with train/validation/test saved by ``save_to_disk``."""
    parts, start = {}, 0
    for split, n in zip(("train", "validation", "test"), per_class, strict=True):
        parts[split] = Dataset.from_dict(rows(n, start), features=FEATURES)
        start += n * len(CLASSES)
    DatasetDict(parts).save_to_disk(str(folder))
    return str(folder)


def assert_labels_match(images, labels) -> set[int]:
    """Every image shows the class of its label; returns the images' numbers."""
    seen = [identity(images[i]) for i in range(len(images))]
    assert [c for c, _ in seen] == list(labels)
    return {n for _, n in seen}


# -- formats ------------------------------------------------------------------------------------
def test_the_dataset_comes_from_the_entry_point():
    entry = REGISTRY.dataset_entries()["hf"]
    assert entry.plugin == "hf"
    assert entry.description and "\n" not in entry.description


def test_a_saved_dataset_dict(tmp_path):
    dataset = REGISTRY.create_dataset("hf", path=dataset_dict(tmp_path / "dd"))
    summary = check_dataset(dataset, expect_test=True)
    assert dataset.name == "hf" and dataset.classes == CLASSES
    assert (summary["train"], summary["val"], summary["test"]) == (12, 6, 6)
    assert summary["per_class"]["val"] == dict.fromkeys(CLASSES, 2)
    assert dataset.train.labels == [0, 1, 2] * 4
    numbers = [assert_labels_match(s.images, s.labels) for s in (dataset.train, dataset.val)]
    assert numbers == [set(range(12)), set(range(12, 18))]
    assert assert_labels_match(dataset.test.images, dataset.test.labels) == set(range(18, 24))


def test_a_plain_dataset_holds_out_a_stratified_validation_share(tmp_path):
    Dataset.from_dict(rows(5), features=FEATURES).save_to_disk(str(tmp_path / "ds"))
    dataset = REGISTRY.create_dataset("hf", path=str(tmp_path / "ds"), val_fraction=0.4, seed=3)
    summary = check_dataset(dataset, expect_test=False)
    assert (summary["train"], summary["val"]) == (9, 6)
    assert summary["per_class"]["val"] == dict.fromkeys(CLASSES, 2)
    train = assert_labels_match(dataset.train.images, dataset.train.labels)
    val = assert_labels_match(dataset.val.images, dataset.val.labels)
    assert train | val == set(range(15)) and not train & val
    again = REGISTRY.create_dataset("hf", path=str(tmp_path / "ds"), val_fraction=0.4, seed=3)
    assert assert_labels_match(again.val.images, again.val.labels) == val


def test_an_image_folder_with_train_and_validation_folders(tmp_path):
    root = tmp_path / "pets"
    number = 0
    for split, per_class in (("train", 3), ("validation", 2)):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for _ in range(per_class):
                picture(label, number).save(root / split / name / f"{number}.png")
                number += 1
    dataset = REGISTRY.create_dataset("hf", path=str(root))  # format auto: imagefolder
    summary = check_dataset(dataset, expect_test=False)
    assert dataset.classes == CLASSES and (summary["train"], summary["val"]) == (9, 6)
    train = assert_labels_match(dataset.train.images, dataset.train.labels)
    assert train == set(range(9))
    assert assert_labels_match(dataset.val.images, dataset.val.labels) == set(range(9, 15))


def test_a_parquet_file_of_image_bytes_and_string_labels(tmp_path):
    names = ["fox", "cat", "dog"] * 3  # string labels: the classes are their sorted set
    table = pa.table(
        {
            "image": [png(picture(CLASSES.index(n), i)) for i, n in enumerate(names)],
            "label": names,
        }
    )
    pq.write_table(table, tmp_path / "pets.parquet")
    path = str(tmp_path / "pets.parquet")
    with pytest.raises(DatasetError, match=r"no column of feature type Image \(columns: image "):
        REGISTRY.create_dataset("hf", path=path)  # plain bytes: no Image feature type
    dataset = REGISTRY.create_dataset("hf", path=path, image_column="image", val_fraction=0.34)
    summary = check_dataset(dataset, expect_test=False)
    assert dataset.classes == CLASSES and (summary["train"], summary["val"]) == (6, 3)
    assert_labels_match(dataset.train.images, dataset.train.labels)
    assert_labels_match(dataset.val.images, dataset.val.labels)


def test_a_folder_of_parquet_splits_written_by_datasets(tmp_path):
    root = tmp_path / "export" / "data"
    root.mkdir(parents=True)
    for split, n, start in (("train", 3, 0), ("test", 1, 9)):
        data = Dataset.from_dict(rows(n, start), features=FEATURES)
        data.to_parquet(str(root / f"{split}-00000-of-00001.parquet"))
    (root.parent / "README.md").write_text("# pets\n")
    dataset = REGISTRY.create_dataset("hf", path=str(root.parent), val_fraction=0.34)
    summary = check_dataset(dataset, expect_test=True)  # Image and ClassLabel kept in Parquet
    assert dataset.classes == CLASSES
    assert (summary["train"], summary["val"], summary["test"]) == (6, 3, 3)
    assert assert_labels_match(dataset.test.images, dataset.test.labels) == set(range(9, 12))


# -- laziness and the network -------------------------------------------------------------------
def test_images_are_decoded_only_when_read(tmp_path, monkeypatch):
    path = dataset_dict(tmp_path / "dd", per_class=(10, 4, 4))
    opened = []
    real_open = PILImage.open
    monkeypatch.setattr(PILImage, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    dataset = REGISTRY.create_dataset("hf", path=path)
    assert opened == []
    images = dataset.train.images
    assert isinstance(images, LazyImages) and len(images) == 30
    window = images[5:9]
    assert isinstance(window, LazyImages) and opened == []
    assert identity(window[-1]) == (2, 8) and len(opened) == 1
    assert identity(images[-1]) == (2, 29) and len(opened) == 2
    with pytest.raises(IndexError):
        images[30]


def test_nothing_reaches_the_network(tmp_path, monkeypatch):
    """With datasets online (as imported without HF_DATASETS_OFFLINE), loading an image
    folder would count the download on the Hub; the plugin keeps it offline."""
    root = tmp_path / "pets"
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(2):
            picture(label, 2 * label + i).save(root / name / f"{i}.png")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", True)
    lookups = []

    def no_lookup(host, *args, **kwargs):
        lookups.append(host)
        raise OSError("no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    dataset = REGISTRY.create_dataset("hf", path=str(root), format="imagefolder", val_fraction=0.5)
    assert dataset.classes == CLASSES and len(dataset.val) == 3
    assert lookups == []
    assert datasets.config.HF_HUB_OFFLINE is False  # restored after the load


# -- mistakes: one line each --------------------------------------------------------------------
def one_line(info: pytest.ExceptionInfo, *words: str) -> str:
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def test_a_missing_path(tmp_path):
    with pytest.raises(DatasetError) as info:
        REGISTRY.create_dataset("hf", path=str(tmp_path / "nowhere"))
    one_line(info, "not found", str(tmp_path / "nowhere"))


@pytest.mark.parametrize("option", ["image_column", "label_column"])
def test_an_unknown_column_lists_the_columns(tmp_path, option):
    with pytest.raises(DatasetError) as info:
        REGISTRY.create_dataset("hf", path=dataset_dict(tmp_path / "dd"), **{option: "photo"})
    one_line(info, "no column 'photo'", "image (Image), label (ClassLabel)", f"set {option}")


def test_an_explicit_missing_split_lists_the_splits(tmp_path):
    with pytest.raises(DatasetError) as info:
        REGISTRY.create_dataset("hf", path=dataset_dict(tmp_path / "dd"), test_split="holdout")
    one_line(info, "no split 'holdout'", "(splits: train, validation, test)", "set test_split")


def test_an_ambiguous_image_column(tmp_path):
    data = rows(2)
    features = Features({"image": Image(), "mask": Image(), "label": ClassLabel(names=CLASSES)})
    Dataset.from_dict({**data, "mask": data["image"]}, features=features).save_to_disk(
        str(tmp_path / "ds")
    )
    with pytest.raises(DatasetError) as info:
        REGISTRY.create_dataset("hf", path=str(tmp_path / "ds"))
    one_line(info, "2 Image columns (image, mask)", "set image_column")
    dataset = REGISTRY.create_dataset("hf", path=str(tmp_path / "ds"), image_column="mask")
    assert dataset.classes == CLASSES


def test_a_bad_format_and_a_missing_library(tmp_path, monkeypatch):
    path = dataset_dict(tmp_path / "dd")
    with pytest.raises(ConfigError) as info:
        REGISTRY.create_dataset("hf", path=path, format="arrow")
    one_line(info, "option 'format' must be one of auto, disk, imagefolder, parquet")
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now fails
    with pytest.raises(DatasetError) as info:
        REGISTRY.create_dataset("hf", path=path)
    one_line(info, "pip install autofreeze-hf")


# -- a real study -------------------------------------------------------------------------------
def test_a_study_runs_on_a_saved_dataset(tmp_path):
    dataset_dict(tmp_path / "data", per_class=(6, 3, 2))
    config = write_study(
        tmp_path, n_trials=2, epochs=1, pruner="none", weights="none", search='init = "scratch"'
    )
    text = config.read_text()
    dataset_table = '[dataset]\nname = "hf"\npath = "data"\n'  # relative to the config file
    config.write_text(re.sub(r"\[dataset\]\n.*?\n\n", dataset_table + "\n", text, flags=re.S))
    assert 'name = "hf"' in config.read_text() and "train_per_class = 8" not in config.read_text()
    result = CliRunner().invoke(cli, ["search", str(config), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tiny.db'}")
    trials = study.get_trials()
    assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials)


def test_each_split_says_what_its_images_are_so_they_are_decoded_once(tmp_path):
    """The splits carry the dataset's fingerprint (their own after a held-out selection):
    autofreeze decodes them once into its store and a second run reads the file."""
    from autofreeze.data.decode import Decoding, decode_split

    dataset = Registry().create_dataset("hf", path=dataset_dict(tmp_path))
    idents = {dataset.train.identity, dataset.val.identity, dataset.test.identity}
    assert None not in idents and len(idents) == 3
    again = Registry().create_dataset("hf", path=dataset_dict(tmp_path))
    assert again.train.identity == dataset.train.identity  # stable across processes and runs
    said: list[str] = []
    decoding = Decoding(folder=tmp_path / "store", memory_bytes=2**30, progress=said.append)
    kw = {"mean": (0.5,) * 3, "std": (0.5,) * 3, "size": 8, "decoding": decoding}
    first = decode_split(dataset.train, **kw)
    second = decode_split(again.train, **kw)
    assert sum("decoding" in s for s in said) == 1
    assert first.x.equal(second.x) and first.y.equal(second.y)
