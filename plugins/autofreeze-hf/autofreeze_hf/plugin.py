"""autofreeze plugin: a local Hugging Face dataset as the dataset ``hf``.

It reads a folder written by ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``), an image
folder or Parquet files, through the ``datasets`` library and never the network (no Hub names:
local paths only). Images stay in the Arrow data and are decoded one at a time when autofreeze
reads them; labels are read from Arrow without decoding images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, Field

from autofreeze.hookspecs import (
    DatasetError,
    ImageDataset,
    ImageSet,
    Seed,
    ValFraction,
    hookimpl,
    stratified_split,
)
from autofreeze_hf.source import (
    FORMATS,
    LazyImages,
    as_images,
    image_column_of,
    kind_of,
    label_column_of,
    load_splits,
    read_labels,
)

if TYPE_CHECKING:
    import datasets

    from autofreeze.hookspecs import DatasetRegister

VAL_NAMES = ("validation", "val", "valid")  # looked for in this order when val_split is unset


def _format(value: str) -> str:
    if value not in FORMATS:
        raise ValueError(f"must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


Format = Annotated[str, AfterValidator(_format)]
Name = Annotated[str, Field(min_length=1)]  # a column or split name


# A dataset factory's keyword-only parameters are its [dataset] options, one each: autofreeze
# checks the config's table against this signature and type hints (validate_options), so,
# as for a click command, they cannot be grouped without changing the config.
def hf_dataset(  # noqa: PLR0913
    *,
    path: Path,
    format: Format = "auto",
    image_column: Name | None = None,
    label_column: Name | None = None,
    train_split: Name = "train",
    val_split: Name | None = None,
    test_split: Name | None = None,
    val_fraction: ValFraction = 0.2,
    seed: Seed = 0,
) -> ImageDataset:
    """A classification dataset from a local Hugging Face dataset.

    Args:
        path: a ``save_to_disk`` folder, an image folder (``train/<class>/*.png``, ...) or a
            ``.parquet`` file or folder.
        format: ``auto`` (from what ``path`` holds), ``disk``, ``imagefolder`` or ``parquet``.
        image_column: the column of images (default: the single column of type ``Image``).
        label_column: the column of labels (default: the single ``ClassLabel`` column, else a
            string or integer column named ``label`` or ``labels``).
        train_split: the training split; a plain ``Dataset`` without splits is this split.
        val_split: the validation split (default: ``validation``, ``val`` or ``valid`` if
            present, else ``val_fraction`` of the train split is held out).
        test_split: the held-out test split (default: ``test`` if present, else none).
        val_fraction: share of each class held out when there is no validation split.
        seed: seed of that split.
    """
    root = path.expanduser()
    where = str(root)
    splits = load_splits(root, format, train_split)
    roles = _pick_splits(splits, train_split, val_split, test_split, where)
    train_name, train = roles["train"]
    on_train = f"{where} split {train_name!r}"
    image_col = image_column_of(train.features, image_column, on_train)
    label_col = label_column_of(train.features, label_column, on_train)
    for name, ds in roles.values():
        missing = [c for c in (image_col, label_col) if c not in ds.column_names]
        if missing:
            raise DatasetError(
                f"{where} split {name!r} has no column {missing[0]!r} "
                f"(columns: {', '.join(ds.column_names)}); every split needs the same columns"
            )

    labels = {role: read_labels(ds, label_col) for role, (_, ds) in roles.items()}
    classes = _classes(train.features[label_col], labels["train"])
    index = {c: i for i, c in enumerate(classes)}
    sets = {
        role: _image_set(
            as_images(ds, image_col), _indices(labels[role], index, f"{where} split {name!r}")
        )
        for role, (name, ds) in roles.items()
    }
    if "val" not in sets:
        sets["train"], sets["val"] = _hold_out(sets["train"], val_fraction, seed, on_train)
    seen = set(sets["train"].labels)
    unseen = [c for i, c in enumerate(classes) if i not in seen]
    if unseen:
        raise DatasetError(
            f"{on_train} has no image of class {unseen[0]!r} ({len(unseen)} such classes); "
            "add training images or drop the class"
        )
    return ImageDataset(name="hf", classes=classes, **sets)


def _pick_splits(
    splits: dict[str, datasets.Dataset],
    train_split: str,
    val_split: str | None,
    test_split: str | None,
    where: str,
) -> dict[str, tuple[str, datasets.Dataset]]:
    """Role (``train``, ``val``, ``test``) -> (split name, split). A split named by an option
    must exist; an unset val or test split is the first of its usual names present, if any."""
    wanted = [
        ("train", train_split, ()),
        ("val", val_split, VAL_NAMES),
        ("test", test_split, ("test",)),
    ]
    roles: dict[str, tuple[str, datasets.Dataset]] = {}
    for role, chosen, usual in wanted:
        used = {name: other for other, (name, _) in roles.items()}
        if chosen is None:
            chosen = next((n for n in usual if n in splits and n not in used), None)
            if chosen is None:
                continue
        elif chosen not in splits:
            raise DatasetError(
                f"{where} has no split {chosen!r} (splits: {', '.join(splits)}); "
                f"set {role}_split to one of them"
            )
        elif chosen in used:
            raise DatasetError(
                f"{where}: split {chosen!r} is already the {used[chosen]} split; "
                f"set {role}_split to another one"
            )
        roles[role] = (chosen, splits[chosen])
    return roles


def _classes(feature: Any, labels: Sequence[Any]) -> list[str]:
    """A ClassLabel's names; else the train split's sorted labels (integers as strings)."""
    if kind_of(feature) == "ClassLabel":
        return list(feature.names)
    return [str(v) for v in sorted({v for v in labels if v is not None})]


def _indices(labels: Sequence[Any], index: dict[str, int], where: str) -> list[int]:
    """Labels as class indices; a missing label, or one the train split lacks, is an error."""
    out = []
    for row, value in enumerate(labels):
        if value is None:
            raise DatasetError(f"{where} row {row} has no label; every image needs one")
        i = index.get(str(value))
        if i is None:
            shown = ", ".join(list(index)[:10]) + (", ..." if len(index) > 10 else "")
            raise DatasetError(
                f"{where} row {row} has label {value!r}, which the train split does not have "
                f"(classes: {shown})"
            )
        out.append(i)
    return out


def _hold_out(
    train: ImageSet, val_fraction: float, seed: int, where: str
) -> tuple[ImageSet, ImageSet]:
    """Split a seeded, stratified ``val_fraction`` of the train split off as validation."""
    train_idx, val_idx = stratified_split(train.labels, val_fraction, seed)
    if len(val_idx) == 0:
        raise DatasetError(
            f"{where}: too few images to hold out a validation set (a class needs at least 2 "
            "images); add images or provide a validation split"
        )
    train_set, val_set = (
        _image_set(train.images.take(idx), [train.labels[i] for i in idx])
        for idx in (train_idx, val_idx)
    )
    return train_set, val_set


@hookimpl
def register_datasets(register: DatasetRegister) -> None:
    register(
        "hf", hf_dataset, "a local Hugging Face dataset: save_to_disk folder, imagefolder, parquet"
    )


def _image_set(images: LazyImages, labels: list[int]) -> ImageSet:
    """An image set that says what its images are, so they are decoded once per machine."""
    return ImageSet(images, labels, identity=images.identity)
