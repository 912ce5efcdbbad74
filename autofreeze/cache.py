"""Frozen-prefix activation caches: frozen work computed once, reused by every epoch and trial.

Head-only (:class:`FeatureCache`): when a plan freezes every block (``boundary = n_blocks``: a
linear probe, whatever the schedule) with BatchNorm in eval mode and no augmentation, the whole
backbone below the classifier is a fixed function of the image. Its pooled (pre-logits)
features are computed once and the classifier trains on them. Works for every timm model whose
classifier is one linear layer (``forward_features`` + ``forward_head(pre_logits=True)``).

Any boundary (:class:`PrefixCache`, :func:`prefix_features`): for ``0 < k < n_blocks`` the
output of blocks ``0..k-1`` is a fixed function of the image under the same conditions, since no
schedule ever trains below the plan's boundary; the trial trains the suffix on it (see
:mod:`autofreeze.split`). Entries are content-addressed (backbone, weights, granularity,
boundary, data and preprocessing, storage dtype, library versions), kept in memory per worker
and on disk for every worker of the machine.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from autofreeze.backbones import Backbone
from autofreeze.data import TensorSplit
from autofreeze.plan import FreezePlan
from autofreeze.split import Split, SplitError, prefix_outputs, split_at


def cacheable(backbone: Backbone, plan: FreezePlan, augment: bool) -> bool:
    """Whether the plan's trainable part is exactly the classifier on deterministic features."""
    model = backbone.model
    if plan.boundary != backbone.n_blocks or plan.bn_mode != "eval" or augment:
        return False
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        return False
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Linear):
        return False
    head_ids = {id(p) for p in head.parameters()}
    return head_ids == {id(p) for p in backbone.parameters_of(backbone.head_param_names)}


@torch.no_grad()
def pooled_features(backbone: Backbone, split: TensorSplit, batch_size: int = 256) -> TensorSplit:
    """The classifier's inputs for every image (model in eval mode: no dropout, BN frozen)."""
    model = backbone.model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(split), batch_size):
        x = split.x[start : start + batch_size].to(device)
        chunks.append(model.forward_head(model.forward_features(x), pre_logits=True).float())
    model.train(was_training)
    return TensorSplit(torch.cat(chunks), split.y.to(device))


@dataclass
class FeatureCache:
    """Pooled features per (backbone, weights, data) within one process; trials share them."""

    _store: dict[tuple[object, ...], tuple[TensorSplit, TensorSplit]] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0

    def get(
        self,
        backbone: Backbone,
        plan: FreezePlan,
        key: tuple[object, ...],
        train: TensorSplit,
        val: TensorSplit,
    ) -> tuple[TensorSplit, TensorSplit]:
        """Features of ``train`` and ``val``; ``key`` must identify weights and data."""
        full = (backbone.name, backbone.weights, plan.init, backbone.meta.get("granularity"), *key)
        if full in self._store:
            self.hits += 1
        else:
            self.misses += 1
            self._store[full] = (pooled_features(backbone, train), pooled_features(backbone, val))
        return self._store[full]


# -- frozen-prefix activations at any boundary -------------------------------------------------
def content_key(*parts: object) -> str:
    """A content address: the SHA-256 of the parts' JSON (what the cached tensors depend on)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def tensor_fingerprint(t: torch.Tensor, samples: int = 4096) -> str:
    """Shape, dtype and a checksum of evenly spaced elements: cheap on any dataset size, and it
    changes when the data, their preprocessing or the image size do."""
    flat = t.reshape(-1)
    m = min(samples, flat.numel())
    idx = torch.arange(m, dtype=torch.int64) * max(0, flat.numel() - 1) // max(1, m - 1)
    picked = flat[idx].contiguous().float().numpy().tobytes()
    return f"{tuple(t.shape)}:{t.dtype}:{hashlib.sha256(picked).hexdigest()[:16]}"


def default_cache_bytes(folder: Path | None) -> int:
    """A quarter of the free disk under ``folder`` (or of the machine's RAM without one)."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(folder).free // 4
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


Pair = tuple[torch.Tensor, torch.Tensor]


@dataclass
class PrefixCache:
    """Prefix outputs of the train and val images per content key: in memory within a worker
    (least recently used evicted past ``memory_bytes``) and, with a ``folder``, on disk for
    every worker of the study on the machine.

    A file is written to a temporary name and renamed into place (a crash leaves no half file
    that is later read), one writer at a time per key (an advisory lock: the second worker waits
    and reads the first one's file), and read memory-mapped. The folder is kept under
    ``disk_bytes`` by deleting the least recently used entries.
    """

    folder: Path | None = None
    memory_bytes: int = 2**31
    disk_bytes: int | None = None
    _memory: OrderedDict[str, Pair] = field(default_factory=OrderedDict)
    hits: int = 0  # served from memory
    disk_hits: int = 0  # read from a file another trial or worker wrote
    misses: int = 0  # computed here

    def get(self, key: str, compute: Callable[[], Pair]) -> Pair:
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        if self.folder is not None:
            pair = self._from_disk(key, compute)
        else:
            self.misses += 1
            pair = compute()
        self._memory[key] = pair
        while len(self._memory) > 1 and _nbytes(self._memory.values()) > self.memory_bytes:
            self._memory.popitem(last=False)
        return pair

    def _from_disk(self, key: str, compute: Callable[[], Pair]) -> Pair | None:
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


CACHE_FOLDER = ".autofreeze-cache"  # beside the study config: shared by the machine's workers
SPLIT_VERSION = 1  # bump when what the prefix computes changes: old entries are not read


@dataclass
class PrefixFeatures:
    """A trial's frozen prefix, cached: the split and the prefix outputs of train and val."""

    split: Split
    train: TensorSplit
    val: TensorSplit
    source: str  # "memory", "disk" or "computed"


def prefix_cacheable(backbone: Backbone, plan: FreezePlan, augment: bool) -> bool:
    """Whether blocks ``0..k-1`` of the plan are a fixed function of the image for the whole
    trial: a boundary inside the backbone, BatchNorm frozen in eval mode, no augmentation."""
    return 0 < plan.boundary < backbone.n_blocks and plan.bn_mode == "eval" and not augment


def weights_identity(path: str) -> str:
    """A weights file by path, size and modification time; ``none``/``default`` as they are."""
    p = Path(path)
    if path in ("none", "default") or not p.is_file():
        return path
    st = p.stat()
    return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def prefix_features(
    backbone: Backbone,
    plan: FreezePlan,
    train: TensorSplit,
    val: TensorSplit,
    cache: PrefixCache,
    *,
    weights: str,
    seed: int,
    device: str,
    dtype: str = "float32",
) -> PrefixFeatures:
    """Split ``backbone`` at the plan's boundary and get its prefix outputs from ``cache``
    (computed on ``device`` if no worker has them yet). Raises :class:`SplitError`."""
    split = split_at(backbone, plan.boundary)
    import timm

    key = content_key(
        SPLIT_VERSION,
        backbone.name,
        weights_identity(weights),
        seed if plan.init == "scratch" else None,  # random weights depend on the seed
        plan.init,
        backbone.meta.get("granularity"),
        plan.boundary,
        tensor_fingerprint(train.x),
        tensor_fingerprint(val.x),
        dtype,
        torch.__version__,
        timm.__version__,
    )
    before = (cache.hits, cache.disk_hits)

    def compute() -> Pair:
        model = backbone.model.to(device)
        was = model.training
        model.eval()  # how frozen blocks run: dropout and drop-path off, BatchNorm frozen
        try:
            out = [prefix_outputs(split, s.x).to(getattr(torch, dtype)) for s in (train, val)]
        finally:
            model.train(was)
        return out[0], out[1]

    h_train, h_val = cache.get(key, compute)
    if cache.hits > before[0]:
        source = "memory"
    elif cache.disk_hits > before[1]:
        source = "disk"
    else:
        source = "computed"
    return PrefixFeatures(split, TensorSplit(h_train, train.y), TensorSplit(h_val, val.y), source)


def refreezer(
    backbone: Backbone, train: TensorSplit, val: TensorSplit, device: str, dtype: str = "float32"
) -> Callable[[int], tuple[Split, TensorSplit, TensorSplit] | None]:
    """For a schedule that freezes blocks for good during the trial (FreezeOut, AutoFreeze):
    given the new first trainable block ``f``, the split at ``f`` and the prefix outputs of the
    images ``train`` and ``val``, or None where the model cannot be split there (head only:
    the classifier trains on the last block's output through the suffix, uncached).

    These outputs depend on blocks this trial trained, so they are kept for the trial only.
    """

    def refreeze(first: int) -> tuple[Split, TensorSplit, TensorSplit] | None:
        if not 0 < first < backbone.n_blocks:
            return None
        try:
            split = split_at(backbone, first)
        except SplitError:
            return None
        model = backbone.model
        was = model.training
        model.eval()  # frozen blocks run in eval mode (bn_mode "eval": asked by the caller)
        try:
            h = [prefix_outputs(split, s.x).to(getattr(torch, dtype)) for s in (train, val)]
        finally:
            model.train(was)
        return split, TensorSplit(h[0], train.y), TensorSplit(h[1], val.y)

    return refreeze
