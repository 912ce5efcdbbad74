"""Where frozen-prefix outputs are kept: memory per worker, a folder for the machine's workers.

See :class:`PrefixCache`; what is cached, and under which key, is
:mod:`autofreeze.cache.activations`. Entries that fit under the memory bound are tensors (in
memory, or a ``.pt`` file read memory-mapped); larger ones are rows in a file
(:meth:`PrefixCache.get_rows`), written batch by batch as they are computed and read by the
rows of each batch, so that neither computing nor training holds more than a batch of them.

A rows entry is ``<key>.rows`` (the train rows, then the val rows, 16-bit, row-major) and its
sidecar ``<key>.rows.json`` (layout and one CRC-32 per row), both written to temporary names
and renamed into place, the sidecar last: its presence says the file is whole. A file whose
size does not match its sidecar (truncated) is computed again; a row whose bytes do not
match its checksum when read stops the trial with one line naming the file (and it is
deleted, so the next trial computes it anew): never other numbers than those computed.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from autofreeze.data.tensors import RowFile

CACHE_FOLDER = ".autofreeze-cache"  # beside the study config: shared by the machine's workers


def default_memory_bytes() -> int:
    """A quarter of the RAM available when the worker starts (``MemAvailable``; the machine's
    RAM where the kernel does not say)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 4
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def default_cache_bytes(folder: Path | None) -> int:
    """A quarter of the free disk under ``folder`` (or of the machine's RAM without one)."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(folder).free // 4
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


Pair = tuple[torch.Tensor, torch.Tensor]
ROWS_VERSION = 1  # bump when the rows file's layout changes: old entries are not read
FREE_MARGIN = 2**30  # disk left free beside a new rows entry


class CacheFull(ValueError):
    """An entry that cannot be stored (the message says why); the trial runs uncached."""


@dataclass(frozen=True)
class RowLayout:
    """What a rows entry holds: ``train`` then ``val`` rows of ``shape`` in ``dtype``."""

    train: int
    val: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape) * torch.empty(0, dtype=getattr(torch, self.dtype)).itemsize

    @property
    def nbytes(self) -> int:
        return (self.train + self.val) * self.row_bytes

    def files(self, path: Path, key: str, crc: np.ndarray) -> tuple[RowFile, RowFile]:
        """The train and val rows of the file at ``path``, opened."""
        dtype = getattr(torch, self.dtype)
        train = RowFile(path, (self.train, *self.shape), dtype, f"{key}:train", 0, crc)
        at = self.train * self.row_bytes
        val = RowFile(path, (self.val, *self.shape), dtype, f"{key}:val", at, crc[self.train :])
        return train.open(), val.open()


Batches = Iterable[torch.Tensor]


@dataclass
class PrefixCache:
    """Prefix outputs of the train and val images per content key: on disk for every worker of
    the study on the machine (with a ``folder``), else in memory within a worker (least
    recently used evicted past ``memory_bytes``).

    ``memory_bytes`` (by default a quarter of the RAM available) also bounds one entry: larger
    outputs are kept as rows in a file of the folder (:meth:`get_rows`, 16-bit), read by the
    rows of each batch, and refused (the trial runs uncached) only without a folder or where
    the disk cannot hold them (:mod:`autofreeze.cache.activations`).

    With a folder a worker keeps no copy of its own between trials: the trial that computes an
    entry trains on the tensors it computed, and every later one maps the file. What a trial
    holds is freed when it ends, and the entries of earlier trials are in the page cache, which
    the kernel gives back when memory is needed, rather than in the worker's memory while later
    trials train (each entry is often larger than the images it came from).

    A file is written to a temporary name and renamed into place (a crash leaves no half file
    that is later read), one writer at a time per key (an advisory lock: the second worker waits
    and reads the first one's file), and read memory-mapped. The folder is kept under
    ``disk_bytes`` by deleting the least recently used entries.
    """

    folder: Path | None = None
    memory_bytes: int = field(default_factory=default_memory_bytes)
    disk_bytes: int | None = None
    _memory: OrderedDict[str, Pair] = field(default_factory=OrderedDict)
    hits: int = 0  # served from memory
    disk_hits: int = 0  # read from a file another trial or worker wrote
    misses: int = 0  # computed here

    def get(self, key: str, compute: Callable[[], Pair]) -> Pair:
        if self.folder is not None:
            return self._from_disk(key, compute)
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        self.misses += 1
        pair = compute()
        self._memory[key] = pair
        while len(self._memory) > 1 and _nbytes(self._memory.values()) > self.memory_bytes:
            self._memory.popitem(last=False)
        return pair

    def _from_disk(self, key: str, compute: Callable[[], Pair]) -> Pair:
        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{key}.pt"
        with open(self.folder / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one writer; the others wait, then read its file
            if path.is_file():
                try:
                    state = torch.load(path, mmap=True, weights_only=True)
                    os.utime(path)  # recently used
                    self.disk_hits += 1
                    return state["train"], state["val"]
                except (RuntimeError, OSError, KeyError, EOFError):
                    path.unlink(missing_ok=True)  # unreadable: computed again below
            self.misses += 1
            train, val = compute()
            tmp = path.with_name(f".{key}.{os.getpid()}.tmp")
            torch.save({"train": train, "val": val}, tmp)
            os.replace(tmp, path)
        self._evict_disk(keep=path)
        return train, val

    def get_rows(
        self, key: str, layout: RowLayout, compute: Callable[[], tuple[Batches, Batches]]
    ) -> tuple[RowFile, RowFile]:
        """The train and val rows of entry ``key`` read from its file, or ``compute``d (the
        train batches, then the val batches, in row order) and written there batch by batch
        first. Raises :class:`CacheFull` where the entry cannot be stored: no folder, above
        the disk bound, or more than the disk has free."""
        if self.folder is None:
            raise CacheFull("no cache folder to keep them on disk")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{key}.rows"
        with open(self.folder / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one writer; the others wait, then read its file
            crc = _read_rows_meta(path, layout)
            if crc is not None:
                try:
                    files = layout.files(path, key, crc)
                    os.utime(path)  # recently used
                    self.disk_hits += 1
                    return files
                except OSError:
                    pass  # deleted by another worker's eviction: computed again
            self._make_room(layout.nbytes, keep=path)
            self.misses += 1
            crc = _write_rows(path, layout, compute)
            files = layout.files(path, key, crc)
        self._evict_disk(keep=path)
        return files

    def _make_room(self, need: int, keep: Path) -> None:
        """Refuse (:class:`CacheFull`) an entry of ``need`` bytes above the disk bound or the
        free disk; else delete the least recently used entries until it fits the bound."""
        assert self.folder is not None
        bound = self.disk_bytes if self.disk_bytes is not None else default_cache_bytes(self.folder)
        free = shutil.disk_usage(self.folder).free
        gib = 2**30
        if need > bound:
            raise CacheFull(
                f"its outputs would take {need / gib:.1f} GiB on disk, above the cache's disk "
                f"bound of {bound / gib:.1f} GiB ([training] cache_size; by default a quarter "
                "of the free disk)"
            )
        if need + FREE_MARGIN > free:
            raise CacheFull(
                f"its outputs would take {need / gib:.1f} GiB on disk and {self.folder} has "
                f"{free / gib:.1f} GiB free"
            )
        self._evict_disk(keep=keep, extra=need)

    def _evict_disk(self, keep: Path, extra: int = 0) -> None:
        """Delete the least recently used entries until the folder, and ``extra`` bytes
        more, fit the disk bound."""
        assert self.folder is not None
        bound = self.disk_bytes if self.disk_bytes is not None else default_cache_bytes(self.folder)
        files = [*self.folder.glob("*.pt"), *self.folder.glob("*.rows")]
        files.sort(key=_mtime)
        total = sum(_size(p) for p in files) + extra
        for old in files:
            if total <= bound:
                break
            if old != keep:
                total -= _size(old)
                old.unlink(missing_ok=True)
                old.with_name(f"{old.name}.json").unlink(missing_ok=True)
                old.with_suffix(".lock").unlink(missing_ok=True)


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def _read_rows_meta(path: Path, layout: RowLayout) -> np.ndarray | None:
    """The row checksums of a whole rows file of ``layout``, or None (missing, from another
    version, or truncated: computed again)."""
    meta = path.with_name(f"{path.name}.json")
    try:
        info = json.loads(meta.read_text())
        same = info["version"] == ROWS_VERSION and info["layout"] == _layout_json(layout)
        whole = path.stat().st_size == layout.nbytes
        crc = np.asarray(info["crc"], dtype=np.uint32)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if same and whole and len(crc) == layout.train + layout.val:
        return crc
    return None


def _layout_json(layout: RowLayout) -> dict:
    return json.loads(json.dumps(asdict(layout)))  # tuples as lists, as read back


def _write_rows(
    path: Path, layout: RowLayout, compute: Callable[[], tuple[Batches, Batches]]
) -> np.ndarray:
    """Write the computed batches to ``path`` through a temporary file, then the sidecar
    (last); the rows' CRC-32s."""
    dtype = getattr(torch, layout.dtype)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    crcs: list[int] = []
    try:
        with open(tmp, "wb") as f:
            for part, rows in zip(compute(), (layout.train, layout.val), strict=True):
                done = 0
                for batch in part:
                    data = _to_rows(batch, dtype, layout)
                    crcs += [zlib.crc32(row) for row in data]
                    f.write(data)
                    done += len(data)
                if done != rows:
                    raise ValueError(f"{done} rows of frozen work computed for a split of {rows}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    crc = np.asarray(crcs, dtype=np.uint32)
    meta = path.with_name(f"{path.name}.json")
    side = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    info = {"version": ROWS_VERSION, "layout": _layout_json(layout), "crc": crc.tolist()}
    side.write_text(json.dumps(info))
    os.replace(side, meta)  # last: its presence says the file is whole
    return crc


def _to_rows(batch: torch.Tensor, dtype: torch.dtype, layout: RowLayout) -> np.ndarray:
    """A batch as the file's rows (bytes of ``dtype``, one row per image); outputs beyond the
    dtype's range are refused (:class:`CacheFull`), never stored as infinities."""
    if tuple(batch.shape[1:]) != layout.shape:
        raise ValueError(f"prefix rows of shape {tuple(batch.shape[1:])}, not {layout.shape}")
    out = batch.detach().to("cpu", dtype).contiguous()
    if bool(torch.isinf(out).any()) and not bool(torch.isinf(batch).any()):
        top = float(batch.abs().max())
        raise CacheFull(
            f"its outputs reach {top:.3g}, beyond {layout.dtype}'s range "
            '(cache_dtype = "bfloat16" keeps float32\'s range)'
        )
    return out.view(torch.uint8).numpy().reshape(len(out), -1)


def _nbytes(pairs: Iterable[Pair]) -> int:
    return sum(t.numel() * t.element_size() for pair in pairs for t in pair)
