"""Built-in datasets: image folders, CSV files of paths and labels, and two offline sets.

``imagefolder`` and ``csv`` keep images as file paths, decoded lazily by
:func:`autofreeze.data.load_image`; ``digits`` (scikit-learn's bundled 8 x 8 digits) and
``synthetic`` (generated stripes) need no files and no network. Each factory takes keyword
options (the study config's ``[dataset]`` table); a bad value raises :class:`ConfigError`
naming the option, bad data raises :class:`DatasetError` naming the file or folder.
"""

from __future__ import annotations

import colorsys
import csv as csvlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autofreeze.data import ImageDataset, ImageSet, stratified_split
from autofreeze.errors import ConfigError, DatasetError
from autofreeze.hookspecs import DatasetRegister, hookimpl

IMAGE_EXTENSIONS = tuple(
    [".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"]
)
SPLIT_COLUMN = "split"


@hookimpl
def register_datasets(register: DatasetRegister) -> None:
    register("imagefolder", imagefolder, "a folder of class sub-folders (or train/ and val/)")
    register("csv", csv, "a CSV file of image paths and labels, optional train/val split column")
    register("digits", digits, "scikit-learn's 8x8 handwritten digits (offline, 1797 images)")
    register("synthetic", synthetic, "generated colour/stripe classes for smoke tests")


# -- option checks -------------------------------------------------------------------------------
def _int_option(
    name: str, value: Any, minimum: int, maximum: int | None = None, why: str = ""
) -> int:
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if ok and value >= minimum and (maximum is None or value <= maximum):
        return int(value)
    allowed = f"an integer >= {minimum}" if maximum is None else f"an integer {minimum}..{maximum}"
    raise ConfigError(
        f"option {name!r} must be {allowed}, not {value!r}" + (f" ({why})" if why else "")
    )


def _fraction_option(value: Any) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and 0.0 < value < 1.0:
        return float(value)
    raise ConfigError(f"option 'val_fraction' must be a number between 0 and 1, not {value!r}")


def _path_option(name: str, value: Any) -> Path:
    if isinstance(value, str | os.PathLike) and str(value):
        return Path(value).expanduser()
    raise ConfigError(f"option {name!r} must be a file system path, not {value!r}")


def _seed_option(value: Any) -> int:
    return _int_option("seed", value, 0)


def _split_sets(
    images: Sequence[Any], labels: Sequence[int], val_fraction: float, seed: int, where: str
) -> tuple[ImageSet, ImageSet]:
    train_idx, val_idx = stratified_split(labels, val_fraction, seed)
    if len(val_idx) == 0:
        raise DatasetError(
            f"{where}: too few images to hold out a validation set "
            "(a class needs at least 2 images); add images or provide a separate val split"
        )
    return _subset(images, labels, train_idx), _subset(images, labels, val_idx)


def _subset(images: Sequence[Any], labels: Sequence[int], idx: Sequence[int]) -> ImageSet:
    return ImageSet(images=[images[i] for i in idx], labels=[int(labels[i]) for i in idx])


# -- imagefolder ---------------------------------------------------------------------------------
def imagefolder(
    path: str | os.PathLike[str],
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    extensions: Sequence[str] | None = None,
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
    root = _path_option("path", path)
    val_fraction = _fraction_option(val_fraction)
    seed = _seed_option(seed)
    exts = _extensions_option(extensions)
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
        train_classes, train_files = _scan_classes(train_dir, exts)
        val_classes, val_files = _scan_classes(val_dir, exts)
        if train_classes != val_classes:
            only_train = sorted(set(train_classes) - set(val_classes))
            only_val = sorted(set(val_classes) - set(train_classes))
            raise DatasetError(
                f"{train_dir} and {val_dir} have different class folders "
                f"(only in train: {', '.join(only_train) or '-'}; "
                f"only in val: {', '.join(only_val) or '-'}); give both the same classes"
            )
        return ImageDataset(
            name="imagefolder",
            classes=train_classes,
            train=ImageSet([f for f, _ in train_files], [y for _, y in train_files]),
            val=ImageSet([f for f, _ in val_files], [y for _, y in val_files]),
        )
    classes, files = _scan_classes(root, exts)
    train, val = _split_sets(
        [f for f, _ in files], [y for _, y in files], val_fraction, seed, str(root)
    )
    return ImageDataset(name="imagefolder", classes=classes, train=train, val=val)


def _extensions_option(extensions: Any) -> tuple[str, ...]:
    if extensions is None:
        return IMAGE_EXTENSIONS
    if isinstance(extensions, str):
        extensions = [extensions]
    if (
        not isinstance(extensions, Sequence)
        or not extensions
        or not all(isinstance(e, str) and e.strip(". ") for e in extensions)
    ):
        raise ConfigError(
            f"option 'extensions' must be a list of file suffixes like ['.jpg', '.png'], "
            f"not {extensions!r}"
        )
    return tuple("." + e.strip().lstrip(".").lower() for e in extensions)


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _looks_like_split(folder: Path) -> bool:
    """``train``/``val`` is a split folder when it holds class folders, not images itself."""
    return folder.is_dir() and bool(_visible_dirs(folder))


def _scan_classes(folder: Path, exts: tuple[str, ...]) -> tuple[list[str], list[tuple[str, int]]]:
    class_dirs = _visible_dirs(folder)
    if not class_dirs:
        loose = any(p.suffix.lower() in exts for p in folder.iterdir())
        hint = "; it holds images directly, so move them into one folder per class" if loose else ""
        raise DatasetError(
            f"{folder} has no class sub-folders; expected class sub-folders like "
            f"{folder}/cat/*.jpg and {folder}/dog/*.jpg{hint}"
        )
    files: list[tuple[str, int]] = []
    for label, class_dir in enumerate(class_dirs):
        found = sorted(
            p
            for p in class_dir.rglob("*")
            if p.suffix.lower() in exts
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
        )
        if not found:
            raise DatasetError(
                f"class folder {class_dir} has no images ({', '.join(exts)}); "
                "add images or remove the folder"
            )
        files.extend((str(p), label) for p in found)
    return [d.name for d in class_dirs], files


# -- csv -----------------------------------------------------------------------------------------
def csv(
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    path_column: str = "path",
    label_column: str = "label",
    val_fraction: float = 0.2,
    seed: int = 0,
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
    csv_path = _path_option("path", path)
    base = csv_path.parent if root is None else _path_option("root", root)
    for key, value in (("path_column", path_column), ("label_column", label_column)):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"option {key!r} must be a column name, not {value!r}")
    val_fraction = _fraction_option(val_fraction)
    seed = _seed_option(seed)
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
            if split not in ("train", "val"):
                raise DatasetError(
                    f"{csv_path} line {line}: {SPLIT_COLUMN!r} must be 'train' or 'val', "
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
    if not train_idx or not val_idx:
        empty = "train" if not train_idx else "val"
        raise DatasetError(f"{csv_path}: no rows with {SPLIT_COLUMN} = {empty!r}")
    unseen = sorted({labels[i] for i in val_idx} - {labels[i] for i in train_idx})
    if unseen:
        raise DatasetError(
            f"{csv_path}: labels with val rows but no train rows: {', '.join(unseen)}"
        )
    return ImageDataset(
        name="csv",
        classes=classes,
        train=_subset(files, y, train_idx),
        val=_subset(files, y, val_idx),
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


# -- digits --------------------------------------------------------------------------------------
def digits(
    *,
    classes: Sequence[int] | None = None,
    train_per_class: int | None = None,
    val_per_class: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """scikit-learn's bundled handwritten digits: 1797 grayscale 8 x 8 images, offline.

    Args:
        classes: digits to keep, e.g. ``[5, 6, 7, 8, 9]`` (default all ten); labels follow this
            order and the class names are the digit strings.
        train_per_class: labelled training images per class, sampled with ``seed``; the rest
            of each class is validation. Default: a stratified 80/20 split.
        val_per_class: validation images per class, sampled from the rest (default: all of it).
        seed: seed of the sampling.
    """
    from sklearn.datasets import load_digits

    digits_kept = _digit_classes_option(classes)
    seed = _seed_option(seed)
    bunch = load_digits()
    images = np.asarray(bunch.images)
    target = np.asarray(bunch.target)
    members = [np.flatnonzero(target == d) for d in digits_kept]
    smallest = min(len(m) for m in members)
    why = f"the smallest kept class has {smallest} images and each split needs one"
    if train_per_class is not None:
        train_per_class = _int_option("train_per_class", train_per_class, 1, smallest - 1, why)
    room = smallest - (1 if train_per_class is None else train_per_class)
    if val_per_class is not None:
        val_per_class = _int_option("val_per_class", val_per_class, 1, room, why)

    # 0..16 -> 0..255, so the arrays are ordinary 8-bit images for load_image
    pixels = (images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
    rng = np.random.default_rng(seed)
    train_idx: list[int] = []
    val_idx: list[int] = []
    new_label = np.full(10, -1)
    for label, (digit, idx) in enumerate(zip(digits_kept, members, strict=True)):
        new_label[digit] = label
        order = rng.permutation(idx)
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
    kept = np.concatenate(members)
    if train_per_class is None and val_per_class is None:
        tr, va = stratified_split(target[kept], 0.2, seed)
        train_idx, val_idx = list(kept[tr]), list(kept[va])
    labels = new_label[target]
    return ImageDataset(
        name="digits",
        classes=[str(d) for d in digits_kept],
        train=_subset(pixels, labels, sorted(train_idx)),
        val=_subset(pixels, labels, sorted(val_idx)),
    )


def _digit_classes_option(classes: Any) -> list[int]:
    if classes is None:
        return list(range(10))
    bad = (
        isinstance(classes, str)
        or not isinstance(classes, Sequence)
        or not all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
    )
    if bad:
        raise ConfigError(f"option 'classes' must be a list of digits 0..9, not {classes!r}")
    out_of_range = [c for c in classes if not 0 <= c <= 9]
    if out_of_range:
        raise ConfigError(
            f"option 'classes' holds {out_of_range} but digits are 0..9 (e.g. classes = [0, 1])"
        )
    duplicates = sorted({c for c in classes if list(classes).count(c) > 1})
    if duplicates:
        raise ConfigError(f"option 'classes' lists {duplicates} more than once")
    if len(classes) < 2:
        raise ConfigError(f"option 'classes' needs at least two digits, not {list(classes)}")
    return list(classes)


# -- synthetic -----------------------------------------------------------------------------------
def synthetic(
    *,
    num_classes: int = 3,
    train_per_class: int = 16,
    val_per_class: int = 8,
    image_size: int = 32,
    seed: int = 0,
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
    num_classes = _int_option("num_classes", num_classes, 2, 100)
    train_per_class = _int_option("train_per_class", train_per_class, 1)
    val_per_class = _int_option("val_per_class", val_per_class, 1)
    image_size = _int_option("image_size", image_size, 4, 512)
    seed = _seed_option(seed)
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
