"""Decoded images as tensors: uint8 in memory or on disk, normalised batch by batch.

A :class:`TensorSplit` holds the images of one split and their labels. Images are stored as
decoded (uint8, N x 3 x S x S, 4x smaller than float32) with the backbone's ``mean`` and ``std``
and normalised per batch, on the device the batch goes to; or, for features and prefix outputs
computed from them, as float tensors used as they are. A split larger than the memory bound
stays on disk (:class:`DiskImages`, read by rows with ``preadv``: the worker's memory does not
grow with the dataset, and the page cache, not the process, holds what the disk gives).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import torch

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


class DiskImages:
    """uint8 images (N x 3 x S x S, row-major) in a file written by :mod:`autofreeze.data.decode`:
    rows are read on demand, into pinned memory when they go to a GPU."""

    dtype = torch.uint8

    def __init__(self, path: Path, n: int, size: int, key: str) -> None:
        self.path, self.n, self.size, self.key = Path(path), n, size, key
        self.shape = (n, 3, size, size)
        self.row_bytes = 3 * size * size
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.n

    def __getstate__(self) -> dict:  # an open descriptor does not cross processes
        return {**self.__dict__, "_fd": None}

    def numel(self) -> int:
        return self.n * self.row_bytes

    def element_size(self) -> int:
        return 1

    def read(self, index: Index, pin: bool = False) -> torch.Tensor:
        """Rows ``index`` (a slice, or a tensor of row numbers in any order) as one tensor."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        if isinstance(index, slice):
            start, stop, step = index.indices(self.n)
            if step == 1:
                out = torch.empty((max(0, stop - start), *self.shape[1:]), dtype=torch.uint8)
                if len(out):
                    os.preadv(self._fd, [out.numpy()], start * self.row_bytes)
                return out.pin_memory() if pin else out
            index = torch.arange(start, stop, step)
        rows = index.tolist()
        out = torch.empty((len(rows), *self.shape[1:]), dtype=torch.uint8, pin_memory=pin)
        buf = out.numpy().reshape(len(rows), self.row_bytes)
        for i, row in enumerate(rows):
            os.preadv(self._fd, [buf[i]], row * self.row_bytes)
        return out

    def __getitem__(self, index: Index) -> torch.Tensor:
        return self.read(index)

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


@dataclass
class TensorSplit:
    """Images ``x`` and labels ``y`` (int64, N) of one split.

    ``x`` is uint8 (N x 3 x S x S, a tensor or :class:`DiskImages`) with the ``mean`` and
    ``std`` that normalise it, or a float tensor already normalised (features, prefix
    outputs). With ``views > 1``, ``x`` stacks that many augmented views of every image,
    view-major (view ``v`` of image ``i`` is row ``v * N + i``; see :mod:`autofreeze.data.augment`);
    ``len`` is ``N``.
    """

    x: torch.Tensor | DiskImages
    y: torch.Tensor
    views: int = 1
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def on_disk(self) -> bool:
        return isinstance(self.x, DiskImages)

    @property
    def nbytes(self) -> int:
        return self.x.numel() * self.x.element_size()

    def rows(self, index: Index, pin: bool = False) -> torch.Tensor:
        """Rows of ``x`` as stored (uint8 images or float features)."""
        if isinstance(self.x, DiskImages):
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
        if isinstance(self.x, DiskImages):
            return replace(self, y=self.y.to(device))
        return replace(self, x=self.x.to(device), y=self.y.to(device))

    def fingerprint(self) -> str:
        """What the split's content depends on: its images (sampled, or the store's key) and
        their normalisation."""
        base = self.x.key if isinstance(self.x, DiskImages) else tensor_fingerprint(self.x)
        return f"{base}:{self.mean}:{self.std}:{self.views}"


def cat(a: TensorSplit, b: TensorSplit) -> TensorSplit:
    """Two splits of the same preprocessing as one, in memory (``train --on train+val``)."""
    if (a.mean, a.std) != (b.mean, b.std):
        raise ValueError("splits of different preprocessing cannot be joined")
    xa, xb = a.rows(slice(None)), b.rows(slice(None))
    return TensorSplit(torch.cat([xa, xb]), torch.cat([a.y, b.y]), 1, a.mean, a.std)


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
