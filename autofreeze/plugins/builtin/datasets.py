"""Built-in datasets: image folders, CSV files of paths and labels, and two offline sets.

``imagefolder`` and ``csv`` keep images as file paths, decoded lazily by
:func:`autofreeze.data.images.load_image`; ``digits`` (scikit-learn's bundled 8 x 8 digits) and
``synthetic`` (generated stripes) need no files and no network. Each factory takes keyword
options (the study config's ``[dataset]`` table), checked from their type hints by
:func:`autofreeze.data.options.validate_options`: a bad value raises :class:`ConfigError` naming the
option, bad data raises :class:`DatasetError` naming the file or folder.
"""

from __future__ import annotations

from autofreeze.hookspecs import DatasetRegister, hookimpl
from autofreeze.plugins.builtin._files import csv, imagefolder
from autofreeze.plugins.builtin._offline import digits, synthetic

__all__ = ["csv", "digits", "imagefolder", "synthetic"]


@hookimpl
def register_datasets(register: DatasetRegister) -> None:
    register("imagefolder", imagefolder, "a folder of class sub-folders (or train/ and val/)")
    register("csv", csv, "a CSV file of image paths and labels, optional train/val split column")
    register("digits", digits, "scikit-learn's 8x8 handwritten digits (offline, 1797 images)")
    register("synthetic", synthetic, "generated colour/stripe classes for smoke tests")
