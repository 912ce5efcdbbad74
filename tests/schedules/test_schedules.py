"""Unfreezing schedules as plain objects: which blocks train at each epoch, and their knobs."""

from __future__ import annotations

import pytest

from autofreeze.core.freezing import Freezer
from autofreeze.errors import PlanError
from autofreeze.plan import FreezePlan
from autofreeze.schedules import BUILTIN_SCHEDULES, Gradual, Knob, LinearProbeFinetune, Static
from tests.models import make


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


def first_trainable(schedule) -> list[int]:
    return [schedule.clamp(schedule.phase(e).first_trainable) for e in range(schedule.epochs)]


def test_static_trains_from_the_boundary_every_epoch():
    assert first_trainable(Static(boundary=2, n_blocks=5, epochs=3)) == [2, 2, 2]


@pytest.mark.parametrize(
    ("boundary", "every", "expected"),
    [(0, 1, [5, 4, 3, 2, 1, 0, 0]), (2, 1, [5, 4, 3, 2, 2, 2, 2]), (0, 2, [5, 5, 4, 4, 3, 3, 2])],
)
def test_gradual_unfreezes_one_block_every_few_epochs(boundary, every, expected):
    sched = Gradual(boundary=boundary, n_blocks=5, epochs=7, every=every)
    assert first_trainable(sched) == expected
    assert sched.phase(0).label == "gradual:0"


def test_lp_ft_probes_then_fine_tunes_at_the_scaled_lr():
    sched = LinearProbeFinetune(boundary=1, n_blocks=5, epochs=4, lp_epochs=2, ft_lr_scale=0.3)
    phases = [sched.phase(e) for e in range(4)]
    assert [p.first_trainable for p in phases] == [5, 5, 1, 1]
    assert [p.lr_scale for p in phases] == [1.0, 1.0, 0.3, 0.3]
    assert [p.label for p in phases] == ["linear_probe"] * 2 + ["finetune"] * 2


def test_knobs_take_their_defaults_and_reject_bad_values():
    assert Gradual(boundary=0, n_blocks=3, epochs=2).params == {"every": 1}
    assert LinearProbeFinetune(boundary=0, n_blocks=3, epochs=2).params == {
        "lp_epochs": 1,
        "ft_lr_scale": 0.1,
    }
    with pytest.raises(PlanError, match="every=0 is outside"):
        Gradual(boundary=0, n_blocks=3, epochs=2, every=0)
    with pytest.raises(PlanError, match="must be an integer"):
        Gradual(boundary=0, n_blocks=3, epochs=2, every=1.5)
    with pytest.raises(PlanError, match="must be a number"):
        LinearProbeFinetune(boundary=0, n_blocks=3, epochs=2, ft_lr_scale="big")
    with pytest.raises(PlanError, match="outside 0..3"):
        Static(boundary=4, n_blocks=3, epochs=2)


def test_a_categorical_knob_accepts_only_its_choices():
    knob = Knob("mode", "categorical", "a", choices=("a", "b"))
    assert knob.check("b", "here") == "b"
    with pytest.raises(PlanError, match="mode must be one of"):
        knob.check("c", "here")
