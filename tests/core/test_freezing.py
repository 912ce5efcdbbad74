"""Freezing semantics (DESIGN.md section 5) on real timm models and real training steps."""

from __future__ import annotations

import math

import pytest
import torch

from autofreeze.core.backbones import state_checksum
from autofreeze.core.freezing import Freezer, block_lr_scale
from autofreeze.core.train import TrainConfig, Trainer
from autofreeze.plan import FreezePlan
from autofreeze.schedules import Static
from autofreeze.testing import tiny_split
from tests.models import block_sums, make, run


def bn_buffers(backbone, block_index: int) -> str:
    """Checksum of the BatchNorm running stats owned by one block."""
    owners = backbone.module_blocks()
    tensors = [
        buf
        for name, m in backbone.model.named_modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and owners.get(name) == block_index
        for buf in (m.running_mean, m.running_var)
    ]
    assert tensors, f"block {block_index} has no BatchNorm"
    return state_checksum(tensors)


def test_frozen_weights_bit_identical_and_gradless(tiny_data):
    bb = make()
    before = block_sums(bb)
    head_before = state_checksum(bb.parameters_of(bb.head_param_names))
    plan = FreezePlan(boundary=3, head_lr=1e-2)
    run(bb, plan, data=tiny_data)
    after = block_sums(bb)
    assert after[:3] == before[:3]
    assert all(a != b for a, b in zip(after[3:], before[3:], strict=True))
    assert state_checksum(bb.parameters_of(bb.head_param_names)) != head_before
    for block in bb.blocks[:3]:
        for p in bb.parameters_of(block.param_names):
            assert p.grad is None and not p.requires_grad


@pytest.mark.parametrize(
    ("bn_mode", "changes"), [("eval", False), ("frozen", False), ("train", True)]
)
def test_batchnorm_in_frozen_blocks_follows_bn_mode(tiny_data, bn_mode, changes):
    bb = make()
    before = bn_buffers(bb, 1)
    trainer, _ = run(bb, FreezePlan(boundary=3, bn_mode=bn_mode), epochs=1, data=tiny_data)
    assert (bn_buffers(bb, 1) != before) is changes
    trainer.freezer.train_mode()
    owners = bb.module_blocks()
    bns = [
        m
        for n, m in bb.model.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d) and owners.get(n) == 1
    ]
    assert all(m.training is (bn_mode != "eval") for m in bns)


def test_trainable_block_batchnorm_updates(tiny_data):
    bb = make()
    before = bn_buffers(bb, 4)
    run(bb, FreezePlan(boundary=3), epochs=1, data=tiny_data)
    assert bn_buffers(bb, 4) != before


def test_model_train_is_reverted_for_frozen_modules():
    bb = make("test_vit", weights="none")
    plan = FreezePlan(boundary=4)
    freezer = Freezer(bb, plan)
    freezer.set_first_trainable(4)
    freezer.train_mode()
    owners = bb.module_blocks()
    for name, module in bb.model.named_modules():
        block = owners.get(name)
        if block is not None and block < 4:
            assert not module.training, name  # dropout / drop-path off in the frozen prefix
        elif block is not None:
            assert module.training, name


def test_no_backward_through_frozen_prefix(tiny_data):
    bb = make()
    freezer = Freezer(bb, FreezePlan(boundary=3))
    freezer.set_first_trainable(3)
    outputs: dict[str, bool] = {}
    modules = dict(bb.model.named_modules())
    for name in ("layer2", "layer3"):  # last frozen block, first trainable block
        modules[name].register_forward_hook(
            lambda m, i, o, name=name: outputs.__setitem__(name, o.requires_grad)
        )
    bb.model(tiny_data[0].x[:4]).sum().backward()
    assert outputs == {"layer2": False, "layer3": True}


def test_param_groups_carry_the_planned_lrs():
    bb = make()
    plan = FreezePlan(boundary=1, head_lr=0.01, backbone_lr_ratio=0.5, layer_decay=0.8)
    trainer = Trainer(
        bb, plan, Static(boundary=1, n_blocks=bb.n_blocks, epochs=1), TrainConfig(epochs=1)
    )
    trainer.enter_phase(0)
    n = bb.n_blocks
    seen = {}
    for group in trainer.optimizer.param_groups:
        label = group["name"].split(":")[0]
        if label == "head":
            expected = 0.01
        else:
            i = int(label.removeprefix("block"))
            expected = 0.01 * 0.5 * 0.8 ** (n - 1 - i)
        assert math.isclose(group["planned_lr"], expected, rel_tol=1e-12)
        seen[label] = group["planned_lr"]
    assert set(seen) == {"head"} | {f"block{i}" for i in range(1, n)}
    assert math.isclose(block_lr_scale(plan, n - 1, n), 0.5)
    # the effective LR of a step is the planned LR times the (shared) warmup-cosine factor
    trainer.train_epoch(tiny_split(8), 0, 10, 0, 1.0, torch.Generator().manual_seed(0))
    for group in trainer.optimizer.param_groups:
        assert math.isclose(group["lr"], group["planned_lr"], rel_tol=1e-9)


def test_biases_and_norms_get_no_weight_decay():
    bb = make()
    freezer = Freezer(bb, FreezePlan(boundary=0, weight_decay=0.1))
    freezer.set_first_trainable(0)
    for group in freezer.param_groups():
        if group["name"].endswith(":no_wd"):
            assert group["weight_decay"] == 0 and all(p.ndim <= 1 for p in group["params"])
        else:
            assert group["weight_decay"] == 0.1 and all(p.ndim > 1 for p in group["params"])
