"""The head-only feature cache trains the same classifier as the full forward pass, faster."""

from __future__ import annotations

import pytest
import torch

from autofreeze.cache.activations import FeatureCache, cacheable
from autofreeze.core.freezing import FreezePlan
from autofreeze.core.train import TrainConfig, fit
from autofreeze.plugins.registry import Registry
from autofreeze.schedules import LinearProbeFinetune, Static
from autofreeze.testing import tiny_split

REGISTRY = Registry()


def make(name="resnet10t"):
    torch.manual_seed(0)
    return REGISTRY.create_backbone(name, num_classes=3)


@pytest.mark.parametrize("name", ["resnet10t", "test_vit", "test_efficientnet"])
def test_cached_and_uncached_linear_probes_agree(name):
    train, val = tiny_split(24, size=32), tiny_split(12, size=32, seed=1)
    plan = FreezePlan(boundary=make(name).n_blocks, head_lr=0.05)
    cfg = TrainConfig(epochs=3, batch_size=8)
    runs = {}
    for cached in (False, True):
        bb = make(name)
        assert cacheable(bb, plan, augment=False)
        features = FeatureCache().get(bb, plan, (), train, val) if cached else None
        sched = Static(boundary=plan.boundary, n_blocks=bb.n_blocks, epochs=3)
        result = fit(bb, plan, sched, train, val, cfg, features=features)
        runs[cached] = (result, bb.model.get_classifier().weight.detach().clone())
    (plain, w_plain), (fast, w_fast) = runs[False], runs[True]
    assert [e.val_accuracy for e in fast.history] == [e.val_accuracy for e in plain.history]
    for a, b in zip(fast.history, plain.history, strict=True):
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-4, abs=1e-5)
    torch.testing.assert_close(w_fast, w_plain, rtol=1e-4, atol=1e-5)
    assert fast.cost["trainable_params"] == plain.cost["trainable_params"]


def test_only_plans_that_freeze_everything_deterministically_are_cached():
    bb = make()
    n = bb.n_blocks
    assert not cacheable(bb, FreezePlan(boundary=n - 1), augment=False)
    assert not cacheable(bb, FreezePlan(boundary=n, bn_mode="train"), augment=False)
    assert not cacheable(bb, FreezePlan(boundary=n), augment=True)
    # a head-only phase of LP-FT is not enough: the plan trains the backbone later
    lp_ft = FreezePlan(boundary=0, schedule="lp_ft")
    assert not cacheable(bb, lp_ft, augment=False)
    assert LinearProbeFinetune(boundary=0, n_blocks=n, epochs=2).phase(1).first_trainable == 0


def test_features_are_computed_once_per_process_and_reused():
    train, val = tiny_split(48, size=32), tiny_split(12, size=32, seed=1)
    cache = FeatureCache()
    plan = FreezePlan(boundary=make().n_blocks)
    first = cache.get(make(), plan, (), train, val)
    again = cache.get(make(), plan, (), train, val)
    assert again is first and (cache.hits, cache.misses) == (1, 1)
    assert first[0].x.shape == (48, 512)  # resnet10t's pooled width
    scratch = cache.get(make(), FreezePlan(boundary=plan.boundary, init="scratch"), (), train, val)
    assert scratch is not first and cache.misses == 2  # other weights, other features
