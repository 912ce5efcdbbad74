"""Decoded images as tensors: uint8 in memory or on disk, normalised batch by batch.

A :class:`TensorSplit` holds the images of one split and their labels. Images are stored as
decoded (uint8, N x 3 x S x S, 4x smaller than float32) with the backbone's ``mean`` and ``std``
and normalised per batch, on the device the batch goes to; or, for features and prefix outputs
computed from them, as float tensors used as they are. A split larger than the memory bound
stays on disk (:class:`DiskImages`, read by rows with ``preadv``: the worker's memory does not
grow with the dataset, and the page cache, not the process, holds what the disk gives); so do
prefix outputs larger than the cache's memory bound (:class:`RowFile` of 16-bit rows, each
checked against the CRC-32 written with it, see :mod:`autofreeze.cache.store`). Two splits
joined for ``train --on train+val`` stay where they are (:class:`JoinedRows`).
"""

from __future__ import annotations

import hashlib
import math
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from autofreeze.errors import DatasetError

Index = torch.Tensor | slice
T = TypeVar("T")
R = TypeVar("R")


def normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images to ``(x / 255 - mean) / std`` in float32, as one scale and one shift."""
    scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float64))
    shift = -torch.tensor(mean, dtype=torch.float64) / torch.tensor(std, dtype=torch.float64)
    out = x.to(torch.float32)
    view = (1, 3, 1, 1) if out.ndim == 4 else (3, 1, 1)
    out.mul_(scale.to(torch.float32, copy=False).to(out.device).view(view))
    return out.add_(shift.to(torch.float32).to(out.device).view(view))


class RowStore:
    """Rows read on demand rather than held: a file of rows (:class:`RowFile`), or two
    stores joined end to end (:class:`JoinedRows`). What a :class:`TensorSplit` needs of
    them: ``shape``, ``dtype``, ``key``, ``len`` and :meth:`read`."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    key: str

    def __len__(self) -> int:
        return self.shape[0]

    def numel(self) -> int:
        return math.prod(self.shape)

    def element_size(self) -> int:
        return torch.empty(0, dtype=self.dtype).element_size()

    def read(self, index: Index, pin: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, index: Index) -> torch.Tensor:
        return self.read(index)


class RowCorrupt(DatasetError):
    """A row read from a file does not match the checksum written with it."""


class RowFile(RowStore):
    """Rows of one shape and dtype (row-major) in a file from byte ``offset``, read on demand
    with ``preadv``, into pinned memory when they go to a GPU. With ``crc`` (one CRC-32 per
    row, written with the file) every row read is checked against it: a file changed on
    disk is deleted (with its sidecar ``<name>.json``) and raises :class:`RowCorrupt` naming
    it, rather than giving other numbers."""

    def __init__(
        self,
        path: Path,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        key: str,
        offset: int = 0,
        crc: np.ndarray | None = None,
    ) -> None:
        self.path, self.shape, self.dtype, self.key = Path(path), tuple(shape), dtype, key
        self.offset, self.crc = offset, crc
        self.row_bytes = math.prod(self.shape[1:]) * self.element_size()
        self._fd: int | None = None

    def __getstate__(self) -> dict:  # an open descriptor does not cross processes
        return {**self.__dict__, "_fd": None}

    def open(self) -> RowFile:
        """Open the file now (a file opened stays readable if another worker deletes it)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self

    def read(self, index: Index, pin: bool = False) -> torch.Tensor:
        """Rows ``index`` (a slice, or a tensor of row numbers in any order) as one tensor."""
        fd = self.open()._fd
        assert fd is not None
        n = self.shape[0]
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            rows = range(start, stop, step) if step != 1 else range(start, max(start, stop))
        else:
            rows = index.tolist()
        out = torch.empty((len(rows), *self.shape[1:]), dtype=self.dtype, pin_memory=pin)
        if not len(rows):
            return out
        buf = out.view(torch.uint8).numpy().reshape(len(rows), self.row_bytes)
        if isinstance(rows, range) and rows.step == 1:  # one read for a run of rows
            os.preadv(fd, [buf], self.offset + rows.start * self.row_bytes)
        else:
            for i, row in enumerate(rows):
                os.preadv(fd, [buf[i]], self.offset + row * self.row_bytes)
        if self.crc is not None:
            self._check(buf, rows)
        return out

    def _check(self, buf: np.ndarray, rows: Sequence[int]) -> None:
        for i, row in enumerate(rows):
            if zlib.crc32(buf[i]) != int(self.crc[row]):  # type: ignore[index]
                # the entry goes (with its sidecar): the next run computes it anew
                self.path.unlink(missing_ok=True)
                self.path.with_name(f"{self.path.name}.json").unlink(missing_ok=True)
                raise RowCorrupt(
                    f"{self.path} was corrupt (row {row} does not match its checksum) and is "
                    "deleted; run again to compute it anew"
                )

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


class DiskImages(RowFile):
    """uint8 images (N x 3 x S x S, row-major) in a file written by
    :mod:`autofreeze.data.decode`."""

    def __init__(self, path: Path, n: int, size: int, key: str) -> None:
        super().__init__(path, (n, 3, size, size), torch.uint8, key)
        self.n, self.size = n, size


class JoinedRows(RowStore):
    """Two row sources of one row shape and dtype end to end (rows of ``b`` follow ``a``'s),
    each a tensor or a :class:`RowStore`: a batch reads its rows from where they are, so
    neither is copied (``train --on train+val`` on splits streamed from disk)."""

    def __init__(self, a: torch.Tensor | RowStore, b: torch.Tensor | RowStore) -> None:
        if tuple(a.shape[1:]) != tuple(b.shape[1:]) or a.dtype != b.dtype:
            raise ValueError("rows of different shapes or dtypes cannot be joined")
        self.a, self.b = a, b
        self.shape = (a.shape[0] + b.shape[0], *a.shape[1:])
        self.dtype = a.dtype
        self.key = f"{_key(a)}+{_key(b)}"

    def read(self, index: Index, pin: bool = False) -> torch.Tensor:
        if isinstance(index, slice):
            index = torch.arange(*index.indices(self.shape[0]))
        index = torch.as_tensor(index, dtype=torch.int64)
        n_a = self.a.shape[0]
        in_a = index < n_a
        out = torch.empty((len(index), *self.shape[1:]), dtype=self.dtype, pin_memory=pin)
        for part, mask, base in ((self.a, in_a, 0), (self.b, ~in_a, n_a)):
            if bool(mask.any()):
                out[mask] = _rows(part, _runs(index[mask] - base))
        return out


def _runs(index: torch.Tensor) -> Index:
    """Consecutive ascending rows as a slice (one read of a file), else the rows."""
    if len(index) and bool((index.diff() == 1).all()):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def _rows(part: torch.Tensor | RowStore, index: Index) -> torch.Tensor:
    return part.read(index) if isinstance(part, RowStore) else part[index]


def _key(part: torch.Tensor | RowStore) -> str:
    return part.key if isinstance(part, RowStore) else tensor_fingerprint(part)


@dataclass
class TensorSplit:
    """Images ``x`` and labels ``y`` (int64, N) of one split.

    ``x`` is uint8 (N x 3 x S x S, a tensor or a :class:`RowStore` on disk) with the ``mean`` and
    ``std`` that normalise it, or a float tensor already normalised (features, prefix
    outputs). With ``views > 1``, ``x`` stacks that many augmented views of every image,
    view-major (view ``v`` of image ``i`` is row ``v * N + i``; see :mod:`autofreeze.data.augment`);
    ``len`` is ``N``.
    """

    x: torch.Tensor | RowStore
    y: torch.Tensor
    views: int = 1
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def on_disk(self) -> bool:
        return isinstance(self.x, RowStore)

    @property
    def nbytes(self) -> int:
        return self.x.numel() * self.x.element_size()

    def rows(self, index: Index, pin: bool = False) -> torch.Tensor:
        """Rows of ``x`` as stored (uint8 images or float features)."""
        if isinstance(self.x, RowStore):
            return self.x.read(index, pin=pin)
        return self.x[index]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Stored rows as the model takes them: normalised float32 (where they are)."""
        if self.mean is None or x.dtype != torch.uint8:
            return x
        assert self.std is not None
        return normalise(x, self.mean, self.std)

    def batch(self, index: Index, device: torch.device | str | None = None) -> torch.Tensor:
        """Rows ``index`` normalised, on ``device`` (copied there before normalising: a
        quarter of the bytes of a float batch cross the bus)."""
        dev = torch.device(device) if device is not None else None
        x = self.rows(index, pin=dev is not None and dev.type == "cuda")
        if dev is not None:
            x = x.to(dev, non_blocking=True)
        return self.prepare(x)

    def chunks(self, size: int, device: torch.device | str | None = None) -> Iterator[torch.Tensor]:
        """Every row in order, normalised, ``size`` rows at a time."""
        n = self.x.shape[0]
        for start in range(0, n, size):
            yield self.batch(slice(start, min(n, start + size)), device)

    def normalised(self) -> TensorSplit:
        """A float32 copy in memory (small splits: the probe, a checkpoint's validation)."""
        x = torch.cat(list(self.chunks(1024))) if len(self) else self.prepare(self.rows(slice(0)))
        return TensorSplit(x, self.y, self.views)

    def to(self, device: torch.device | str) -> TensorSplit:
        """In memory on ``device`` (a split on disk stays there)."""
        if isinstance(self.x, RowStore):
            return replace(self, y=self.y.to(device))
        return replace(self, x=self.x.to(device), y=self.y.to(device))

    def fingerprint(self) -> str:
        """What the split's content depends on: its images (sampled, or the store's key) and
        their normalisation."""
        base = _key(self.x)
        return f"{base}:{self.mean}:{self.std}:{self.views}"


def cat(a: TensorSplit, b: TensorSplit) -> TensorSplit:
    """Two splits of the same preprocessing as one (``train --on train+val``): in memory where
    both are, else a :class:`JoinedRows` view that reads each batch's rows from where they
    are (a split streamed from disk stays there: the join holds no copy of either)."""
    if (a.mean, a.std) != (b.mean, b.std):
        raise ValueError("splits of different preprocessing cannot be joined")
    if a.views != 1 or b.views != 1:
        raise ValueError("splits of augmented views cannot be joined")
    y = torch.cat([a.y, b.y])
    if a.on_disk or b.on_disk:
        return TensorSplit(JoinedRows(a.x, b.x), y, 1, a.mean, a.std)
    return TensorSplit(torch.cat([a.rows(slice(None)), b.rows(slice(None))]), y, 1, a.mean, a.std)


def tensor_fingerprint(t: torch.Tensor, samples: int = 4096) -> str:
    """Shape, dtype and a checksum of evenly spaced elements: cheap on any dataset size, and it
    changes when the data, their preprocessing or the image size do."""
    flat = t.reshape(-1)
    m = min(samples, flat.numel())
    idx = torch.arange(m, dtype=torch.int64) * max(0, flat.numel() - 1) // max(1, m - 1)
    picked = flat[idx].contiguous().float().cpu().numpy().tobytes()
    return f"{tuple(t.shape)}:{t.dtype}:{hashlib.sha256(picked).hexdigest()[:16]}"


def prefetched(fetch: Callable[[T], R], items: Iterable[T], ahead: bool = True) -> Iterator[R]:
    """``fetch`` of each item in order; with ``ahead``, the next one is fetched in a thread
    while the caller works on the current one (disk reads and host-to-device copies overlap
    the step: file reads and torch copies release the GIL)."""
    if not ahead:
        yield from map(fetch, items)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="autofreeze-prefetch") as pool:
        pending: Future[R] | None = None
        for item in items:
            nxt = pool.submit(fetch, item)
            if pending is not None:
                yield pending.result()
            pending = nxt
        if pending is not None:
            yield pending.result()
