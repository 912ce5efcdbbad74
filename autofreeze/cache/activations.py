"""Frozen-prefix activation caches: frozen work computed once, reused by every epoch and trial.

Head-only (:class:`FeatureCache`): when a plan freezes every block (``boundary = n_blocks``: a
linear probe, whatever the schedule) with BatchNorm in eval mode and no augmentation, the whole
backbone below the classifier is a fixed function of the image. Its pooled (pre-logits)
features are computed once and the classifier trains on them. Works for every timm model whose
classifier is one linear layer (``forward_features`` + ``forward_head(pre_logits=True)``).

Any boundary (:class:`PrefixCache`, :func:`prefix_features`): for ``0 < k < n_blocks`` the
output of blocks ``0..k-1`` is a fixed function of the image under the same conditions, since no
schedule ever trains below the plan's boundary; the trial trains the suffix on it (see
:mod:`autofreeze.core.split`). Entries are content-addressed (backbone, weights, granularity,
boundary, data and preprocessing, storage dtype, library versions), on disk for every worker of
the machine (:mod:`autofreeze.cache.store`). Computing an entry writes its batches into one
tensor: the peak is the entry and one batch, never the entry twice.

Outputs larger than the cache's memory bound go to a file of rows instead, written batch by
batch as they are computed and read by the rows of each training batch, like images streamed
from disk: a large dataset keeps its cache. They are stored in 16 bits (``DISK_DTYPE``,
float16, unless ``cache_dtype = "bfloat16"``): half the disk and the reads of float32. float16
rather than bfloat16 because activations after BatchNorm and ReLU (or a transformer block's
residual stream) lie far inside float16's range (to 65504) and float16 keeps 3 more bits of
mantissa (a relative error of 2^-11, against bfloat16's 2^-8); an output beyond the range
refuses the entry (the trial runs uncached) rather than storing infinities.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autofreeze.cache.store import CacheFull, Pair, PrefixCache, RowLayout
from autofreeze.core.backbones import Backbone
from autofreeze.core.split import Split, SplitError, split_at
from autofreeze.data.augment import view_batches
from autofreeze.data.tensors import TensorSplit
from autofreeze.plan import FreezePlan


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


FORWARD_BATCH = 32  # images per pass of frozen work: computing a cache takes a trial's memory


@dataclass(frozen=True)
class Views:
    """Which training images a cache holds: the images as they are (``n = 0``), or ``n``
    views of each by the augmentation ``policy``, drawn from ``seed``
    (``[training] cached_views``)."""

    n: int = 0
    seed: int = 0
    policy: str = "flip"

    def key(self) -> tuple[object, ...] | None:
        return None if not self.n else (self.policy, self.n, self.seed)

    def apply(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        split: TensorSplit,
        batch_size: int = FORWARD_BATCH,
        dtype: torch.dtype | None = None,
    ) -> TensorSplit:
        """``fn`` of each normalised batch of ``split``'s images in order, or of each of their
        views (stacked view-major): what a cache holds of a split, written into one tensor (of
        ``dtype``, else ``fn``'s) as the batches come, so that it is never held twice."""
        rows = max(1, self.n) * len(split)
        x = fill(fn, self.inputs(split, batch_size), rows, dtype)
        return TensorSplit(x, split.y, self.n or 1)

    def inputs(self, split: TensorSplit, batch_size: int = FORWARD_BATCH) -> Iterator[torch.Tensor]:
        """The normalised batches of ``split``'s images in order, or of each of their views
        (view-major): what the frozen work runs on."""
        if not self.n:
            return split.chunks(batch_size)
        views = (view_batches(split, batch_size, v, self.seed, self.policy) for v in range(self.n))
        return itertools.chain.from_iterable(views)


def fill(
    fn: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor],
    rows: int,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``fn`` of each batch, ``rows`` rows in all, copied into one tensor allocated at the first
    batch (on ``fn``'s device, of ``dtype`` or ``fn``'s): the peak is the result and one batch,
    where joining a list of batches holds the result twice and converting it a third time."""
    out: torch.Tensor | None = None
    at = 0
    for batch in batches:
        y = fn(batch)
        if out is None:
            out = torch.empty((rows, *y.shape[1:]), dtype=dtype or y.dtype, device=y.device)
        out[at : at + len(y)] = y
        at += len(y)
    if out is None or at != rows:
        raise ValueError(f"{at} rows of frozen work computed for a split of {rows}")
    return out


@torch.no_grad()
def pooled_features(
    backbone: Backbone, split: TensorSplit, batch_size: int = FORWARD_BATCH, views: Views = Views()
) -> TensorSplit:
    """The classifier's inputs for every image, or every view of one (model in eval mode: no
    dropout, BN frozen)."""
    model = backbone.model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device

    def pooled(x: torch.Tensor) -> torch.Tensor:
        h = model.forward_features(x.to(device))
        return model.forward_head(h, pre_logits=True).float()

    out = views.apply(pooled, split, batch_size)
    model.train(was_training)
    return TensorSplit(out.x, out.y.to(device), out.views)


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
        views: Views = Views(),
    ) -> tuple[TensorSplit, TensorSplit]:
        """Features of ``train`` (or its views) and ``val``; ``key`` must identify weights and
        data."""
        gran = backbone.meta.get("granularity")
        full = (backbone.name, backbone.weights, plan.init, gran, views.key(), *key)
        if full in self._store:
            self.hits += 1
        else:
            self.misses += 1
            features = pooled_features(backbone, train, views=views)
            self._store[full] = (features, pooled_features(backbone, val))
        return self._store[full]


# -- frozen-prefix activations at any boundary -------------------------------------------------
def content_key(*parts: object) -> str:
    """A content address: the SHA-256 of the parts' JSON (what the cached tensors depend on)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


SPLIT_VERSION = 2  # bump when what the prefix computes changes: old entries are not read


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


@dataclass(frozen=True)
class PrefixOptions:
    """What a trial's prefix entry depends on besides the backbone, the plan and the images,
    and where it is computed.

    Attributes:
        weights: what the backbone's weights came from: ``"none"``, ``"default"`` or a file
            path (a file is known by its path, size and modification time).
        seed: the trial's seed; in the key only where the weights are random
            (``init = "scratch"``).
        device: where the prefix runs when no worker has its outputs yet.
        dtype: how the outputs are stored (``[training] cache_dtype``).
        views: which training images the entry holds (see :class:`Views`).
    """

    weights: str
    seed: int
    device: str
    dtype: str = "float32"
    views: Views = Views()


def prefix_features(
    backbone: Backbone,
    plan: FreezePlan,
    train: TensorSplit,
    val: TensorSplit,
    cache: PrefixCache,
    **options: Any,
) -> PrefixFeatures:
    """Split ``backbone`` at the plan's boundary and get its prefix outputs from ``cache``
    (computed on ``device`` if no worker has them yet), of ``views`` of the training images:
    tensors where they fit under ``cache.memory_bytes``, else 16-bit rows in a file of the
    cache folder, read by the rows of each batch. Raises :class:`SplitError` (the trial runs
    uncached) where the split fails or the outputs cannot be stored (above the memory bound
    without a folder, above the disk bound or the free disk, beyond float16's range).

    Args:
        backbone: the trial's backbone.
        plan: the trial's plan; the split is at its boundary.
        train: the training images.
        val: the validation images.
        cache: where workers keep prefix outputs.
        **options: the fields of :class:`PrefixOptions` by name (``weights``, ``seed`` and
            ``device`` are required).
    """
    opts = PrefixOptions(**options)
    split = split_at(backbone, plan.boundary)
    shape = _row_shape(backbone, split, train, opts)
    rows = len(train) * max(1, opts.views.n) + len(val)
    if rows * _nbytes(shape, opts.dtype) > cache.memory_bytes:
        return _prefix_rows(backbone, plan, split, train, val, cache, opts, shape)
    key = _prefix_key(backbone, plan, train, val, opts)
    before = (cache.hits, cache.disk_hits)

    def compute() -> Pair:
        backbone.model.to(opts.device)
        h_train, h_val = _prefix_pair(backbone, split, train, val, opts.dtype, opts.views)
        return h_train.x, h_val.x

    h_train, h_val = cache.get(key, compute)
    if cache.hits > before[0]:
        source = "memory"
    elif cache.disk_hits > before[1]:
        source = "disk"
    else:
        source = "computed"
    h = TensorSplit(h_train, train.y, opts.views.n or 1)
    return PrefixFeatures(split, h, TensorSplit(h_val, val.y), source)


DISK_DTYPE = "float16"  # rows on disk: see the module doc for why not bfloat16


def _prefix_rows(
    backbone: Backbone,
    plan: FreezePlan,
    split: Split,
    train: TensorSplit,
    val: TensorSplit,
    cache: PrefixCache,
    opts: PrefixOptions,
    shape: tuple[int, ...],
) -> PrefixFeatures:
    """Prefix outputs above the memory bound, as 16-bit rows in a file of the cache folder
    (computed there batch by batch if no worker has them yet); :class:`SplitError` where
    they cannot be stored (the trial runs uncached, and says why)."""
    dtype = opts.dtype if opts.dtype == "bfloat16" else DISK_DTYPE
    opts = PrefixOptions(opts.weights, opts.seed, opts.device, dtype, opts.views)
    layout = RowLayout(len(train) * max(1, opts.views.n), len(val), shape, dtype)
    key = _prefix_key(backbone, plan, train, val, opts)
    before = cache.disk_hits

    def compute() -> tuple[Iterator[torch.Tensor], Iterator[torch.Tensor]]:
        model = backbone.model.to(opts.device)
        device = next(split.prefix.parameters(), torch.empty(0)).device
        return _outputs(model, split, opts.views.inputs(train), device), _outputs(
            model, split, Views().inputs(val), device
        )

    try:
        h_train, h_val = cache.get_rows(key, layout, compute)
    except CacheFull as exc:
        bound = cache.memory_bytes / 2**30
        raise SplitError(f"{exc} (above the cache's memory bound of {bound:.1f} GiB)") from exc
    source = "disk" if cache.disk_hits > before else "computed"
    h = TensorSplit(h_train, train.y, opts.views.n or 1)
    return PrefixFeatures(split, h, TensorSplit(h_val, val.y), source)


def _outputs(
    model: nn.Module, split: Split, batches: Iterable[torch.Tensor], device: torch.device
) -> Iterator[torch.Tensor]:
    """The prefix's output of each batch, in eval mode (how frozen blocks run), on the CPU."""
    for x in batches:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                y = split.prefix(x.to(device)).cpu()
        finally:
            model.train(was)
        yield y


def _prefix_key(
    backbone: Backbone,
    plan: FreezePlan,
    train: TensorSplit,
    val: TensorSplit,
    opts: PrefixOptions,
) -> str:
    """The content address of the prefix outputs of ``train`` and ``val`` at the plan's
    boundary: everything they depend on (see :func:`content_key`)."""
    import timm

    return content_key(
        SPLIT_VERSION,
        backbone.name,
        weights_identity(opts.weights),
        opts.seed if plan.init == "scratch" else None,  # random weights depend on the seed
        plan.init,
        backbone.meta.get("granularity"),
        plan.boundary,
        train.fingerprint(),
        val.fingerprint(),
        opts.dtype,
        torch.__version__,
        timm.__version__,
        # the views only where there are any: keys of unaugmented entries stay as they were
        *([opts.views.key()] if opts.views.n else []),
    )


def _row_shape(
    backbone: Backbone, split: Split, train: TensorSplit, opts: PrefixOptions
) -> tuple[int, ...]:
    """The shape of the prefix's output for one image (one image run through it): what an
    entry's size is known by before it is computed."""
    model = backbone.model.to(opts.device)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            one = split.prefix(train.batch(slice(0, 1), opts.device))
    finally:
        model.train(was)
    return tuple(one.shape[1:])


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    return math.prod(shape) * torch.empty(0, dtype=getattr(torch, dtype)).element_size()


@torch.no_grad()
def _prefix_pair(
    backbone: Backbone,
    split: Split,
    train: TensorSplit,
    val: TensorSplit,
    dtype: str,
    views: Views,
) -> tuple[TensorSplit, TensorSplit]:
    model = backbone.model
    was = model.training
    model.eval()  # how frozen blocks run: dropout and drop-path off, BatchNorm frozen
    try:
        device = next(split.prefix.parameters(), torch.empty(0)).device

        def run(x: torch.Tensor) -> torch.Tensor:
            return split.prefix(x.to(device)).cpu()

        store = getattr(torch, dtype)  # converted row by row as they are copied in
        return views.apply(run, train, dtype=store), Views().apply(run, val, dtype=store)
    finally:
        model.train(was)


def refreezer(
    backbone: Backbone,
    train: TensorSplit,
    val: TensorSplit,
    device: str,
    dtype: str = "float32",
    views: Views = Views(),
) -> Callable[[int], tuple[Split, TensorSplit, TensorSplit] | None]:
    """For a schedule that freezes blocks for good during the trial (FreezeOut, AutoFreeze):
    given the new first trainable block ``f``, the split at ``f`` and the prefix outputs of the
    images ``train`` (or of their ``views``) and ``val``, or None where the model cannot be
    split there (head only: the classifier trains on the last block's output through the
    suffix, uncached).

    These outputs depend on blocks this trial trained, so they are kept for the trial only.
    """

    def refreeze(first: int) -> tuple[Split, TensorSplit, TensorSplit] | None:
        if not 0 < first < backbone.n_blocks:
            return None
        try:
            split = split_at(backbone, first)
        except SplitError:
            return None
        # frozen blocks run in eval mode (bn_mode "eval": asked by the caller)
        h_train, h_val = _prefix_pair(backbone, split, train, val, dtype, views)
        return split, h_train, h_val

    return refreeze
