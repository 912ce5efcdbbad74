"""Helpers for plugin authors: tiny data, the backbone and the dataset contracts, one call each.

A backbone plugin's test suite can be as short as::

    from autofreeze.testing import check_backbone
    from autofreeze.plugins.registry import Registry

    def test_my_backbone():
        registry = Registry()
        blocks = registry.create_backbone("my_net", num_classes=3)
        stages = registry.create_backbone("my_net", num_classes=3, granularity="stage")
        check_backbone(blocks, stages=stages)

and a dataset plugin's::

    from autofreeze.testing import check_dataset

    def test_my_dataset(tmp_path):
        dataset = Registry().create_dataset("my_format", path=str(make_some(tmp_path)))
        check_dataset(dataset)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from autofreeze.core.backbones import Backbone
from autofreeze.core.freezing import Freezer
from autofreeze.data.images import ImageDataset, ImageSet, load_image, to_tensors
from autofreeze.data.tensors import TensorSplit
from autofreeze.plan import FreezePlan


def tiny_split(n: int = 12, num_classes: int = 3, size: int = 32, seed: int = 0) -> TensorSplit:
    """Random but learnable images: the class shifts the mean of the first channel."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = torch.randn(n, 3, size, size, generator=g) * 0.5
    x[:, 0] += y.float().view(-1, 1, 1) - 1.0
    return TensorSplit(x, y)


def first_calls(backbone: Backbone, x: torch.Tensor) -> tuple[dict[int, int], torch.Tensor]:
    """One forward pass: the position of each block's first module call (``-1`` = the head),
    and the logits.

    A module is hooked when all of its own (non-recursive) parameters have one owner.
    """
    owner = {n: b.index for b in backbone.blocks for n in b.param_names}
    owner.update({n: -1 for n in backbone.head_param_names})
    calls: list[int] = []
    handles = []
    for mod_name, module in backbone.model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        owners = {owner[prefix + n] for n, _ in module.named_parameters(recurse=False)}
        if len(owners) == 1:
            (o,) = owners
            handles.append(module.register_forward_pre_hook(lambda *_, o=o: calls.append(o)))
    backbone.model.eval()
    try:
        with torch.no_grad():
            logits = backbone.model(x)
    finally:
        for h in handles:
            h.remove()
    first: dict[int, int] = {}
    for i, o in enumerate(calls):
        first.setdefault(o, i)
    return first, logits


def block_execution_order(backbone: Backbone, x: torch.Tensor) -> list[int]:
    """Owners (block indices, ``-1`` = head) in the order a forward pass first runs them."""
    first, _ = first_calls(backbone, x)
    return sorted(first, key=first.__getitem__)


def check_backbone(
    backbone: Backbone,
    x: torch.Tensor | None = None,
    *,
    stages: Backbone | None = None,
    forward: bool = True,
) -> None:
    """Assert the backbone contract; raises ``AssertionError`` naming what is wrong.

    The same checks the core suite runs on every timm model and the torchvision plugin on
    each of its models:

    - blocks are indexed ``0..n-1``, non-empty, uniquely named, and with the head they hold
      every parameter exactly once (``Backbone.check``; the counts add up); the first declared
      parameter (the stem) is in block 0;
    - freezing ``k`` blocks freezes exactly their parameters, for ``k`` in 0, 1, the middle,
      ``n - 1`` and ``n``;
    - with ``forward`` (a pass over ``x``, default: two random images of the backbone's input
      size): finite logits of shape ``(batch, num_classes)``; every block and the head run;
      blocks run in index order from the input and the head after the last block; the logits
      come from the head alone (zeroing the head's parameters zeroes them);
    - with ``stages`` (the same model at stage granularity): every stage is a run of
      consecutive blocks, together covering all of them, and the head is the same.
    """
    backbone.check()
    model = backbone.model
    params = dict(model.named_parameters())
    n = backbone.n_blocks
    assert n >= 1, "the backbone has no block"
    assert [b.index for b in backbone.blocks] == list(range(n)), "block indices are not 0..n-1"
    assert all(b.param_names and b.name for b in backbone.blocks), "a block is empty or unnamed"
    assert len({b.name for b in backbone.blocks}) == n, "two blocks have the same name"
    counted = sum(backbone.block_param_count(b) for b in backbone.blocks)
    total = sum(p.numel() for p in params.values())
    assert counted + backbone.head_param_count() == total, "block + head params != model params"
    if forward:
        _check_forward(backbone, x)
    assert next(iter(params)) in backbone.blocks[0].param_names, "the stem is not in block 0"
    try:
        for k in sorted({0, min(1, n), n // 2, max(n - 1, 0), n}):
            Freezer(backbone, FreezePlan(boundary=k)).set_first_trainable(k)
            frozen = {name for b in backbone.blocks[:k] for name in b.param_names}
            wrong = [name for name, p in params.items() if p.requires_grad == (name in frozen)]
            assert not wrong, f"boundary {k}: {wrong[0]!r} has the wrong requires_grad"
    finally:
        for p in params.values():
            p.requires_grad_(True)
    if stages is not None:
        _check_stages(backbone, stages)


def _check_forward(backbone: Backbone, x: torch.Tensor | None) -> None:
    if x is None:
        c, h, w = backbone.data_config.get("input_size", (3, 224, 224))
        x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    first, logits = first_calls(backbone, x)
    expected = (x.shape[0], backbone.num_classes)
    assert tuple(logits.shape) == expected, f"logits {tuple(logits.shape)}, expected {expected}"
    assert torch.isfinite(logits).all(), "the logits are not finite"
    ran = {b.index for b in backbone.blocks} | {-1}
    assert set(first) == ran, f"never ran: {sorted(ran - set(first))} (-1 = the head)"
    order = [o for o in sorted(first, key=first.__getitem__) if o >= 0]
    assert order == sorted(order), f"blocks run in the order {order}, not from the input"
    assert first[-1] > first[order[-1]], "the head runs before the last block"
    head = backbone.parameters_of(backbone.head_param_names)
    saved = [p.detach().clone() for p in head]
    try:
        with torch.no_grad():
            for p in head:
                p.zero_()
            zeroed = backbone.model(x[:1])
    finally:
        with torch.no_grad():
            for p, s in zip(head, saved, strict=True):
                p.copy_(s)
    assert torch.count_nonzero(zeroed) == 0, "the logits do not come from the head alone"


def _check_stages(blocks: Backbone, stages: Backbone) -> None:
    assert 1 <= stages.n_blocks <= blocks.n_blocks, "more stages than blocks"
    assert set(stages.head_param_names) == set(blocks.head_param_names), "stage head differs"
    i = 0
    for stage in stages.blocks:
        run: list[str] = []
        while len(run) < len(stage.param_names) and i < blocks.n_blocks:
            run += blocks.blocks[i].param_names
            i += 1
        assert sorted(run) == sorted(stage.param_names), (
            f"stage {stage.index} ({stage.name}) is not a run of consecutive blocks"
        )
    assert i == blocks.n_blocks, "the stages do not cover every block"


def check_dataset(
    dataset: ImageDataset,
    *,
    decode: int = 8,
    expect_test: bool | None = None,
    size: int = 16,
) -> dict[str, Any]:
    """Assert the dataset contract; raises ``AssertionError`` naming what is wrong. Returns
    the dataset's summary (classes, split sizes, images per class).

    The checks the built-in datasets and every dataset plugin run on what their factory
    returns:

    - ``classes`` are unique non-empty strings, at least two;
    - ``train`` and ``val`` hold images, ``test`` (if any, or if ``expect_test``) too; each
      split has as many images as labels, and every label is an ``int`` in
      ``0..num_classes-1``; every class has a training image;
    - ``len`` and indexing agree (a lazy sequence, e.g. a Hugging Face column, must give an
      image at every index below its length);
    - the first, the last and up to ``decode`` images of each split spread over it decode
      (:func:`autofreeze.data.images.load_image`) and convert to tensors of ``size`` pixels.
    """
    classes = dataset.classes
    assert len(classes) >= 2, f"{len(classes)} class(es): a classifier needs at least two"
    assert all(isinstance(c, str) and c for c in classes), "every class name must be a string"
    assert len(set(classes)) == len(classes), "two classes have the same name"
    splits = {"train": dataset.train, "val": dataset.val}
    if dataset.test is not None:
        splits["test"] = dataset.test
    if expect_test is not None:
        assert (dataset.test is not None) == expect_test, (
            "a test split was expected" if expect_test else "no test split was expected"
        )
    for name, split in splits.items():
        n = len(split.labels)
        assert n > 0, f"the {name} split is empty"
        assert len(split.images) == n, f"{name}: {len(split.images)} images, {n} labels"
        labels = list(split.labels)
        bad = [y for y in labels if isinstance(y, bool) or not isinstance(y, int | np.integer)]
        assert not bad, f"{name}: label {bad[0]!r} is not an integer class index"
        out = [y for y in labels if not 0 <= int(y) < len(classes)]
        assert not out, f"{name}: label {out[0]} is outside 0..{len(classes) - 1}"
        picks = sorted({0, n - 1, *np.linspace(0, n - 1, min(decode, n)).astype(int).tolist()})
        for i in picks:
            try:
                load_image(split.images[i])
            except Exception as exc:  # noqa: BLE001 - the contract: every image decodes
                raise AssertionError(f"{name}: image {i} does not decode: {exc}") from exc
        sample = ImageSet([split.images[i] for i in picks], [int(labels[i]) for i in picks])
        t = to_tensors(sample, mean=(0.5,) * 3, std=(0.5,) * 3, size=size)
        assert tuple(t.x.shape) == (len(picks), 3, size, size), f"{name}: bad tensor shape"
    missing = set(range(len(classes))) - {int(y) for y in dataset.train.labels}
    assert not missing, f"class {classes[min(missing)]!r} has no training image"
    return dataset.summary()
