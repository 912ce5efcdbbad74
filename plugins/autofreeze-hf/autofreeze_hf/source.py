"""Reading a local Hugging Face dataset: which format a path holds, loading it with the
``datasets`` library without touching the network, finding its image and label columns, and
the lazy sequence of images handed to autofreeze.

``datasets`` is imported by :func:`import_datasets` only, when a dataset is built, so
registering the plugin stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import operator
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autofreeze.hookspecs import DatasetError, first_line

if TYPE_CHECKING:
    from types import ModuleType

    import datasets

FORMATS = ("auto", "disk", "imagefolder", "parquet")
LABEL_NAMES = ("label", "labels")  # fallback label columns when no column is a ClassLabel
STRING_TYPES = ("string", "large_string")
INT_TYPES = tuple(f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64))
CASTABLE_IMAGE_TYPES = ("binary", "large_binary", *STRING_TYPES)  # bytes or file paths


def import_datasets() -> ModuleType:
    """The ``datasets`` module, or a one-line error saying how to install it."""
    try:
        import datasets
    except ImportError as exc:
        raise DatasetError(
            f"dataset 'hf' needs the datasets library ({first_line(exc)}); "
            "pip install autofreeze-hf (or: pip install datasets)"
        ) from None
    return datasets


@contextlib.contextmanager
def quiet_offline(datasets: ModuleType) -> Iterator[None]:
    """Force ``datasets`` offline, and its logging down to critical, while loading.

    ``datasets`` reads ``HF_DATASETS_OFFLINE`` once, when it is imported; unless it was set,
    ``load_dataset("imagefolder" | "parquet", ...)`` sends a request to count the download
    even for local files. Every path here is local, so nothing needs the network. A failed load
    also logs its error before raising it; the raised error becomes our one line.
    """
    offline, verbosity = datasets.config.HF_HUB_OFFLINE, datasets.logging.get_verbosity()
    datasets.config.HF_HUB_OFFLINE = True
    datasets.logging.set_verbosity(logging.CRITICAL)
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = offline
        datasets.logging.set_verbosity(verbosity)


def detect_format(root: Path) -> str:
    """``disk`` for a ``save_to_disk`` folder, ``parquet`` for a ``.parquet`` file or a folder
    holding some, else ``imagefolder``."""
    if root.is_dir():
        if (root / "dataset_dict.json").is_file() or (
            (root / "dataset_info.json").is_file() and (root / "state.json").is_file()
        ):
            return "disk"
        if any(p.is_file() for p in root.rglob("*.parquet")):
            return "parquet"
    elif root.suffix.lower() == ".parquet":
        return "parquet"
    return "imagefolder"


def load_splits(root: Path, fmt: str, train_split: str) -> dict[str, datasets.Dataset]:
    """The splits at ``root`` by name; a single ``Dataset`` (no splits) is ``train_split``."""
    if not root.exists():
        raise DatasetError(
            f"dataset path not found: {root} (option 'path': a save_to_disk folder, an image "
            "folder, or a .parquet file or folder)"
        )
    if fmt == "auto":
        fmt = detect_format(root)
        if fmt == "imagefolder" and not root.is_dir():
            raise DatasetError(
                f"dataset path {root} is a file but not .parquet; give a save_to_disk folder, "
                "an image folder, or a .parquet file or folder"
            )
    elif fmt in ("disk", "imagefolder") and not root.is_dir():
        raise DatasetError(f"format {fmt!r} needs a folder, but {root} is a file")
    datasets = import_datasets()
    try:
        with quiet_offline(datasets):
            if fmt == "disk":
                loaded = datasets.load_from_disk(str(root))
            elif root.is_dir():
                loaded = datasets.load_dataset(fmt, data_dir=str(root))
            else:
                loaded = datasets.load_dataset(fmt, data_files=str(root))
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as exc:
        raise DatasetError(f"cannot read {root} as format {fmt!r}: {first_line(exc)}") from None
    if isinstance(loaded, datasets.Dataset):
        return {train_split: loaded}
    return dict(loaded)


# -- columns -------------------------------------------------------------------------------------
def kind_of(feature: Any) -> str:
    """A column's feature type, as shown in error messages."""
    dtype = getattr(feature, "dtype", None)
    if type(feature).__name__ == "Value" and isinstance(dtype, str):
        return dtype
    return "struct" if isinstance(feature, Mapping) else type(feature).__name__


def _columns(features: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} ({kind_of(f)})" for name, f in features.items()) or "none"


def image_column_of(features: Mapping[str, Any], chosen: str | None, where: str) -> str:
    """The column of images: ``chosen`` (checked), else the single column of type ``Image``."""
    if chosen is not None:
        if chosen not in features:
            raise DatasetError(
                f"{where} has no column {chosen!r} (columns: {_columns(features)}); "
                "set image_column to the column of images"
            )
        feature = features[chosen]
        if kind_of(feature) not in ("Image", *CASTABLE_IMAGE_TYPES) and not _is_image_struct(
            feature
        ):
            raise DatasetError(
                f"{where}: column {chosen!r} is {kind_of(feature)}, not images (an Image column, "
                "image bytes or file paths); set image_column to the column of images"
            )
        return chosen
    images = [name for name, f in features.items() if kind_of(f) == "Image"]
    if len(images) == 1:
        return images[0]
    if images:
        raise DatasetError(
            f"{where} has {len(images)} Image columns ({', '.join(images)}); "
            "set image_column to the one to train on"
        )
    raise DatasetError(
        f"{where} has no column of feature type Image (columns: {_columns(features)}); "
        "set image_column to the column of image bytes or file paths"
    )


def _is_image_struct(feature: Any) -> bool:
    """``{"bytes": ..., "path": ...}``: how an Image column reads without its feature type."""
    return isinstance(feature, Mapping) and set(feature) == {"bytes", "path"}


def label_column_of(features: Mapping[str, Any], chosen: str | None, where: str) -> str:
    """The column of labels: ``chosen`` (checked), else the single ``ClassLabel`` column, else
    a string or integer column named ``label`` or ``labels``."""
    if chosen is not None:
        if chosen not in features:
            raise DatasetError(
                f"{where} has no column {chosen!r} (columns: {_columns(features)}); "
                "set label_column to the column of labels"
            )
        if kind_of(features[chosen]) not in ("ClassLabel", *STRING_TYPES, *INT_TYPES):
            raise DatasetError(
                f"{where}: column {chosen!r} is {kind_of(features[chosen])}; labels must be a "
                "ClassLabel, string or integer column (set label_column)"
            )
        return chosen
    found = [name for name, f in features.items() if kind_of(f) == "ClassLabel"]
    kind = "ClassLabel"
    if not found:
        found = [n for n in LABEL_NAMES if kind_of(features.get(n)) in (*STRING_TYPES, *INT_TYPES)]
        kind = "label/labels"
    if len(found) == 1:
        return found[0]
    if found:
        raise DatasetError(
            f"{where} has {len(found)} {kind} columns ({', '.join(found)}); "
            "set label_column to the one to classify"
        )
    raise DatasetError(
        f"{where} has no ClassLabel column and no string or integer column named label or "
        f"labels (columns: {_columns(features)}); set label_column"
    )


def read_labels(ds: datasets.Dataset, column: str) -> list[Any]:
    """The labels of ``column``, read from Arrow without decoding any image: a ClassLabel's
    class names (``None`` for ``-1``, its "no label"), else the strings or integers stored."""
    values = ds.select_columns([column]).with_format("arrow")[column].to_pylist()
    feature = ds.features[column]
    if kind_of(feature) != "ClassLabel":
        return values
    names = feature.names
    return [names[v] if v is not None and 0 <= v < len(names) else None for v in values]


def as_images(ds: datasets.Dataset, column: str) -> LazyImages:
    """The images of ``column``, decoded on access; bytes or paths are cast to ``Image``."""
    datasets = import_datasets()
    ds = ds.select_columns([column]).with_format(None)  # saved formats (torch, ...) dropped
    feature = ds.features[column]
    if not isinstance(feature, datasets.Image) or not feature.decode:
        ds = ds.cast_column(column, datasets.Image())
    return LazyImages(ds, column)


class LazyImages(Sequence):
    """The images of one column of a ``datasets.Dataset``: PIL images decoded one at a time,
    when an index is read, so building a dataset decodes nothing. A slice is again lazy."""

    def __init__(self, ds: datasets.Dataset, column: str) -> None:
        self.ds = ds
        self.column = column

    def __len__(self) -> int:
        return self.ds.num_rows

    @property
    def identity(self) -> str | None:
        """What the images are, for autofreeze's decoded-image store (shared by the machine's
        workers and later studies): the dataset's fingerprint, which ``datasets`` derives from
        its files and every transform (``select`` included), and the column. None when the
        dataset has none (the images are then decoded in memory by each process)."""
        fingerprint = getattr(self.ds, "_fingerprint", None)  # no public accessor
        return f"hf:{fingerprint}:{self.column}" if fingerprint else None

    def take(self, indices: Sequence[int]) -> LazyImages:
        """The images at ``indices``, still lazy."""
        return LazyImages(self.ds.select(indices), self.column)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.take(range(len(self))[index])
        i = operator.index(index)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image index {index} out of range for {n} images")
        return self.ds[i % n][self.column]

    def __repr__(self) -> str:
        return f"LazyImages({len(self)} images of column {self.column!r})"
