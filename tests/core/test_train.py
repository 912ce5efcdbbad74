"""The trainer (plain torch): phases of a schedule applied to a real model, mixed precision,
divergence, cost, and the LR schedule."""

from __future__ import annotations

import math

import pytest
import torch

from autofreeze.core.train import TrainConfig, Trainer, TrainingDiverged, lr_factor
from autofreeze.plan import FreezePlan
from autofreeze.schedules import Gradual, LinearProbeFinetune, Static
from tests.models import block_sums, make, run


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


def _fit_validating(data, validate_at):
    """A 3-epoch run validating at ``validate_at``, and how many times it evaluated."""
    bb = make()
    schedule = Static(boundary=2, n_blocks=bb.n_blocks, epochs=3)
    trainer = Trainer(bb, FreezePlan(boundary=2), schedule, TrainConfig(epochs=3, batch_size=8))
    calls = []
    evaluate = trainer.evaluate
    trainer.evaluate = lambda split: calls.append(split) or evaluate(split)
    return trainer.fit(*data, validate_at=validate_at), len(calls)


def test_validation_runs_only_at_the_asked_epochs_and_the_last_and_changes_no_training(tiny_data):
    sparse, sparse_calls = _fit_validating(tiny_data, {2})
    every, every_calls = _fit_validating(tiny_data, None)
    assert (sparse_calls, every_calls) == (2, 3)
    skipped, *validated = sparse.history
    assert skipped.val_loss is None and skipped.val_accuracy is None and skipped.val_seconds == 0
    assert [e.epoch for e in validated] == [2, 3] and all(e.val_seconds > 0 for e in validated)
    assert [e.train_loss for e in sparse.history] == [e.train_loss for e in every.history]
    for mine, full in zip(validated, every.history[1:], strict=True):
        assert (mine.val_loss, mine.val_accuracy) == (full.val_loss, full.val_accuracy)
    assert sparse.cost["validation_seconds"] == pytest.approx(sum(e.val_seconds for e in validated))
    assert every.cost["validation_seconds"] == pytest.approx(
        sum(e.val_seconds for e in every.history)
    )
    assert 0 < sparse.cost["validation_seconds"] < sparse.cost["seconds"]
    # with none asked, the last epoch still is: the run's value
    last_only, calls = _fit_validating(tiny_data, set())
    assert calls == 1 and last_only.final.val_accuracy == every.final.val_accuracy


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


def test_lr_factor_warms_up_linearly_then_decays_on_a_cosine_to_zero():
    total, warmup = 100, 10
    assert lr_factor(0, total, warmup) == pytest.approx(0.1)
    assert lr_factor(9, total, warmup) == pytest.approx(1.0)
    assert lr_factor(10, total, warmup) == pytest.approx(1.0)
    assert lr_factor(55, total, warmup) == pytest.approx(0.5)
    assert lr_factor(total, total, warmup) == pytest.approx(0.0, abs=1e-12)
    factors = [lr_factor(s, total, 0) for s in range(total)]
    assert factors == sorted(factors, reverse=True)


@pytest.mark.slow
def test_compiled_training_stays_correct_at_phase_changes(monkeypatch):
    """With ``[training] compile = true``, blocks that gradual unfreezing releases do get
    gradients and train, and frozen ones do not; the trainer compiles once per phase. (Dynamo
    with the aot_eager backend: the same graph capture and autograd as inductor, without its
    C++ build, which would take minutes here. Checked: on torch 2.14 the gradients are also
    right without the per-phase recompile, as dynamo guards on requires_grad.)"""
    import torch

    from autofreeze.plan import FreezePlan
    from autofreeze.schedules import Gradual
    from tests.models import block_sums, make, run

    real_compile = torch.compile
    compiled: list[object] = []

    def aot_eager(model, **kw):
        compiled.append(model)
        return real_compile(model, backend="aot_eager", **kw)

    monkeypatch.setattr(torch, "compile", aot_eager)
    backbone = make("resnet10t")
    n = backbone.n_blocks
    plan = FreezePlan(boundary=n - 2, head_lr=0.05, backbone_lr_ratio=1.0, schedule="gradual")
    sums: list[list[str]] = [block_sums(backbone)]
    trainer, result = run(
        backbone,
        plan,
        Gradual,
        epochs=3,
        compile=True,
        callback=lambda _r: sums.append(block_sums(backbone)),
    )
    assert [e.first_trainable for e in result.history] == [n, n - 1, n - 2]
    assert len(compiled) == 3  # compiled again at each of the two phase changes
    changed = [[a != b for a, b in zip(sums[e], sums[e + 1], strict=True)] for e in range(3)]
    assert changed[0] == [False] * n  # head only
    assert changed[1] == [False] * (n - 1) + [True]  # block n-1 released: it trains
    assert changed[2] == [False] * (n - 2) + [True, True]
