"""Freezing semantics (DESIGN.md section 5) on real timm models and real training steps."""

from __future__ import annotations

import math

import pytest
import torch

from autofreeze.backbones import state_checksum
from autofreeze.freezing import FreezePlan, Freezer, block_lr_scale
from autofreeze.registry import Registry
from autofreeze.schedules import BUILTIN_SCHEDULES, Gradual, LinearProbeFinetune, Static
from autofreeze.train import TrainConfig, Trainer, TrainingDiverged
from tests.conftest import tensor_split

REGISTRY = Registry()


def make(name: str = "resnet10t", **kw):
    torch.manual_seed(0)
    return REGISTRY.create_backbone(name, num_classes=3, **kw)


def block_sums(backbone) -> list[str]:
    return [state_checksum(backbone.parameters_of(b.param_names)) for b in backbone.blocks]


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


def run(backbone, plan, schedule_cls=Static, epochs=2, data=None, callback=None, **cfg):
    schedule = schedule_cls(
        boundary=plan.boundary, n_blocks=backbone.n_blocks, epochs=epochs, **plan.schedule_params
    )
    trainer = Trainer(backbone, plan, schedule, TrainConfig(epochs=epochs, batch_size=8, **cfg))
    train, val = data or (tensor_split(24), tensor_split(12, seed=1))
    return trainer, trainer.fit(train, val, callback)


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
    trainer.train_epoch(tensor_split(8), 0, 10, 0, 1.0, torch.Generator().manual_seed(0))
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


def test_gradual_unfreezes_one_block_per_epoch_down_to_the_boundary(tiny_data):
    bb = make()
    n = bb.n_blocks  # 5
    plan = FreezePlan(boundary=2, schedule="gradual", schedule_params={"every": 1})
    start = block_sums(bb)
    per_epoch: list[list[str]] = []
    grads: list[list[bool]] = []

    def record(result):
        per_epoch.append(block_sums(bb))
        grads.append(
            [any(p.grad is not None for p in bb.parameters_of(b.param_names)) for b in bb.blocks]
        )

    trainer, fit = run(bb, plan, Gradual, epochs=4, data=tiny_data, callback=record)
    assert [e.first_trainable for e in fit.history] == [5, 4, 3, 2]
    for epoch, sums in enumerate(per_epoch):
        first = max(2, n - epoch)
        for i in range(n):
            moved = sums[i] != start[i]
            assert moved is (i >= first), (epoch, i)
            assert grads[epoch][i] is (i >= first), (epoch, i)
    assert any("unfroze" in e for e in trainer.events)
    # newly unfrozen blocks joined the optimizer with their planned LR
    names = {g["name"].split(":")[0]: g for g in trainer.optimizer.param_groups}
    assert set(names) == {"head", "block2", "block3", "block4"}
    assert math.isclose(names["block2"]["planned_lr"], trainer.freezer.planned_lr(2))


def test_lp_ft_trains_head_then_from_the_boundary(tiny_data):
    bb = make()
    plan = FreezePlan(
        boundary=3, schedule="lp_ft", schedule_params={"lp_epochs": 1, "ft_lr_scale": 0.5}
    )
    start = block_sums(bb)
    sums = []
    lrs = []
    trainer, fit = run(
        bb,
        plan,
        LinearProbeFinetune,
        epochs=2,
        data=tiny_data,
        callback=lambda r: (sums.append(block_sums(bb)), lrs.append(r.lrs)),
    )
    assert [e.phase for e in fit.history] == ["linear_probe", "finetune"]
    assert sums[0] == start
    assert sums[1][:3] == start[:3] and all(
        a != b for a, b in zip(sums[1][3:], start[3:], strict=True)
    )
    assert math.isclose(lrs[1]["head"], plan.head_lr * 0.5)
    assert math.isclose(lrs[1]["block4"], trainer.freezer.planned_lr(4) * 0.5)


@pytest.mark.parametrize("schedule_cls", BUILTIN_SCHEDULES)
def test_no_schedule_trains_below_the_boundary(schedule_cls):
    for n in (1, 4, 9):
        for k in range(n + 1):
            for epochs in (1, 3, 8):
                sched = schedule_cls(boundary=k, n_blocks=n, epochs=epochs)
                for e in range(epochs):
                    assert k <= sched.clamp(sched.phase(e).first_trainable) <= n


def test_boundary_out_of_range_is_rejected():
    from autofreeze.errors import PlanError

    bb = make()
    with pytest.raises(PlanError, match="boundary must be an integer in 0..5"):
        Freezer(bb, FreezePlan(boundary=6))
    with pytest.raises(PlanError, match="no knob 'evry'"):
        Gradual(boundary=0, n_blocks=5, epochs=2, evry=2)


def test_bf16_autocast_and_channels_last_run_on_the_cpu_path(tiny_data):
    bb = make()
    trainer, fit = run(
        bb, FreezePlan(boundary=2), epochs=1, data=tiny_data, amp="bf16", channels_last="on"
    )
    assert trainer.amp and trainer.channels_last
    assert math.isfinite(fit.final.train_loss)
    assert bb.model.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_diverging_loss_raises(tiny_data):
    bb = make()
    train, val = tiny_data
    bad = type(train)(train.x * float("nan"), train.y)
    with pytest.raises(TrainingDiverged, match="nan"):
        run(bb, FreezePlan(boundary=2), epochs=1, data=(bad, val))


def test_cost_figures_are_recorded(tiny_data):
    bb = make()
    _, fit = run(bb, FreezePlan(boundary=3), epochs=1, data=tiny_data)
    frozen_params = sum(bb.block_param_count(b) for b in bb.blocks[:3])
    assert fit.cost["trainable_params"] == fit.cost["total_params"] - frozen_params
    assert fit.cost["train_examples_per_second"] > 0 and fit.cost["peak_memory_mb"] > 0


class _FreezeMore(Static):
    """A FreezeOut-like schedule: from epoch 1 one more block, next to the boundary, freezes."""

    name = "freeze_more"

    def phase(self, epoch):
        from autofreeze.schedules import Phase

        return Phase(self.clamp(self.boundary + min(epoch, 1)), 1.0, f"freeze_more:{epoch}")


def test_a_block_frozen_later_stops_moving_and_leaves_the_optimizer(tiny_data):
    bb = make()
    sums = []
    trainer, fit = run(
        bb,
        FreezePlan(boundary=2),
        _FreezeMore,
        epochs=3,
        data=tiny_data,
        callback=lambda r: sums.append(block_sums(bb)),
    )
    assert [e.first_trainable for e in fit.history] == [2, 3, 3]
    assert sums[1][2] == sums[0][2] == sums[2][2]  # block 2 trains in the first epoch only
    assert sums[2][3] != sums[1][3]  # block 3 keeps training
    assert all(
        p.grad is None and not p.requires_grad for p in bb.parameters_of(bb.blocks[2].param_names)
    )
    names = {g["name"].removesuffix(":no_wd") for g in trainer.optimizer.param_groups}
    assert names == {"head", "block3", "block4"}
    frozen = set(map(id, bb.parameters_of(bb.blocks[2].param_names)))
    assert not any(id(p) in frozen for p in trainer.optimizer.state)
    assert any("froze blocks 2..2" in e for e in trainer.events)
