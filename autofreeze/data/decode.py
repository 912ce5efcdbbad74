"""Decoding a dataset once: its uint8 pixels in a file that every worker on the machine, and
every later study on the same data, reads instead of decoding again.

A split whose images are files (or that says what it is: :attr:`ImageSet.identity`) is
decoded into ``<key>.u8`` (N x 3 x S x S uint8, row-major) under the study's cache folder.
The key is the images' identity (each file's path, size and modification time) and the
decoding (image size, resize and crop); normalisation is not in it, so studies of backbones
with other means and stds share the file. One process decodes (an advisory lock; the others
wait and read), in ``workers`` processes with progress on stderr, into a temporary file renamed
into place; the sidecar ``<key>.json`` (images kept, images that failed) is written last, so a
crash at any point leaves nothing that is later read.

A split that fits under the memory bound is read into memory (uint8: a quarter of float32);
a larger one is read by rows from the file (:class:`autofreeze.data.tensors.DiskImages`).
Images in memory (arrays, PIL images) are decoded by each process as before.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autofreeze.data.images import ImageSet, check_norm, check_size, decode_image, to_tensors
from autofreeze.data.tensors import DiskImages, TensorSplit
from autofreeze.errors import DatasetError
from autofreeze.progress import Progress, quiet

STORE_VERSION = 1  # bump when decode_image changes what it gives: old files are not read
DECODING = "rgb, shorter side bicubic antialiased, centre crop"
CHUNK = 64  # images per task of a decoding process
PARALLEL_MIN = 256  # fewer images are decoded in this process


def identity(images: ImageSet) -> str | None:
    """What the images are: the split's own identity, or each file's path, size and
    modification time; None for images in memory."""
    if images.identity:
        return images.identity
    items = images.images
    if not len(items) or not all(isinstance(i, str | os.PathLike) for i in items):
        return None
    h = hashlib.sha256()
    for item in items:
        path = Path(item)
        try:
            st = path.stat()
            h.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}|missing\n".encode())  # decoding names it
    return h.hexdigest()


@dataclass(frozen=True)
class Decoding:
    """Where and how a dataset of files is decoded once (see the module doc).

    Attributes:
        folder: the store the decoded file goes in; None decodes in memory in each process.
        memory_bytes: a split up to this size is read into memory, a larger one by rows
            from its file.
        workers: processes that decode (fewer images than ``PARALLEL_MIN`` are decoded in
            this one).
        skip_bad: images that do not decode are left out (and said) instead of stopping it.
        progress: where decoding says how far it is.
    """

    folder: Path | None = None
    memory_bytes: int = 2**62
    workers: int = 1
    skip_bad: bool = False
    progress: Progress = quiet


def decode_split(
    images: ImageSet,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    size: int,
    decoding: Decoding = Decoding(),
    label: str = "images",
) -> TensorSplit:
    """``images`` as a uint8 split: decoded once into ``decoding.folder`` where they can be
    identified (see the module doc), in memory where they fit under ``decoding.memory_bytes``.
    Images that do not decode stop it with one line naming the first, unless
    ``decoding.skip_bad`` (they are left out, and said).

    Args:
        images: the split's images and labels.
        mean: the normalisation's per-channel mean (applied per batch, not stored).
        std: the normalisation's per-channel standard deviation.
        size: the side of the square images.
        decoding: where and how they are decoded.
        label: the split's name in messages (``train``, ``val``).
    """
    check_size(size)
    mean, std = check_norm(mean, std)
    if len(images.images) != len(images.labels):
        raise DatasetError(
            f"{len(images.images)} images but {len(images.labels)} labels; they must match"
        )
    folder = decoding.folder
    ident = identity(images) if folder is not None else None
    if ident is None or folder is None:
        return to_tensors(images, mean=mean, std=std, size=size)
    key = hashlib.sha256(json.dumps([STORE_VERSION, ident, size, DECODING]).encode())
    key_hex = key.hexdigest()[:32]
    created = [d for d in (folder.parent, folder) if not d.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    path, meta = folder / f"{key_hex}.u8", folder / f"{key_hex}.json"
    lock = folder / f"{key_hex}.lock"
    with _locked(lock):
        info = _read_meta(path, meta, size)
        if info is None:
            for stale in folder.glob(f".{key_hex}.*.tmp"):  # a crashed writer's: we hold the lock
                stale.unlink(missing_ok=True)
            info = _decode_to(path, meta, images.images, size, label, decoding)
        if meta.exists():
            os.utime(meta)  # recently used
    if info["bad"] and not decoding.skip_bad:
        if not meta.exists():  # decoded here and refused: leave nothing behind
            lock.unlink(missing_ok=True)
            for d in reversed(created):
                if not any(d.iterdir()):
                    d.rmdir()
        raise DatasetError(_bad_message(info["bad"], label))
    if info["bad"]:
        decoding.progress(f"note: {len(info['bad'])} {label} images left out: {info['bad'][0]}")
    kept = np.asarray(info["kept"], dtype=np.int64)
    y = torch.as_tensor(np.asarray(images.labels, dtype=np.int64).reshape(-1)[kept])
    n, row = len(kept), 3 * size * size
    if n * row <= decoding.memory_bytes:
        data = np.fromfile(path, dtype=np.uint8, count=n * row).reshape(n, 3, size, size)
        return TensorSplit(torch.from_numpy(data), y, mean=mean, std=std)
    return TensorSplit(DiskImages(path, n, size, key_hex), y, mean=mean, std=std)


def _bad_message(bad: list[str], label: str) -> str:
    more = f" ({len(bad) - 1} more {label} images do not decode)" if len(bad) > 1 else ""
    return (
        f"{bad[0]}{more}; fix or remove them, or set [training] skip_bad_images = true to "
        "train without them"
    )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one decoder; the others wait, then read its file
        yield


def _read_meta(path: Path, meta: Path, size: int) -> dict[str, Any] | None:
    """The sidecar of a complete file (written after it), or None."""
    try:
        info = json.loads(meta.read_text())
        complete = path.stat().st_size == len(info["kept"]) * 3 * size * size
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if complete and info.get("size") == size else None


# -- decoding, in worker processes --------------------------------------------------------------
_JOB: dict[str, Any] = {}  # what forked decoding processes inherit: the items, the file, the size


def _decode_rows(start: int, stop: int) -> tuple[int, list[tuple[int, str]]]:
    items, tmp, size, n = _JOB["items"], _JOB["tmp"], _JOB["size"], _JOB["n"]
    rows = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=(n, 3, size, size))
    bad = []
    for i in range(start, stop):
        item = items[i]
        try:
            rows[i] = decode_image(item, size)
        except DatasetError as exc:
            named = isinstance(item, str | os.PathLike)
            bad.append((i, str(exc) if named else f"image {i}: {exc}"))
    rows.flush()
    return stop - start, bad


def _decode_to(
    path: Path,
    meta: Path,
    items: Sequence[Any],
    size: int,
    label: str,
    decoding: Decoding,
) -> dict[str, Any]:
    """Decode ``items`` into ``path`` and write its sidecar ``meta``; with images that do not
    decode and not ``skip_bad``, nothing is kept (the caller refuses the dataset)."""
    n, row = len(items), 3 * size * size
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.truncate(n * row)
    t0 = time.perf_counter()
    try:
        bad = _decode_rows_into(tmp, items, size, label, decoding, t0)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    kept = sorted(set(range(n)) - {i for i, _ in bad})
    info = {"size": size, "n": len(kept), "kept": kept, "bad": [m for _, m in sorted(bad)]}
    if bad and not decoding.skip_bad:
        tmp.unlink(missing_ok=True)
        return info
    _publish(tmp, path, meta, info, row)
    if not bad:
        seconds = time.perf_counter() - t0
        decoding.progress(
            f"decoding {label}: {n} images in {seconds:.1f} s ({n / max(seconds, 1e-9):.0f}/s), "
            "kept for later runs"
        )
    return info


def _decode_rows_into(
    tmp: Path,
    items: Sequence[Any],
    size: int,
    label: str,
    decoding: Decoding,
    t0: float,
) -> list[tuple[int, str]]:
    """Decode ``items`` into the rows of ``tmp``, in ``decoding.workers`` processes where there
    are enough of them; the images that did not decode (row, message)."""
    n = len(items)
    _JOB.update(items=items, tmp=tmp, size=size, n=n)
    tasks = [(s, min(n, s + CHUNK)) for s in range(0, n, CHUNK)]
    workers = max(1, min(decoding.workers, len(tasks))) if n >= PARALLEL_MIN else 1
    pool = None
    try:
        if workers > 1:
            # fork: the processes inherit the items (a lazy sequence need not be picklable)
            pool = multiprocessing.get_context("fork").Pool(workers)
            parts: Iterator[tuple[int, list]] = pool.imap_unordered(_star, tasks)
        else:
            parts = (_decode_rows(s, e) for s, e in tasks)
        bad = _gather(parts, n, label, decoding.progress, t0)
        if pool is not None:
            pool.close()
            pool.join()
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    finally:
        _JOB.clear()
    return bad


def _gather(
    parts: Iterable[tuple[int, list[tuple[int, str]]]],
    n: int,
    label: str,
    progress: Progress,
    t0: float,
) -> list[tuple[int, str]]:
    """The failures of every part as it is done, saying how far decoding is: a bar on a
    terminal, else a line every 2 s."""
    bad: list[tuple[int, str]] = []
    done, said = 0, 0.0
    bar = _bar(n, label, progress)
    for count, failed in parts:
        done += count
        bad += failed
        now = time.perf_counter()
        if bar is not None:
            bar.update(count)
        elif now - said > 2.0 and done < n:  # not a terminal: a line every 2 s
            rate = done / max(now - t0, 1e-9)
            progress(f"decoding {label}: {done}/{n} images ({rate:.0f}/s)")
            said = now
    if bar is not None:
        bar.close()
    return bad


def _publish(tmp: Path, path: Path, meta: Path, info: dict[str, Any], row: int) -> None:
    """Move the decoded file into place (only the rows that decoded), then its sidecar: its
    presence says the file is whole."""
    if info["bad"] and info["kept"]:
        _compact(tmp, info["kept"], row)
    os.replace(tmp, path)
    side = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    side.write_text(json.dumps(info))
    os.replace(side, meta)  # last: its presence says the file is whole


def _bar(n: int, label: str, progress: Progress) -> Any:
    """A progress bar on a terminal's stderr (none for quiet callers or logs)."""
    if progress is quiet or getattr(progress, "silent", False) or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=n, desc=f"decoding {label}", unit="img", file=sys.stderr, leave=False)


def _star(task: tuple[int, int]) -> tuple[int, list[tuple[int, str]]]:
    return _decode_rows(*task)


def _compact(tmp: Path, kept: list[int], row: int) -> None:
    """Rewrite the file with only the rows that decoded, in order."""
    out = tmp.with_suffix(".kept")
    with open(tmp, "rb") as src, open(out, "wb") as dst:
        for i in kept:
            src.seek(i * row)
            dst.write(src.read(row))
    os.replace(out, tmp)
