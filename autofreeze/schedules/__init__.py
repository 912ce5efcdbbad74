"""Unfreezing schedules: how the set of trainable blocks changes over epochs.

A schedule never trains below the plan's boundary ``k``: at every epoch the trainable blocks are
``first_trainable .. n_blocks-1`` with ``first_trainable >= k`` (``n_blocks`` means head only).
Each schedule declares its own hyperparameters (:class:`Knob`) so the search space can ask for
them; built-ins are registered through the ``register_schedules`` hook like any plugin's. Two
come from the freezing literature: ``freezeout`` (per-block LRs annealed to zero at staggered
times) and ``autofreeze`` (freezing driven by the blocks' gradient norms).
"""

from __future__ import annotations

from autofreeze.schedules._autofreeze import AutoFreeze
from autofreeze.schedules._base import Budget, Knob, Phase, Schedule
from autofreeze.schedules._freezeout import FreezeOut
from autofreeze.schedules._gradual import Gradual
from autofreeze.schedules._lp_ft import LinearProbeFinetune
from autofreeze.schedules._static import Static

BUILTIN_SCHEDULES: tuple[type[Schedule], ...] = (
    Static,
    Gradual,
    LinearProbeFinetune,
    FreezeOut,
    AutoFreeze,
)

__all__ = [
    "BUILTIN_SCHEDULES",
    "AutoFreeze",
    "Budget",
    "FreezeOut",
    "Gradual",
    "Knob",
    "LinearProbeFinetune",
    "Phase",
    "Schedule",
    "Static",
]
