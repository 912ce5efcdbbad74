"""Frozen-prefix activation cache, head-only case: pooled features computed once, reused.

When a plan freezes every block (``boundary = n_blocks``: a linear probe, whatever the
schedule) with BatchNorm in eval mode and no augmentation, the whole backbone below the
classifier is a fixed function of the image. Its pooled (pre-logits) features are computed once
and the classifier trains on them: every epoch and every such trial of the same study skip the
backbone's forward pass. Works for every timm model whose classifier is one linear layer
(``forward_features`` + ``forward_head(pre_logits=True)``); other backbones run uncached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from autofreeze.backbones import Backbone
from autofreeze.data import TensorSplit
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
