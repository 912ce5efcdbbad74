"""A folder of images, one sub-folder per class: what the ``imagefolder`` dataset reads and what
``autofreeze evaluate`` and ``predict`` take (:mod:`autofreeze.runs.model`)."""

from __future__ import annotations

from pathlib import Path

from autofreeze.errors import DatasetError

IMAGE_EXTENSIONS = tuple(
    [".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"]
)


def visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_classes(
    folder: Path, exts: tuple[str, ...] = IMAGE_EXTENSIONS
) -> tuple[list[str], list[tuple[str, int]]]:
    """The class names (sub-folder names, sorted) and every image file with its label; one
    clear error for a folder without class sub-folders or a class folder without images."""
    class_dirs = visible_dirs(folder)
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
