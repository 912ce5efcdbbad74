"""Where frozen-prefix outputs are kept: memory per worker, a folder for the machine's workers.

See :class:`PrefixCache`; what is cached, and under which key, is
:mod:`autofreeze.cache.activations`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

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


@dataclass
class PrefixCache:
    """Prefix outputs of the train and val images per content key: on disk for every worker of
    the study on the machine (with a ``folder``), else in memory within a worker (least
    recently used evicted past ``memory_bytes``).

    ``memory_bytes`` (by default a quarter of the RAM available) also bounds one entry: larger
    outputs are refused before they are computed (:mod:`autofreeze.cache.activations`).

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

    def _evict_disk(self, keep: Path) -> None:
        assert self.folder is not None
        bound = self.disk_bytes if self.disk_bytes is not None else default_cache_bytes(self.folder)
        files = sorted(self.folder.glob("*.pt"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for old in files:
            if total <= bound:
                break
            if old != keep:
                total -= old.stat().st_size
                old.unlink(missing_ok=True)
                old.with_suffix(".lock").unlink(missing_ok=True)


def _nbytes(pairs: Iterable[Pair]) -> int:
    return sum(t.numel() * t.element_size() for pair in pairs for t in pair)
