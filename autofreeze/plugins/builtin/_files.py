"""Built-in datasets from files: ``imagefolder`` (class sub-folders) and ``csv`` (a file of
image paths and labels). Images stay file paths, decoded lazily by
:func:`autofreeze.data.images.load_image`."""

from __future__ import annotations

import csv as csvlib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from autofreeze.data.folders import IMAGE_EXTENSIONS, scan_classes, visible_dirs
from autofreeze.data.images import ImageDataset, ImageSet, stratified_split
from autofreeze.data.options import Seed, ValFraction, validate_options
from autofreeze.errors import DatasetError

SPLIT_COLUMN = "split"


def _suffixes(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(e, str) and e.strip(". ") for e in value)
    ):
        raise ValueError(f"must be a list of file suffixes like ['.jpg', '.png'], not {value!r}")
    return tuple("." + e.strip().lstrip(".").lower() for e in value)


Suffixes = Annotated[tuple[str, ...], BeforeValidator(_suffixes)]
Column = Annotated[str, Field(min_length=1)]


def _split_sets(
    images: Sequence[Any], labels: Sequence[int], val_fraction: float, seed: int, where: str
) -> tuple[ImageSet, ImageSet]:
    train_idx, val_idx = stratified_split(labels, val_fraction, seed)
    if len(val_idx) == 0:
        raise DatasetError(
            f"{where}: too few images to hold out a validation set "
            "(a class needs at least 2 images); add images or provide a separate val split"
        )
    return subset(images, labels, train_idx), subset(images, labels, val_idx)


def subset(images: Sequence[Any], labels: Sequence[int], idx: Sequence[int]) -> ImageSet:
    return ImageSet(images=[images[i] for i in idx], labels=[int(labels[i]) for i in idx])


# -- imagefolder ---------------------------------------------------------------------------------
@validate_options
def imagefolder(
    path: Path,
    *,
    val_fraction: ValFraction = 0.2,
    seed: Seed = 0,
    extensions: Suffixes = IMAGE_EXTENSIONS,
) -> ImageDataset:
    """Images in class sub-folders: ``path/<class>/*.jpg`` (classes are the sorted folder names).

    If ``path`` holds ``train/`` and ``val/`` folders, each with the same class sub-folders,
    they are the split; otherwise a seeded stratified split holds out ``val_fraction``.
    Images inside a class folder may be nested; hidden files and folders are skipped.

    Args:
        path: the dataset folder.
        val_fraction: share of each class held out for validation (without ``train/``/``val/``).
        seed: seed of the split.
        extensions: file suffixes counted as images (default: common image formats).
    """
    root, exts = path.expanduser(), extensions
    if not root.exists():
        raise DatasetError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(
            f"dataset path {root} is a file; expected a folder with class sub-folders "
            f"like {root}/cat/*.jpg (for a CSV file use dataset 'csv')"
        )
    train_dir, val_dir = root / "train", root / "val"
    if _looks_like_split(train_dir) or _looks_like_split(val_dir):
        for part, other in ((train_dir, val_dir), (val_dir, train_dir)):
            if not part.is_dir():
                raise DatasetError(
                    f"{root} has {other.name}/ but no {part.name}/; add {part}/<class>/ folders "
                    f"or put the class folders directly under {root}"
                )
        train_classes, train_files = scan_classes(train_dir, exts)
        val_classes, val_files = scan_classes(val_dir, exts)
        if train_classes != val_classes:
            only_train = sorted(set(train_classes) - set(val_classes))
            only_val = sorted(set(val_classes) - set(train_classes))
            raise DatasetError(
                f"{train_dir} and {val_dir} have different class folders "
                f"(only in train: {', '.join(only_train) or '-'}; "
                f"only in val: {', '.join(only_val) or '-'}); give both the same classes"
            )
        test = None
        if _looks_like_split(root / "test"):
            test_classes, test_files = scan_classes(root / "test", exts)
            unknown = sorted(set(test_classes) - set(train_classes))
            if unknown:
                raise DatasetError(
                    f"{root / 'test'} has class folders that train/ lacks: {', '.join(unknown)}"
                )
            index = {c: i for i, c in enumerate(train_classes)}
            test = ImageSet(
                [f for f, _ in test_files], [index[test_classes[y]] for _, y in test_files]
            )
        return ImageDataset(
            name="imagefolder",
            classes=train_classes,
            train=ImageSet([f for f, _ in train_files], [y for _, y in train_files]),
            val=ImageSet([f for f, _ in val_files], [y for _, y in val_files]),
            test=test,
        )
    classes, files = scan_classes(root, exts)
    train, val = _split_sets(
        [f for f, _ in files], [y for _, y in files], val_fraction, seed, str(root)
    )
    return ImageDataset(name="imagefolder", classes=classes, train=train, val=val)


def _looks_like_split(folder: Path) -> bool:
    """``train``/``val`` is a split folder when it holds class folders, not images itself."""
    return folder.is_dir() and bool(visible_dirs(folder))


# -- csv -----------------------------------------------------------------------------------------
@validate_options
def csv(
    path: Path,
    *,
    root: Path | None = None,
    path_column: Column = "path",
    label_column: Column = "label",
    val_fraction: ValFraction = 0.2,
    seed: Seed = 0,
) -> ImageDataset:
    """A CSV file with one image per row: its file path and its label.

    Classes are the sorted unique labels (as strings). An optional ``split`` column with the
    values ``train``/``val`` fixes the split; otherwise a seeded stratified split holds out
    ``val_fraction``. Every image file must exist when the dataset is built.

    Args:
        path: the CSV file (UTF-8, header row first).
        root: folder that relative image paths are resolved against (default: the CSV's folder).
        path_column: name of the column of image paths.
        label_column: name of the column of labels.
        val_fraction: share of each class held out for validation (without a ``split`` column).
        seed: seed of the split.
    """
    csv_path = path.expanduser()
    base = csv_path.parent if root is None else root.expanduser()
    if not csv_path.is_file():
        what = "is a folder (for image folders use dataset 'imagefolder')"
        raise DatasetError(f"CSV file {csv_path} {what if csv_path.is_dir() else 'not found'}")
    if not base.is_dir():
        raise DatasetError(f"image root folder not found: {base} (option 'root')")

    rows = _read_rows(csv_path, path_column, label_column)
    has_split = SPLIT_COLUMN in rows[0][1]
    files, labels, splits, missing = [], [], [], []
    for line, row in rows:
        raw_path = (row.get(path_column) or "").strip()
        label = (row.get(label_column) or "").strip()
        if not raw_path or not label:
            empty = path_column if not raw_path else label_column
            raise DatasetError(f"{csv_path} line {line}: empty {empty!r}")
        file = Path(raw_path).expanduser()
        file = file if file.is_absolute() else base / file
        if not file.is_file():
            missing.append((line, file))
        files.append(str(file))
        labels.append(label)
        if has_split:
            split = (row.get(SPLIT_COLUMN) or "").strip().lower()
            if split not in ("train", "val", "test"):
                raise DatasetError(
                    f"{csv_path} line {line}: {SPLIT_COLUMN!r} must be 'train', 'val' or 'test', "
                    f"not {split!r}"
                )
            splits.append(split)
    if missing:
        line, file = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(f"{csv_path} line {line}: image file not found: {file}{more}")

    classes = sorted(set(labels))
    index = {name: i for i, name in enumerate(classes)}
    y = [index[label] for label in labels]
    if not has_split:
        train, val = _split_sets(files, y, val_fraction, seed, str(csv_path))
        return ImageDataset(name="csv", classes=classes, train=train, val=val)
    train_idx = [i for i, s in enumerate(splits) if s == "train"]
    val_idx = [i for i, s in enumerate(splits) if s == "val"]
    test_idx = [i for i, s in enumerate(splits) if s == "test"]
    if not train_idx or not val_idx:
        empty = "train" if not train_idx else "val"
        raise DatasetError(f"{csv_path}: no rows with {SPLIT_COLUMN} = {empty!r}")
    unseen = sorted({labels[i] for i in val_idx + test_idx} - {labels[i] for i in train_idx})
    if unseen:
        raise DatasetError(
            f"{csv_path}: labels with val or test rows but no train rows: {', '.join(unseen)}"
        )
    return ImageDataset(
        name="csv",
        classes=classes,
        train=subset(files, y, train_idx),
        val=subset(files, y, val_idx),
        test=subset(files, y, test_idx) if test_idx else None,
    )


def _read_rows(
    csv_path: Path, path_column: str, label_column: str
) -> list[tuple[int, dict[str, str]]]:
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csvlib.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csvlib.Error) as exc:
        raise DatasetError(f"cannot read CSV file {csv_path}: {exc}") from exc
    if not columns:
        raise DatasetError(
            f"CSV file {csv_path} is empty; expected a header row with columns "
            f"{path_column!r} and {label_column!r}"
        )
    absent = [c for c in (path_column, label_column) if c not in columns]
    if absent:
        raise DatasetError(
            f"CSV file {csv_path} has no column {' or '.join(repr(c) for c in absent)} "
            f"(columns: {', '.join(columns)}); rename it or set path_column/label_column"
        )
    if not rows:
        raise DatasetError(f"CSV file {csv_path} has a header but no rows")
    return rows
