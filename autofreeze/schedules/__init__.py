"""Unfreezing schedules: how the set of trainable blocks changes over epochs.

A schedule never trains below the plan's boundary ``k``: at every epoch the trainable blocks are
``first_trainable .. n_blocks-1`` with ``first_trainable >= k`` (``n_blocks`` means head only).
Each schedule declares its own hyperparameters (:class:`Knob`) so the search space can ask for
them; built-ins are registered through the ``register_schedules`` hook like any plugin's.
"""

from __future__ import annotations

from autofreeze.schedules._base import Budget, Knob, Phase, Schedule
from autofreeze.schedules._gradual import Gradual
from autofreeze.schedules._lp_ft import LinearProbeFinetune
from autofreeze.schedules._static import Static

BUILTIN_SCHEDULES: tuple[type[Schedule], ...] = (Static, Gradual, LinearProbeFinetune)

__all__ = [
    "BUILTIN_SCHEDULES",
    "Budget",
    "Gradual",
    "Knob",
    "LinearProbeFinetune",
    "Phase",
    "Schedule",
    "Static",
]
