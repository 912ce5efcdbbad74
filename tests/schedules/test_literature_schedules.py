"""Two schedules from the freezing literature: FreezeOut (Brock et al. 2017) and AutoFreeze (Liu
et al. 2021), as plain objects, in real training runs and in a tiny search."""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner
from optuna.trial import TrialState
from torch.optim.optimizer import register_optimizer_step_pre_hook

from autofreeze.cli import cli
from autofreeze.core.backbones import state_checksum
from autofreeze.core.freezing import Freezer, GradNorms
from autofreeze.core.train import lr_factor
from autofreeze.errors import PlanError
from autofreeze.plan import FreezePlan
from autofreeze.schedules import AutoFreeze, Budget, FreezeOut
from autofreeze.schedules._autofreeze import change_rate, frozen_prefix, percentile
from autofreeze.study import records
from tests.models import make, run
from tests.studies import write_study


def block_states(backbone) -> list[str]:
    """Per block: a checksum of its parameters and of its modules' buffers (BatchNorm stats)."""
    owners = backbone.module_blocks()
    buffers: dict[int, list[torch.Tensor]] = {b.index: [] for b in backbone.blocks}
    for name, module in backbone.model.named_modules():
        if owners.get(name) is not None:
            buffers[owners[name]] += list(module.buffers(recurse=False))
    return [
        state_checksum(backbone.parameters_of(b.param_names) + buffers[b.index])
        for b in backbone.blocks
    ]


def trainable(backbone, index: int) -> bool:
    return any(p.requires_grad for p in backbone.parameters_of(backbone.blocks[index].param_names))


# -- FreezeOut -------------------------------------------------------------------------------
def test_freezeout_spaces_the_freeze_times_linearly_or_cubically():
    linear = FreezeOut(boundary=1, n_blocks=5, epochs=4, t_0=0.5, scaling="linear")
    assert linear.freeze_times == pytest.approx({1: 0.5, 2: 0.625, 3: 0.75, 4: 0.875})
    # the paper's default: t_0 = 0.8 "pre-cubed" in the reference code, 0.512 here
    cubic = FreezeOut(boundary=1, n_blocks=5, epochs=4, t_0=0.512, scaling="cubic")
    expected = {1: 0.8**3, 2: 0.85**3, 3: 0.9**3, 4: 0.95**3}
    assert cubic.freeze_times == pytest.approx(expected)
    assert FreezeOut(boundary=5, n_blocks=5, epochs=4).freeze_times == {}
    assert FreezeOut(boundary=0, n_blocks=3, epochs=4).params == {"t_0": 0.5, "scaling": "linear"}


def test_freezeout_anneals_each_block_on_its_own_cosine_to_zero():
    sched = FreezeOut(boundary=2, n_blocks=4, epochs=4, t_0=0.5)  # t = 0.5, 0.75
    assert sched.block_lr_scales(0.0) == {2: 1.0, 3: 1.0}
    assert sched.block_lr_scales(0.25) == pytest.approx({2: 0.5, 3: 0.75})
    assert sched.block_lr_scales(0.375) == pytest.approx(
        {2: 0.5 * (1 + math.cos(0.75 * math.pi)), 3: 0.5}
    )
    assert sched.block_lr_scales(0.5) == pytest.approx({2: 0.0, 3: 0.25})
    assert sched.block_lr_scales(0.9) == {2: 0.0, 3: 0.0}


@pytest.mark.parametrize("scaling", ["linear", "cubic"])
def test_freezeout_moves_the_boundary_exactly_when_each_t_i_passes(scaling):
    sched = FreezeOut(boundary=1, n_blocks=5, epochs=8, t_0=0.5, scaling=scaling)
    firsts = [sched.phase(e).first_trainable for e in range(8)]
    for e, first in enumerate(firsts):
        start = e / 8
        assert first == next((i for i, t in sched.freeze_times.items() if t > start), 5)
        scales = sched.block_lr_scales(start)
        assert all((scales[i] > 0) is (i >= first) for i in scales)  # LR 0 exactly when frozen
    assert firsts == sorted(firsts) and firsts[0] == 1
    if scaling == "linear":
        assert firsts == [1, 1, 1, 1, 2, 3, 4, 5]


def test_freezeout_training_freezes_blocks_forward_and_keeps_them_bit_identical(tiny_data):
    bb = make()
    plan = FreezePlan(boundary=1, schedule="freezeout", schedule_params={"t_0": 0.5})
    start = block_states(bb)
    states, grads = [], []

    def record(result):
        states.append(block_states(bb))
        grads.append([trainable(bb, i) for i in range(bb.n_blocks)])

    # 24 images, batch 8: 3 steps per epoch, 12 in all; t = 0.5, 0.625, 0.75, 0.875
    trainer, fit = run(bb, plan, FreezeOut, epochs=4, data=tiny_data, callback=record)
    assert [e.first_trainable for e in fit.history] == [1, 1, 2, 4]
    assert [e.phase for e in fit.history] == [
        "freezeout:0",
        "freezeout:0",
        "freezeout:1",
        "freezeout:3",
    ]
    assert fit.events == [
        "epoch 2: froze blocks 1..1; their state dropped",
        "epoch 3: froze blocks 2..3; their state dropped",
    ]
    assert [s[0] for s in states] == [start[0]] * 4  # below the boundary: never trains
    assert not any(g[0] for g in grads)
    # block 1 stops at step 6 (frozen from epoch 2), blocks 2 and 3 within epoch 2
    assert states[0][1] != start[1] and states[1][1] == states[2][1] == states[3][1]
    assert states[2][2] != states[1][2] and states[2][2] == states[3][2]
    assert states[2][3] != states[1][3] and states[2][3] == states[3][3]
    assert states[3][4] != states[2][4]  # the last block trains to t = 0.875
    assert [g[1:] for g in grads] == [
        [True] * 4,
        [True] * 4,
        [False] + [True] * 3,
        [False] * 3 + [True],
    ]
    # at the last step (11 of 12): the head follows the global cosine, block 4 is past its t_i
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert set(lrs) == {"head", "head:no_wd", "block4", "block4:no_wd"}
    assert lrs["head"] == pytest.approx(plan.head_lr * lr_factor(11, 12, 0))
    assert lrs["block4"] == 0.0
    assert all(
        g["block"] == (None if g["name"].startswith("head") else 4)
        for g in trainer.optimizer.param_groups
    )


def test_freezeout_blocks_get_the_warmup_but_not_the_global_cosine():
    groups = [
        {"planned_lr": 1.0, "block": None},
        {"planned_lr": 0.5, "block": 3},
        {"planned_lr": 0.25, "block": 4},
    ]
    Freezer.write_lrs(groups, 0.4, {3: 0.5}, 0.8)
    assert [g["lr"] for g in groups] == [0.4, 0.5 * 0.8 * 0.5, 0.25 * 0.4]
    Freezer.write_lrs(groups, 0.3)
    assert [g["lr"] for g in groups] == pytest.approx([0.3, 0.15, 0.075])


def test_freezeout_step_lrs_in_training(tiny_data):
    bb = make()
    plan = FreezePlan(boundary=3, schedule="freezeout", schedule_params={"t_0": 0.5})
    seen: list[dict[str, float]] = []

    def record(optimizer, args, kwargs):
        seen.append({g["name"]: g["lr"] for g in optimizer.param_groups})

    handle = register_optimizer_step_pre_hook(record)
    try:  # 6 steps, the first 3 a warmup; blocks 3 and 4 freeze at t = 0.5 and 0.75
        trainer, _ = run(bb, plan, FreezeOut, epochs=2, data=tiny_data, warmup_epochs=1)
    finally:
        handle.remove()
    planned = {name: trainer.freezer.planned_lr(i) for name, i in (("block3", 3), ("block4", 4))}
    for step, lrs in enumerate(seen):
        ramp = min(1.0, (step + 1) / 3)
        assert lrs["head"] == pytest.approx(plan.head_lr * lr_factor(step, 6, 3))
        for name, t in (("block3", 0.5), ("block4", 0.75)):
            cosine = 0.5 * (1 + math.cos(math.pi * step / 6 / t)) if step / 6 < t else 0.0
            assert lrs.get(name, 0.0) == pytest.approx(planned[name] * ramp * cosine), (step, name)
    assert len(seen) == 6 and "block3" not in seen[3] and "block4" in seen[3]


# -- AutoFreeze ------------------------------------------------------------------------------
def test_percentile_interpolates_like_numpy():
    for values in ([3.0], [0.05, 0.1, 0.2, 0.5], [1.0, 1.0, 2.0], [0.3, 0.1, 0.9, 0.4, 0.2]):
        for q in (5, 25, 50, 80, 95):
            assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert percentile([0.1, math.inf, math.inf], 95) == math.inf


def test_the_change_rate_of_a_gradient_norm():
    assert change_rate(2.0, 3.0) == 0.5 and change_rate(2.0, 1.0) == 0.5
    assert change_rate(0.0, 0.0) == 0.0 and change_rate(0.0, 1.0) == math.inf


@pytest.mark.parametrize(
    ("rates", "q", "first"),
    [
        ({2: 0.1, 3: 0.05, 4: 0.5, 5: 0.2}, 50, 4),  # threshold 0.15: blocks 2, 3 freeze
        ({2: 0.3, 3: 0.01, 4: 0.02, 5: 0.5}, 50, 2),  # block 2 changes most: nothing freezes
        ({2: 0.1, 3: 0.2, 4: 0.3, 5: 0.4}, 95, 5),  # only the largest rate stays
        ({2: 0.1, 3: 0.2, 4: 0.3, 5: 0.4}, 5, 3),  # threshold 0.115
        ({2: 0.2, 3: 0.1, 4: 0.3, 5: 0.4}, 5, 2),
        ({2: 0.5}, 95, 2),  # one block always trains
        ({}, 50, 2),
    ],
)
def test_autofreeze_freezes_the_longest_prefix_below_the_percentile(rates, q, first):
    assert frozen_prefix(2, rates, q) == first


def test_autofreeze_decides_on_two_measurements_and_only_moves_forward():
    sched = AutoFreeze(boundary=1, n_blocks=5, epochs=6)
    assert sched.params == {"interval": 1, "percentile": 50.0}
    sched.observe(0, {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0})
    assert sched.phase(1).first_trainable == 1 and sched.rates == []  # one measurement only
    sched.observe(1, {1: 1.01, 2: 1.02, 3: 2.0, 4: 1.5})  # rates .01 .02 1 .5, median .26
    assert sched.phase(2).first_trainable == 3
    assert sched.phase(2).label == "autofreeze:2"
    sched.observe(2, {3: 2.0, 4: 3.0})  # rates 0 and 0.5
    assert sched.phase(3).first_trainable == 4
    sched.observe(3, {4: 30.0})
    sched.observe(4, {4: 0.1})
    assert sched.phase(5).first_trainable == 4  # the last trainable block never freezes
    assert sched.rates[0] == pytest.approx({1: 0.01, 2: 0.02, 3: 1.0, 4: 0.5})


def test_autofreeze_measures_over_its_interval():
    sched = AutoFreeze(boundary=0, n_blocks=3, epochs=8, interval=2)
    for epoch, norm in enumerate([(3.0, 3.0, 3.0), (4.0, 4.0, 4.0), (3.0, 5.0, 9.0)]):
        sched.observe(epoch, dict(enumerate(norm)))
    assert sched.rates == []  # epochs 0-1 are one measurement (norm 5), epoch 2 half of one
    sched.observe(3, {0: 4.1, 1: 4.2, 2: 12.0})  # sqrt(3**2 + 4.1**2), ..., sqrt(81 + 144) = 15
    rates = [math.sqrt(9 + 4.1**2) / 5 - 1, math.sqrt(25 + 4.2**2) / 5 - 1, 2.0]
    assert sched.rates == [pytest.approx(dict(enumerate(rates)))]
    assert sched.phase(4).first_trainable == 1  # only block 0 is below the median (block 1)


def test_grad_norms_sum_squares_over_steps_per_block():
    bb = make()
    freezer = Freezer(bb, FreezePlan(boundary=3))
    freezer.set_first_trainable(3)
    norms = GradNorms(freezer)
    assert [i for i, _ in norms.blocks] == [3, 4]
    assert norms.read() == {3: 0.0, 4: 0.0}
    for value in (1.0, 2.0):
        for block in bb.blocks[3:]:
            for p in bb.parameters_of(block.param_names):
                p.grad = torch.full_like(p, value)
        norms.add()
    for block in bb.blocks[3:]:
        size = sum(p.numel() for p in bb.parameters_of(block.param_names))
        assert norms.read()[block.index] == pytest.approx(math.sqrt(5 * size), rel=1e-5)


def test_autofreeze_training_moves_the_boundary_forward_and_records_the_freezing(tiny_data):
    bb = make()
    plan = FreezePlan(boundary=1, schedule="autofreeze", schedule_params={"percentile": 50.0})
    start = block_states(bb)
    states = []
    observed: list[tuple[int, list[int]]] = []

    class Recording(AutoFreeze):
        def observe(self, epoch, grad_norms):
            observed.append((epoch, sorted(grad_norms)))
            super().observe(epoch, grad_norms)

    trainer, fit = run(
        bb,
        plan,
        Recording,
        epochs=5,
        data=tiny_data,
        callback=lambda r: states.append(block_states(bb)),
    )
    firsts = [e.first_trainable for e in fit.history]
    assert firsts[:2] == [1, 1] and firsts == sorted(firsts) and firsts[-1] < bb.n_blocks
    assert firsts[-1] > 1, "nothing froze: the test data no longer exercise the rule"
    assert observed == [(e, list(range(f, bb.n_blocks))) for e, f in enumerate(firsts)]
    assert len(trainer.schedule.rates) == 4
    assert [e.phase for e in fit.history] == [f"autofreeze:{f - 1}" for f in firsts]
    pairs = enumerate(zip(firsts, firsts[1:], strict=False), start=1)
    changes = [(e, a, b) for e, (a, b) in pairs if b != a]
    assert fit.events == [
        f"epoch {e}: froze blocks {a}..{b - 1}; their state dropped" for e, a, b in changes
    ]
    assert all(s[0] == start[0] for s in states)  # below the boundary: never trains
    for e, first in enumerate(firsts):
        for i in range(1, first):  # frozen in epoch e: as it was after epoch e - 1
            assert states[e][i] == states[e - 1][i], (e, i)
        for i in range(first, bb.n_blocks):
            assert states[e][i] != (states[e - 1][i] if e else start[i]), (e, i)


# -- knobs, and a search ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "knobs", "message"),
    [
        (FreezeOut, {"t_0": 0.95}, "schedule 'freezeout': t_0=0.95 is outside [0.1, 0.9]"),
        (FreezeOut, {"t_0": "late"}, "schedule 'freezeout': t_0 must be a number, not 'late'"),
        (
            FreezeOut,
            {"scaling": "square"},
            "scaling must be one of ['linear', 'cubic'], not 'square'",
        ),
        (FreezeOut, {"t0": 0.5}, "schedule 'freezeout' has no knob 't0' (knobs: t_0, scaling)"),
        (AutoFreeze, {"interval": 0}, "schedule 'autofreeze': interval=0 is outside [1, 10]"),
        (AutoFreeze, {"interval": 1.5}, "interval must be an integer, not 1.5"),
        (AutoFreeze, {"percentile": 99}, "percentile=99.0 is outside [5.0, 95.0]"),
    ],
)
def test_invalid_knob_values_are_one_line_plan_errors(cls, knobs, message):
    with pytest.raises(PlanError) as err:
        cls(boundary=0, n_blocks=5, epochs=4, **knobs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_useful_knob_ranges_follow_the_budget():
    t_0 = next(k for k in FreezeOut.knobs if k.name == "t_0")
    assert t_0.useful_range(Budget(epochs=4, n_blocks=5)) == (0.25, 0.9)
    assert t_0.useful_range(Budget(epochs=20, n_blocks=5)) == (0.1, 0.9)
    interval = next(k for k in AutoFreeze.knobs if k.name == "interval")
    assert interval.useful_range(Budget(epochs=8, n_blocks=5)) == (1, 3)
    assert interval.useful_range(Budget(epochs=2, n_blocks=5)) == (1, 1)


def test_both_schedules_run_in_a_search(tmp_path):
    search = 'schedules = ["freezeout", "autofreeze"]\nboundary = [0, 3]\ninit = "pretrained"'
    config = write_study(
        tmp_path, n_trials=6, epochs=3, pruner="none", weights="none", search=search
    )
    result = CliRunner().invoke(cli, ["search", str(config), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["best"]["value"] is not None
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tiny'}.db")
    trials = study.get_trials()
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert {t.params["schedule"] for t in trials} == {"freezeout", "autofreeze"}
    for t in trials:
        name = t.params["schedule"]
        assert {k for k in t.params if k.startswith(name)} <= {
            f"{name}.{k.name}" for k in (FreezeOut if name == "freezeout" else AutoFreeze).knobs
        }
        assert all(h["phase"].startswith(f"{name}:") for h in records.history(t))
        # freezing, and from then on training on the frozen blocks' cached output
        assert all(
            "froze blocks" in e or "their output is cached" in e for e in records.phase_events(t)
        )
    assert any(records.phase_events(t) for t in trials if t.params["schedule"] == "freezeout")
